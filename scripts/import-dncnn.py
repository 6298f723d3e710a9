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

import h5py
import numpy as np


def text(f, ds):
    return "".join(chr(c) for c in np.asarray(ds).flatten())


def refs(f, ds):
    return [f[r] for r in np.asarray(ds).flatten()]


def conv_filters(raw, is_first, is_last):
    """(out, in, w, h) as stored -> (out, in, h, w)."""
    w = np.asarray(raw, dtype=np.float64)
    if w.ndim == 3:  # one output: (in, w, h)
        w = w[np.newaxis]
    elif w.ndim == 2:  # 1x1 kernel with one input and output trimmed: (w, h)
        w = w[np.newaxis, np.newaxis]
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise SystemExit(f"unexpected filter shape {np.shape(raw)}")
    return np.ascontiguousarray(w.transpose(0, 1, 3, 2))


def load(path):
    f = h5py.File(path, "r")
    layers = f["net/layers"]
    convs = []  # [weights (out,in,k,k), bias (out,)]
    relus_after = []
    n = layers.shape[0]
    for i in range(n):
        g = f[layers[i][0]]
        kind = text(f, g["type"][()])
        if kind == "conv":
            pad = np.asarray(g["pad"][()]).flatten()
            stride = np.asarray(g["stride"][()]).flatten()
            wr, br = refs(f, g["weights"][()])
            w = conv_filters(wr[()], not convs, i == n - 1)
            k = w.shape[2]
            if np.any(stride != 1) or np.any(pad != k // 2):
                raise SystemExit(f"layer {i}: stride {stride} / pad {pad}: only same-padded stride-1 convolutions are supported")
            b = np.asarray(br[()], dtype=np.float64).flatten()
            if b.size != w.shape[0]:
                raise SystemExit(f"layer {i}: {b.size} biases for {w.shape[0]} filters")
            convs.append([w, b])
            relus_after.append(False)
        elif kind == "bnorm":
            if not convs or relus_after[-1]:
                raise SystemExit(f"layer {i}: batch norm not directly after a convolution")
            mult, bias, moments = (np.asarray(r[()], dtype=np.float64) for r in refs(f, g["weights"][()]))
            mult, bias = mult.flatten(), bias.flatten()
            moments = moments.reshape(2, -1) if moments.shape[0] == 2 else moments.reshape(-1, 2).T
            mean, std = moments
            w, b = convs[-1]
            scale = mult / std
            convs[-1] = [w * scale[:, None, None, None], (b - mean) * scale + bias]
        elif kind == "relu":
            leak = float(np.asarray(g["leak"][()]).flatten()[0]) if "leak" in g else 0.0
            if leak != 0.0:
                raise SystemExit(f"layer {i}: leaky ReLU ({leak}) is not supported")
            if not convs or relus_after[-1]:
                raise SystemExit(f"layer {i}: ReLU not after a convolution")
            relus_after[-1] = True
        else:
            raise SystemExit(f"layer {i}: unsupported layer type {kind!r}")
    if not convs:
        raise SystemExit("no convolution layers")
    if any(not r for r in relus_after[:-1]) or relus_after[-1]:
        raise SystemExit("expected ReLU after every convolution but the last")
    for a, b in zip(convs, convs[1:]):
        if a[0].shape[0] != b[0].shape[1]:
            raise SystemExit("convolutions do not chain")
    return convs


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
