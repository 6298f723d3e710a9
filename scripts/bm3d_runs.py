"""What scripts/bm3d-compare.py (gray BM3D) and scripts/cbm3d-compare.py (colour CBM3D) share:
the runs of a `ppdenoise table` output, BM3D's estimate rounded to 8 bits beside each run's
noisy.png, and its score by `ppdenoise metrics` (the table's own PSNR and SSIM; RGB as the
FFDNet paper scores it)."""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image


def run_dir(table_dir, image, sigma):
    """runs/IMAGE/sigmaS/ of a table (S as the table tags it: 12.5 -> 12p5)."""
    tag = ("%g" % sigma).replace(".", "p")
    return os.path.join(table_dir, "runs", image, "sigma" + tag)


def table_runs(table_dir):
    """The runs of a finished table (its table.json)."""
    return json.load(open(os.path.join(table_dir, "table.json")))["runs"]


def recorded_runs(table_dir):
    """Every run a table has finished so far (runs/*/sigma*/run.json), also while it runs or
    after it was cut short: a partial table is compared on what it has."""
    runs = []
    for p in sorted(glob.glob(os.path.join(table_dir, "runs", "*", "sigma*", "run.json"))):
        runs.append(json.load(open(p))["run"])
    return runs


def to_u8(est):
    """An estimate on the 0..1 scale as an 8-bit image, rounded and clipped."""
    return np.clip(np.round(est * 255.0), 0, 255).astype(np.uint8)


def score(exe, clean_png, test_png):
    """`ppdenoise metrics` of test_png against clean_png: (PSNR, SSIM)."""
    m = json.loads(
        subprocess.run(
            [exe, "--json", "metrics", clean_png, test_png],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return m["psnr"], m["ssim"]


def compare(table_dir, runs, exe, name, mode, denoise):
    """For every run: `denoise(noisy on 0..1, sigma on 0..1)` of its noisy.png (read as PIL
    `mode`, "L" or "RGB"), written as NAME.png beside it and scored. A NAME.png newer than
    the run's noisy.png is reused (an interrupted comparison resumes); its seconds are then
    None. Returns one row per run."""
    rows = []
    for run in runs:
        d = run_dir(table_dir, run["image"], run["sigma"])
        noisy_png, png = os.path.join(d, "noisy.png"), os.path.join(d, name + ".png")
        seconds = None
        if not (os.path.exists(png) and os.path.getmtime(png) >= os.path.getmtime(noisy_png)):
            noisy = np.asarray(Image.open(noisy_png).convert(mode), dtype=np.float64) / 255.0
            t0 = time.time()
            est = denoise(noisy, run["sigma"] / 255.0)
            seconds = time.time() - t0
            tmp = png + ".tmp.png"
            Image.fromarray(to_u8(est)).save(tmp)
            os.replace(tmp, png)
        p, s = score(exe, os.path.join(d, "clean.png"), png)
        rows.append(dict(run, **{"psnr_" + name: p, "ssim_" + name: s, name + "_seconds": seconds}))
        print(
            f"{run['image']} sigma {run['sigma']:g}: {name} {p:.2f} dB / {s:.3f}, "
            f"secure {run['psnr_secure']:.2f} dB"
            + (f" ({seconds:.1f} s)" if seconds is not None else " (reused)"),
            file=sys.stderr,
        )
    return rows


def write_json(path, version, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"bm3d_version": version, "runs": rows}, f, indent=1)
    os.replace(tmp, path)
