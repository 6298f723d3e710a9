#!/usr/bin/env python3
"""RMSE of DICOM slices against a clean one, in the image's own units (HU for a CT).

    dicom-rmse.py CLEAN.dcm A.dcm [B.dcm ...]

Prints one JSON object: {"A.dcm": rmse, ...}. The values are the stored values through
RescaleSlope and RescaleIntercept, as pydicom (PyPI) reads them, independent of ppdenoise's
own reader.
"""
import json
import sys

import numpy as np
import pydicom


def values(path):
    ds = pydicom.dcmread(path)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return ds.pixel_array.astype(np.float64) * slope + intercept


def main():
    clean = values(sys.argv[1])
    out = {}
    for p in sys.argv[2:]:
        v = values(p)
        if v.shape != clean.shape:
            sys.exit(f"{p}: {v.shape}, the clean slice {clean.shape}")
        out[p] = float(np.sqrt(np.mean((v - clean) ** 2)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
