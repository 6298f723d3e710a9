#!/usr/bin/env python3
"""DICOM inputs for tests/suite/images/dicom.rs that need an encoder no Rust crate here has.

Writes, into the folder given (default out/dicom-testdata):
  j2k8-ref.dcm, j2k8-lossless.dcm, j2k8-lossy.dcm     an 8-bit grayscale image, uncompressed
                                                     and in both JPEG 2000 syntaxes
  j2k8-lossy-openjpeg.dcm                            the lossy one as OpenJPEG decodes it
  j2k12-ref.dcm, j2k12-lossless.dcm                  the same for 12 bits stored in 16
  colour/                                            colour references (tests/suite/images/colour_dicom.rs):
    made-*.dcm                                       colour forms pydicom's files lack: RGB
                                                     planar configuration 1, YBR_FULL native,
                                                     YBR_ICT (lossy) and YBR_RCT (8 and 16
                                                     bits) JPEG 2000, 16-bit RGB native
    NAME.rgb, manifest.txt                           every colour file's pixels as pydicom
                                                     decodes them (RGB, pixel by pixel, frame
                                                     after frame, little endian), and per file:
                                                     path frames rows cols bytes-per-sample
The JPEG 2000 codestreams are made by OpenJPEG (pylibjpeg-openjpeg, from PyPI) through
pydicom's own encoder. The images are a ramp with a disc and a seeded noise texture, so
that a decoder's error shows. Run by `make dicom-testdata` in .venv-dicom; tests never
need Python otherwise.
"""
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    generate_uid,
)

ROWS, COLS = 48, 40


def image(bits):
    top = (1 << bits) - 1
    y, x = np.mgrid[0:ROWS, 0:COLS]
    ramp = x * top / (COLS - 1)
    disc = ((y - ROWS / 2) ** 2 + (x - COLS / 2) ** 2) < (ROWS / 4) ** 2
    rng = np.random.default_rng(2026)
    v = 0.6 * ramp + 0.3 * top * disc + rng.normal(0, top * 0.03, (ROWS, COLS))
    return np.clip(np.round(v), 0, top).astype(np.uint8 if bits <= 8 else np.uint16)


def dataset(arr, bits):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Test^J2K"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    return ds


# pydicom's own colour test files (shipped in its wheel), read in place by the tests. Not
# here: SC_rgb_jpeg.dcm (explicit VR declared, implicit VR written: refused as corrupt) and
# GDCMJ2K_TextGBR.dcm (a JP2 file wrapper around the codestream: refused, docs/formats.md).
PYDICOM_COLOUR = [
    "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "ExplVR_BigEnd.dcm",
    "SC_rgb_jpeg_dcmd.dcm",
    "examples_rgb_color.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_dcmtk_+eb+cr.dcm",
    "SC_rgb_jpeg_app14_dcmd.dcm",
    "SC_jpeg_no_color_transform.dcm",
    "SC_jpeg_no_color_transform_2.dcm",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "SC_rgb_dcmtk_+eb+cy+n2.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
    "examples_ybr_color.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "examples_jpeg2k.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
]


def colour_dataset(arr, pi, bits=8, planar=0):
    """An uncompressed colour image (arr: rows x cols x 3, pixel by pixel)."""
    ds = dataset(arr[..., 0], bits)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = pi
    ds.PlanarConfiguration = planar
    data = arr.transpose(2, 0, 1) if planar else arr
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    return ds


def colour(out):
    """Colour forms made here, then every colour file's pixels as pydicom decodes them."""
    from pydicom.data import get_testdata_file
    from pydicom.pixels import convert_color_space

    col = out / "colour"
    col.mkdir(parents=True, exist_ok=True)
    rgb = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm")).pixel_array
    rgb16 = pydicom.dcmread(get_testdata_file("SC_rgb_rle_16bit.dcm")).pixel_array
    made = {}
    made["made-rgb-planar1.dcm"] = colour_dataset(rgb, "RGB", planar=1)
    made["made-rgb16.dcm"] = colour_dataset(rgb16, "RGB", bits=16)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    made["made-ybr-full.dcm"] = colour_dataset(ybr, "YBR_FULL")
    made["made-ybr-full-planar1.dcm"] = colour_dataset(ybr, "YBR_FULL", planar=1)
    ds = colour_dataset(rgb, "YBR_RCT")
    ds.compress(JPEG2000Lossless, rgb, encoding_plugin="pylibjpeg")
    made["made-j2k-rct.dcm"] = ds
    ds = colour_dataset(rgb16, "YBR_RCT", bits=16)
    ds.compress(JPEG2000Lossless, rgb16, encoding_plugin="pylibjpeg")
    made["made-j2k-rct16.dcm"] = ds
    ds = colour_dataset(rgb, "YBR_ICT")
    ds.compress(JPEG2000, rgb, encoding_plugin="pylibjpeg", j2k_cr=[10])
    made["made-j2k-ict.dcm"] = ds
    for name, ds in made.items():
        ds.save_as(col / name, enforce_file_format=True)
    files = [(f"pydicom/{n}", Path(get_testdata_file(n))) for n in PYDICOM_COLOUR]
    files += [(n, col / n) for n in made]
    lines = []
    for name, path in files:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array  # YBR_FULL and YBR_FULL_422 converted to RGB (as_rgb)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        arr = arr.reshape(frames, ds.Rows, ds.Columns, 3)
        arr.astype(arr.dtype.newbyteorder("<")).tofile(col / (Path(name).name + ".rgb"))
        lines.append(f"{name} {frames} {ds.Rows} {ds.Columns} {arr.dtype.itemsize}")
    (col / "manifest.txt").write_text("\n".join(lines) + "\n")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/dicom-testdata")
    out.mkdir(parents=True, exist_ok=True)
    for bits in (8, 12):
        arr = image(bits)
        dataset(arr, bits).save_as(out / f"j2k{bits}-ref.dcm", enforce_file_format=True)
        ds = dataset(arr, bits)
        ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg")
        ds.save_as(out / f"j2k{bits}-lossless.dcm", enforce_file_format=True)
        if bits == 8:
            ds = dataset(arr, bits)
            ds.compress(JPEG2000, arr, encoding_plugin="pylibjpeg", j2k_cr=[8])
            ds.save_as(out / f"j2k{bits}-lossy.dcm", enforce_file_format=True)
            # What OpenJPEG itself decodes it to, uncompressed: the reference for ours.
            back = pydicom.dcmread(out / f"j2k{bits}-lossy.dcm").pixel_array
            dataset(back, bits).save_as(
                out / f"j2k{bits}-lossy-openjpeg.dcm", enforce_file_format=True
            )
    colour(out)
    print(f"wrote {out} (pydicom {pydicom.__version__})")


if __name__ == "__main__":
    main()
