#!/usr/bin/env python3
"""Writes 8-bit noisy images the way the DnCNN figures of issue 15 and
../shared/models/dncnn/README.md were measured: for every PNG in a folder (sorted by name),
noisy = clip(round((clean/255 + N(0, 1) * sigma/255) * 255), 0, 255), the N(0, 1) draws from
numpy's default_rng(seed) started afresh for each image. Feed them to
`ppdenoise demo --image CLEAN --noisy NOISY` to run the secure pipeline on the same inputs.

    python3 scripts/numpy-noisy.py ../shared/data/set12 out/noisy-numpy --sigma 25
    (needs numpy and pillow from PyPI)
"""

import argparse
import glob
import os

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images")
    ap.add_argument("out")
    ap.add_argument("--sigma", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for path in sorted(glob.glob(os.path.join(a.images, "*.png"))):
        clean = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        n = np.random.default_rng(a.seed).standard_normal(clean.shape)
        noisy = np.clip(np.round((clean + n * a.sigma / 255.0) * 255.0), 0, 255)
        dst = os.path.join(a.out, os.path.basename(path))
        tmp = dst + ".tmp"
        Image.fromarray(noisy.astype(np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, dst)
        print(dst)


if __name__ == "__main__":
    main()
