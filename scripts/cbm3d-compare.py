#!/usr/bin/env python3
"""CBM3D on exactly the noisy RGB images of a colour `ppdenoise table` run, scored by
ppdenoise itself, and the colour table of docs/results-colour.md.

For every run the table has finished (runs/IMAGE/sigmaS/run.json: a table still running or
cut short is compared on what it has), runs CBM3D (the `bm3d` package's `bm3d_rgb`, its
default opponent colour transform and profile, sigma_psd = S/255) on the 8-bit noisy.png the
secure pipeline denoised, rounds the result to 8 bits, writes cbm3d.png beside it (reused
when newer than noisy.png) and scores it with `ppdenoise metrics` (RGB: PSNR over all three
channels' squared errors, SSIM the mean of the three channels'). Prints the Markdown table
(per sigma: noisy, float, secure, secure - float, secure = oracle, CBM3D, secure - CBM3D;
then per image) and writes cbm3d.json into the table directory.

    .venv-bm3d/bin/python scripts/cbm3d-compare.py out/table-colour [target/release/ppdenoise]

Not part of the test suite: CBM3D is a comparison, not a dependency of ppdenoise.
"""

import importlib.metadata
import os
import sys

import bm3d

from bm3d_runs import compare, recorded_runs, write_json


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    table_dir = sys.argv[1]
    exe = sys.argv[2] if len(sys.argv) > 2 else "target/release/ppdenoise"
    runs = recorded_runs(table_dir)
    if not runs:
        sys.exit(f"{table_dir}: no finished run (runs/*/sigma*/run.json)")

    def denoise(noisy, sigma):
        return bm3d.bm3d_rgb(noisy, sigma_psd=sigma)

    rows = compare(table_dir, runs, exe, "cbm3d", "RGB", denoise)
    version = importlib.metadata.version("bm3d")
    write_json(os.path.join(table_dir, "cbm3d.json"), version, rows)

    sigmas = sorted({r["sigma"] for r in rows})
    print(f"Mean over the images of each σ (CBM3D: PyPI's bm3d {version}, `bm3d_rgb`).\n")
    print(
        "| σ | images | noisy PSNR | float PSNR / SSIM | secure PSNR / SSIM | secure − float, "
        "mean (largest) dB | secure = oracle | CBM3D PSNR / SSIM | secure − CBM3D |"
    )
    print("|---:|---:|---:|---|---|---|---:|---|---:|")
    for s in sigmas:
        rs = [r for r in rows if r["sigma"] == s]
        gap = [r["psnr_secure"] - r["psnr_float"] for r in rs]
        print(
            f"| {s:g} | {len(rs)} | {mean(r['psnr_noisy'] for r in rs):.2f} | "
            f"{mean(r['psnr_float'] for r in rs):.2f} / {mean(r['ssim_float'] for r in rs):.4f} | "
            f"{mean(r['psnr_secure'] for r in rs):.2f} / {mean(r['ssim_secure'] for r in rs):.4f} | "
            f"{mean(gap):+.4f} ({max(gap, key=abs):+.4f}) | "
            f"{sum(r['secure_equals_oracle'] for r in rs)} of {len(rs)} | "
            f"{mean(r['psnr_cbm3d'] for r in rs):.2f} / {mean(r['ssim_cbm3d'] for r in rs):.4f} | "
            f"{mean(r['psnr_secure'] - r['psnr_cbm3d'] for r in rs):+.2f} dB |"
        )
    print("\nPer image, PSNR (dB): secure FFDNet / CBM3D.\n")
    print("| image | " + " | ".join(f"σ={s:g}" for s in sigmas) + " |")
    print("|---|" + "---:|" * len(sigmas))
    for image in sorted({r["image"] for r in rows}):
        cells = []
        for s in sigmas:
            r = [x for x in rows if x["image"] == image and x["sigma"] == s]
            cells.append(f"{r[0]['psnr_secure']:.2f} / {r[0]['psnr_cbm3d']:.2f}" if r else "–")
        print(f"| {image} | " + " | ".join(cells) + " |")
    secs = [r["serve_seconds"] for r in rows]
    print(
        f"\nSecure runs: {len(rows)}, servers' wall time {mean(secs):.1f} s per run on average "
        f"({min(secs):.1f}–{max(secs):.1f} s), {mean(r['s0_bytes_sent'] + r['s1_bytes_sent'] for r in rows) / 1e9:.2f} GB "
        "S0↔S1 per run."
    )


if __name__ == "__main__":
    main()
