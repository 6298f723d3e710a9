#!/usr/bin/env python3
"""Converts an FFDNet MatConvNet model (Zhang, Zuo, Zhang, TIP 2018) into ppdenoise's CNN `.npz`.

The authors' grayscale files, `FFDNet_Clip_gray.mat` (trained on noisy images clipped to
[0, 1], as 8-bit noisy images are) and `FFDNet_gray.mat`, hold 32 simplenn layers: `SubP`
(scale 0.5: pixel-unshuffle into 4 half-resolution sub-images), `concat` (the noise-level map
as channel 5), 15 same-padded 3x3 `conv` layers with a `relu` after each but the last, and
`SubP` (scale 2: pixel-shuffle back). The output is the clean image, not a residual.

Their colour files, `FFDNet_Clip_color.mat` and `FFDNet_color.mat`, have the same layout
with 13 input channels (the 4 sub-images of each of R, G and B, colour-major, then ONE
noise-map channel shared by the colours) and 12 outputs (12 layers of 96 channels); the
first layer's input channels tell them apart, and a colour model's file says `colours = 3`.

Writes `K1..K15` (out x in x 3 x 3), `b1..b15`, `unshuffle = 2`, `noise_map = 1`,
`residual = 0`, `sigma` (nominal only: the map carries the noise level) and `fixed_point`
(the fixed-point settings measured for these weights). ppdenoise's
frame (src/model/frame.rs) takes the sub-images in the authors' channel order, (dy, dx) =
(0,0), (1,0), (0,1), (1,1), and pads odd sizes by repeating the last row/column.

    python3 -m venv .venv-import && .venv-import/bin/pip install h5py numpy
    .venv-import/bin/python scripts/import-ffdnet.py FFDNet_Clip_gray.mat OUT.npz

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
    ap.add_argument("mat", help="FFDNet MatConvNet model (.mat, v7.3)")
    ap.add_argument("out", help="output .npz")
    a = ap.parse_args()
    seen = []  # (layer index, kind, scale, convolutions before it)

    def frame_layer(i, kind, g, nconv):
        if kind == "SubP":
            seen.append((i, kind, float(np.asarray(g["scale"][()]).flatten()[0]), nconv))
            return True
        if kind == "concat":
            seen.append((i, kind, None, nconv))
            return True
        return False

    convs = load(a.mat, frame_layer)
    want = [("SubP", 0.5, 0), ("concat", None, 0), ("SubP", 2.0, len(convs))]
    if [(k, s, n) for _, k, s, n in seen] != want:
        raise SystemExit(f"not an FFDNet layout: frame layers {seen}, expected SubP(0.5), "
                         "concat, the convolutions, SubP(2)")
    # The first layer's input channels tell the colours: 4 sub-images per colour and one
    # noise-map channel (gray 5 -> 4, colour 13 -> 12).
    cin, cout = convs[0][0].shape[1], convs[-1][0].shape[0]
    colours = {5: 1, 13: 3}.get(cin)
    if colours is None or cout != 4 * colours:
        raise SystemExit(f"expected 5 input and 4 output channels (gray FFDNet) or 13 and 12 "
                         f"(colour FFDNet), found {cin} and {cout}")
    arrays = {}
    for i, (w, b) in enumerate(convs, 1):
        arrays[f"K{i}"] = w
        arrays[f"b{i}"] = b
    arrays["sigma"] = np.float64(25.0)
    arrays["residual"] = np.float64(0.0)
    arrays["unshuffle"] = np.float64(2.0)
    arrays["noise_map"] = np.float64(1.0)
    if colours != 1:
        # Absent for gray, whose files keep their bytes.
        arrays["colours"] = np.float64(colours)
    # Fixed point measured for these weights (docs/results-ffdnet.md): s = 13 fractional bits for
    # activations (s = 10, DnCNN-S's, lost 0.17 dB on set12 at sigma 25), ws = 14 for
    # weights, k activation bits. Gray: k = 19 (activations within +-32): no value left that
    # range on set12 at sigma 15 to 150 nor on pydicom's CT at 10 to 40 HU, so every output
    # there is k = 20's bit for bit, and each ReLU is an AND gate and five dealer bits lighter
    # (issue 51). ws = 12 would meet the dealer's 17 B per ReLU outright but costs the CT
    # 0.015-0.14 dB, ws = 13 far more ("Weights and activation bits" there): the rounding of
    # these weights is not monotone in ws. The colour model takes ws = 16, k = 20: at 14 its
    # fixed point lost 0.0116 dB against float on kodak24 at sigma 15 (issue 48's bound is
    # 0.01), at 16 0.0041, for 2 more AND gates per ReLU (docs/results-colour.md).
    ws, k = (16.0, 20.0) if colours != 1 else (14.0, 19.0)
    arrays["fixed_point"] = np.array([13.0, ws, k])
    d = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, a.out)
    chans = [convs[0][0].shape[1]] + [w.shape[0] for w, _ in convs]
    kind = "colour FFDNet" if colours != 1 else "FFDNet"
    print(f"wrote {a.out}: {kind}, {len(convs)} convolutions, channels {chans}", file=sys.stderr)


if __name__ == "__main__":
    main()
