#!/usr/bin/env python3
"""Float inference of a converted CNN `.npz` in numpy, independent of ppdenoise's Rust code:
checks a conversion by import-dncnn.py against the published set12 figures.

For every PNG in a folder: noisy = clean/255 + N(0, sigma/255) (float, not rounded or
clipped, numpy's default_rng(seed)), clean estimate = noisy - net(noisy) (residual models),
rounded to 8 bits; prints each PSNR and the mean.

    .venv-import/bin/pip install pillow
    .venv-import/bin/python scripts/check-dncnn.py OUT.npz ../shared/data/set12 --sigma 25
    (DnCNN-S sigma 25, published mean: 30.44 dB)
"""

import argparse
import glob
import os

import numpy as np
from PIL import Image


def conv(x, k, b, relu):
    """Same-padded correlation of x (c, h, w) with k (o, c, kh, kw), plus bias."""
    c, h, w = x.shape
    o, _, kh, kw = k.shape
    r = kh // 2
    xp = np.pad(x, ((0, 0), (r, r), (r, r)))
    cols = np.empty((c, kh, kw, h, w), dtype=x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            cols[:, dy, dx] = xp[:, dy:dy + h, dx:dx + w]
    z = k.reshape(o, -1) @ cols.reshape(c * kh * kw, h * w)
    z = z.reshape(o, h, w) + b[:, None, None]
    return np.maximum(z, 0) if relu else z


def forward(model, img):
    n = 1
    while f"K{n}" in model:
        n += 1
    x = img[None]
    for i in range(1, n):
        x = conv(x, model[f"K{i}"], model[f"b{i}"], i < n - 1)
    return img - x[0] if model.get("residual", 1) else x[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--sigma", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    m = {k: np.asarray(v, dtype=np.float64) for k, v in np.load(a.model).items()}
    rng = np.random.default_rng(a.seed)
    psnrs = []
    for path in sorted(glob.glob(os.path.join(a.images, "*.png"))):
        clean = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        noisy = clean + rng.standard_normal(clean.shape) * a.sigma / 255.0
        out = np.clip(np.round(forward(m, noisy) * 255.0), 0, 255)
        mse = np.mean((out - clean * 255.0) ** 2)
        psnrs.append(10 * np.log10(255.0 ** 2 / mse))
        print(f"{os.path.basename(path)} {psnrs[-1]:.2f}")
    print(f"mean {np.mean(psnrs):.3f} dB over {len(psnrs)} images")


if __name__ == "__main__":
    main()
