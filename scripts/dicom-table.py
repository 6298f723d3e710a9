#!/usr/bin/env python3
"""The CT table of docs/dicom.md: a real signed 16-bit CT at realistic noise, in HU.

    dicom-table.py BIN WORKDIR [--ffdnet out/ffdnet/clip.npz] [--slices N]

pydicom's CT_small (HU = stored - 1024) becomes a series of N noisy slices at each of 10, 20
and 40 HU (scripts/noisy-series.py's rule), denoised with `BIN denoise --arith fixed` (the
fixed-point oracle, bit for bit what the secure path writes: tests/suite/studies/medical.rs checks it) in
the default window (-1024:3071 HU) with the shipped MLP and, when given, FFDNet-Clip, with
the known sigma and with `--sigma auto`; BM3D (PyPI's bm3d, in the clear, known sigma) on
the same slices in the same window. Prints a Markdown table of the mean RMSE in HU against
the clean slice, as pydicom reads the files; nothing it writes is committed.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW = (-1024.0, 3071.0)


def hu(path):
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0
    )


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def denoise(binary, series, out, model, sigma):
    """Mean RMSE (HU) of BIN denoise over the series, or the refusal's first line."""
    cmd = [binary, "--json", "denoise", "--image", series, "--arith", "fixed", "--sigma", sigma, "--out", out]
    if model:
        cmd += ["--model", model]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[0]
    return json.loads(p.stdout), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("workdir")
    ap.add_argument("--ffdnet")
    ap.add_argument("--slices", type=int, default=2)
    a = ap.parse_args()
    clean_path = get_testdata_file("CT_small.dcm")
    clean = hu(clean_path)
    os.makedirs(a.workdir, exist_ok=True)
    models = [("shipped MLP", None)]
    if a.ffdnet:
        models.append(("FFDNet-Clip", a.ffdnet))
    rows = []
    for sigma in (10, 20, 40):
        series = os.path.join(a.workdir, f"ct-{sigma}")
        if not os.path.isdir(series):
            subprocess.run(
                [sys.executable, os.path.join(HERE, "noisy-series.py"), clean_path, series,
                 "--slices", str(a.slices), "--sigma", str(sigma)],
                check=True,
            )
        files = sorted(os.listdir(series))
        noisy = np.mean([rmse(hu(os.path.join(series, f)), clean) for f in files])
        row = {"sigma": sigma, "noisy": noisy}
        for name, model in models:
            for mode in (f"{sigma}HU", "auto"):
                out = os.path.join(a.workdir, f"{name.split()[0]}-{sigma}-{mode}")
                if os.path.isdir(out):
                    subprocess.run(["rm", "-rf", out], check=True)
                j, err = denoise(a.binary, series, out, model, mode)
                if err:
                    row[(name, mode == "auto")] = None
                    continue
                row[(name, mode == "auto")] = np.mean(
                    [rmse(hu(os.path.join(out, f)), clean) for f in files]
                )
        try:
            import bm3d

            lo, hi = WINDOW
            errs = []
            for f in files:
                z = (np.clip(hu(os.path.join(series, f)), lo, hi) - lo) / (hi - lo)
                y = bm3d.bm3d(z, sigma_psd=sigma / (hi - lo)) * (hi - lo) + lo
                errs.append(rmse(y, clean))
            row["bm3d"] = float(np.mean(errs))
        except ImportError:
            row["bm3d"] = None
        rows.append(row)
    fmt = lambda v: "refused by share-image" if v is None else f"{v:.1f}"
    head = ["sigma (HU)", "noisy"]
    for name, _ in models:
        head += [f"{name}, known sigma", f"{name}, auto"]
    head.append("BM3D (plaintext), known sigma")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [str(r["sigma"]), f"{r['noisy']:.1f}"]
        for name, _ in models:
            cells += [fmt(r[(name, False)]), fmt(r[(name, True)])]
        cells.append("—" if r["bm3d"] is None else f"{r['bm3d']:.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
