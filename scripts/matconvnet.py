"""MatConvNet simplenn models as their authors saved them (MATLAB v7.3, i.e. HDF5, read with
h5py): the layer walk shared by import-dncnn.py and import-ffdnet.py.

As HDF5 stores them, filters are (out, in, width, height) (MATLAB is column-major) and are
transposed to (out, in, height, width) for a row-major correlation like PyTorch's conv2d; a
single-output layer's filters are stored as (in, width, height). `bnorm` layers are folded
into the convolution before them. Layer types other than conv, bnorm and relu are handed to
`other(i, kind, group)`, which returns True when it accepts the layer.
"""

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


def load(path, other=None):
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
        elif other is None or not other(i, kind, g, len(convs)):
            raise SystemExit(f"layer {i}: unsupported layer type {kind!r}")
    if not convs:
        raise SystemExit("no convolution layers")
    if any(not r for r in relus_after[:-1]) or relus_after[-1]:
        raise SystemExit("expected ReLU after every convolution but the last")
    for a, b in zip(convs, convs[1:]):
        if a[0].shape[0] != b[0].shape[1]:
            raise SystemExit("convolutions do not chain")
    return convs
