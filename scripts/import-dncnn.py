#!/usr/bin/env python3
"""Converts a DnCNN MatConvNet model (Zhang et al., TIP 2017) into ppdenoise's CNN `.npz`.

The authors' files (`model/specifics/sigma=NN.mat` for DnCNN-S, `model/GD_Gray_Blind.mat` for
DnCNN-B) are MATLAB v7.3, i.e. HDF5: h5py reads them, scipy.io.loadmat does not. `net/layers`
is a cell array of simplenn layers: `conv` (filters, biases), `relu` (leak 0) and, in files
that still have it, `bnorm` (multipliers, biases, moments), which is folded into the
convolution before it. As HDF5 stores them, filters are (out, in, width, height) (MATLAB is
column-major) and are transposed to (out, in, height, width) for a row-major correlation like
PyTorch's conv2d; a single-output layer's filters are stored as (in, width, height).

Writes `K1..KL` (out x in x k x k), `b1..bL`, `sigma` and `residual = 1` (DnCNN predicts the
noise: clean = noisy - net(noisy), pixels scaled to [0, 1]).

    python3 -m venv .venv-import && .venv-import/bin/pip install h5py numpy
    .venv-import/bin/python scripts/import-dncnn.py MODEL.mat OUT.npz --sigma 25

The weights stay where they are: never commit a converted model into the project.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from matconvnet import load  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mat", help="MatConvNet model (.mat, v7.3)")
    ap.add_argument("out", help="output .npz")
    ap.add_argument("--sigma", type=float, required=True,
                    help="noise level the model is for (DnCNN-B: the level the table scales to)")
    a = ap.parse_args()
    convs = load(a.mat)
    arrays = {}
    for i, (w, b) in enumerate(convs, 1):
        arrays[f"K{i}"] = w
        arrays[f"b{i}"] = b
    arrays["sigma"] = np.float64(a.sigma)
    arrays["residual"] = np.float64(1.0)
    d = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, a.out)
    chans = [convs[0][0].shape[1]] + [w.shape[0] for w, _ in convs]
    print(f"wrote {a.out}: {len(convs)} convolutions, channels {chans}", file=sys.stderr)


if __name__ == "__main__":
    main()
