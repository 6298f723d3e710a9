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
import os
import sys

import bm3d

from bm3d_runs import compare, table_runs, write_json


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    table_dir = sys.argv[1]
    exe = sys.argv[2] if len(sys.argv) > 2 else "target/release/ppdenoise"

    def denoise(noisy, sigma):
        return bm3d.bm3d(noisy, sigma_psd=sigma, stage_arg=bm3d.BM3DStages.ALL_STAGES)

    rows = compare(table_dir, table_runs(table_dir), exe, "bm3d", "L", denoise)
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
    write_json(os.path.join(table_dir, "bm3d.json"), importlib.metadata.version("bm3d"), rows)


if __name__ == "__main__":
    main()
