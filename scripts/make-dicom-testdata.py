#!/usr/bin/env python3
"""DICOM inputs for tests/dicom.rs that need an encoder no Rust crate here has.

Writes, into the folder given (default out/dicom-testdata):
  j2k8-ref.dcm, j2k8-lossless.dcm, j2k8-lossy.dcm     an 8-bit grayscale image, uncompressed
                                                     and in both JPEG 2000 syntaxes
  j2k8-lossy-openjpeg.dcm                            the lossy one as OpenJPEG decodes it
  j2k12-ref.dcm, j2k12-lossless.dcm                  the same for 12 bits stored in 16
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
    print(f"wrote {out} (pydicom {pydicom.__version__})")


if __name__ == "__main__":
    main()
