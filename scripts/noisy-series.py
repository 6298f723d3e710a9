#!/usr/bin/env python3
"""A short noisy series from one DICOM slice: what a scanner's noise does to a real image.

    noisy-series.py SOURCE.dcm OUT_DIR --slices N --sigma S [--seed K]

Slice i (1..N) is SOURCE with white Gaussian noise of S *stored values* added (numpy's
default_rng([K, i])), rounded and clipped to the stored range, as a slice of one new series:
InstanceNumber i, ImagePositionPatient moved i mm along the slice normal, new SOP Instance
and Series Instance UIDs, written uncompressed (explicit VR little endian). The tests
(tests/suite/studies/medical.rs) and `make dicom-table` make their series with it from pydicom's CT_small
and MR_small; nothing it writes is committed.
"""
import argparse
import os

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, required=True)
    ap.add_argument("--sigma", type=float, required=True, help="in stored values")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    src = pydicom.dcmread(a.source)
    clean = src.pixel_array.astype(np.float64)
    bits = int(src.BitsStored)
    signed = int(src.PixelRepresentation) == 1
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = np.int16 if signed else np.uint16
    if int(src.BitsAllocated) == 8:
        dtype = np.int8 if signed else np.uint8
    os.makedirs(a.out, exist_ok=False)
    series = generate_uid()
    pos = [float(v) for v in src.get("ImagePositionPatient", [0, 0, 0])]
    for i in range(1, a.slices + 1):
        rng = np.random.default_rng([a.seed, i])
        noisy = np.clip(np.rint(clean + rng.standard_normal(clean.shape) * a.sigma), lo, hi)
        ds = pydicom.dcmread(a.source)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = i
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + i]
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in ds:
                del ds[tag]
        ds.PixelData = noisy.astype(dtype).tobytes()
        ds.save_as(os.path.join(a.out, f"slice{i:03d}.dcm"), enforce_file_format=True)


if __name__ == "__main__":
    main()
