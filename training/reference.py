#!/usr/bin/env python3
"""A reference output of an exported model, computed by train.py's own numpy code.

ppdenoise's float path and its fixed-point oracle share their patch layout, padding and
aggregation code with the secure protocol, so "secure == oracle" cannot see a mistake there.
This writes what train.py -- the code the model was trained and evaluated with -- makes of a
small synthetic noisy image, for a Rust test to compare with (tests/suite/models/foundations.rs,
`float_path_matches_train_py_reference`). The image is 37 wide and 41 high, not symmetric,
so a transposed patch or image layout cannot pass.

    python3 -m venv training/.venv && training/.venv/bin/pip install -r training/requirements.txt
    training/.venv/bin/python training/reference.py fixtures/default-model.npz \
        fixtures/default-model-reference.json
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402  (the trainer's own forward pass, padding and aggregation)

H, W, SIGMA, SEED = 41, 37, 25.0, 20261123


def synthetic_noisy():
    """A smooth, asymmetric scene with an edge, plus Gaussian noise, rounded to 8 bits."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    clean = 90 + 70 * np.sin(x / 6.0) * np.cos(y / 9.0) + 1.5 * x - 0.8 * y
    clean[y > 0.6 * x + 12] += 40
    rng = np.random.default_rng(SEED)
    noisy = clean + rng.standard_normal(clean.shape) * SIGMA
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model_path, out_path = argv[1], argv[2]
    z = np.load(model_path)
    P = {k: z[k].astype(np.float32) for k in z.files if k[0] in "Wb"}
    if float(z["activation"]) != 1.0:
        sys.exit(f"{model_path}: not a tanh* model")
    if float(z["sigma"]) != SIGMA:
        sys.exit(f"{model_path}: trained for sigma {float(z['sigma'])}, the reference is at {SIGMA}")
    agg = float(z["aggregation_sigma"])
    noisy = synthetic_noisy()
    den = train.denoise_image(P, noisy.astype(np.float32), train.tanhstar_fwd,
                              stride=train.STRIDE, clip=False, agg=agg)
    with open(model_path, "rb") as f:
        model_bytes = f.read()
    ref = {
        "about": "train.py's denoise_image (float32, unclipped, 0..255) of the noisy image, "
                 "written by training/reference.py",
        "model": os.path.basename(model_path),
        "model_bytes": len(model_bytes),
        "height": H, "width": W, "sigma": SIGMA, "stride": train.STRIDE,
        "aggregation_sigma": agg,
        "noisy": noisy.ravel().tolist(),
        "denoised": [round(float(v), 5) for v in den.ravel()],
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, out_path)
    print(f"wrote {out_path}: {H}x{W}, denoised range {den.min():.2f}..{den.max():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
