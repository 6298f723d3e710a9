#!/usr/bin/env python3
"""BM3D on exactly the noisy images of a `ppdenoise table` run, scored by ppdenoise itself.

For every runs/IMAGE/sigmaS/ directory of a table output (each holds the clean.png and the
8-bit noisy.png that the secure pipeline denoised), runs BM3D (the `bm3d` package, Mäkinen et
al.'s reference implementation, all stages, sigma_psd = S/255), rounds the result to 8 bits,
writes bm3d.png next to the others and scores it with `ppdenoise metrics` (the same PSNR and
SSIM as the table). Prints a Markdown table (per sigma: BM3D, plaintext and secure averages)
and writes bm3d.json into the table directory.

    python3 -m venv .venv-bm3d && .venv-bm3d/bin/pip install bm3d==4.0.3 pillow
    .venv-bm3d/bin/python scripts/bm3d-compare.py out/table [target/release/ppdenoise]

Not part of the test suite: BM3D is a comparison, not a dependency of ppdenoise.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import time

import bm3d
import numpy as np
from PIL import Image


def load(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    table_dir = sys.argv[1]
    exe = sys.argv[2] if len(sys.argv) > 2 else "target/release/ppdenoise"
    table = json.load(open(os.path.join(table_dir, "table.json")))
    rows = []
    for run in table["runs"]:
        tag = ("%g" % run["sigma"]).replace(".", "p")
        d = os.path.join(table_dir, "runs", run["image"], "sigma" + tag)
        noisy = load(os.path.join(d, "noisy.png")) / 255.0
        t0 = time.time()
        est = bm3d.bm3d(noisy, sigma_psd=run["sigma"] / 255.0, stage_arg=bm3d.BM3DStages.ALL_STAGES)
        seconds = time.time() - t0
        out = np.clip(np.round(est * 255.0), 0, 255).astype(np.uint8)
        png = os.path.join(d, "bm3d.png")
        Image.fromarray(out).save(png)
        m = json.loads(
            subprocess.run(
                [exe, "--json", "metrics", os.path.join(d, "clean.png"), png],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        rows.append(
            {
                "image": run["image"],
                "sigma": run["sigma"],
                "psnr_bm3d": m["psnr"],
                "ssim_bm3d": m["ssim"],
                "psnr_float": run["psnr_float"],
                "psnr_secure": run["psnr_secure"],
                "ssim_secure": run["ssim_secure"],
                "bm3d_seconds": seconds,
            }
        )
        print(
            f"{run['image']} sigma {run['sigma']:g}: BM3D {m['psnr']:.2f} dB / {m['ssim']:.3f}, "
            f"secure {run['psnr_secure']:.2f} dB ({seconds:.1f} s)",
            file=sys.stderr,
        )
    sigmas = sorted({r["sigma"] for r in rows})
    print("| σ | BM3D PSNR / SSIM | ppdenoise secure PSNR / SSIM | secure − BM3D |")
    print("|---:|---|---|---:|")
    for s in sigmas:
        rs = [r for r in rows if r["sigma"] == s]
        mean = lambda k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
        print(
            f"| {s:g} | {mean('psnr_bm3d'):.2f} / {mean('ssim_bm3d'):.3f} | "
            f"{mean('psnr_secure'):.2f} / {mean('ssim_secure'):.3f} | "
            f"{mean('psnr_secure') - mean('psnr_bm3d'):+.2f} dB |"
        )
    with open(os.path.join(table_dir, "bm3d.json"), "w") as f:
        json.dump({"bm3d_version": importlib.metadata.version("bm3d"), "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
