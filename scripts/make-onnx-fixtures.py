#!/usr/bin/env python3
"""Writes the PyTorch fixtures of tests/suite/models/onnx.rs into fixtures/onnx/: tiny denoisers of the
three families made with torch, exported by torch.onnx.export and saved by
safetensors.torch.save_file, and what torch's own forward gives on fixed inputs.

- tiny-mlp.onnx: nn.Sequential(Linear(81, 16), Tanh, Linear(16, 16), Tanh, Linear(16, 25))
  (Gemm), with ppdenoise's settings in the model's metadata_props;
  tiny-mlp-matmul.onnx: the same weights written as x @ W + b (MatMul and Add);
  tiny-mlp-relu.onnx and tiny-mlp-relu.safetensors (its state dict, `activation` "relu"):
  the same shape with nn.ReLU between the layers.
- tiny-dncnn.onnx: a DnCNN (Conv+ReLU, 2 x (Conv without bias, BatchNorm2d, ReLU), Conv;
  output x - net(x)), exported with its batch norms as BatchNormalization nodes
  (training=PRESERVE on a model in eval mode); tiny-dncnn-dynamo.onnx: the same through
  the dynamo exporter, which folds them itself; tiny-dncnn.safetensors: its state dict.
- tiny-ffdnet.onnx: an FFDNet (PixelUnshuffle(2), the noise level repeated into a map and
  concatenated, Conv+ReLU, Conv, PixelShuffle(2)); tiny-ffdnet-dynamo.onnx;
  tiny-ffdnet.safetensors: its state dict.
- reference.npz: inputs and torch's outputs (float32 forward, stored as float64).

    python3 -m venv .venv-onnx && .venv-onnx/bin/pip install torch onnx onnxscript safetensors numpy
    .venv-onnx/bin/python scripts/make-onnx-fixtures.py

With --dncnn-npz out/dncnn/s25.npz (made by scripts/import-dncnn.py from the authors'
sigma=25.mat) it writes instead out/dncnn/s25.onnx: DnCNN-S as a PyTorch module holding
those weights in float64, for the test that the ONNX path gives the .npz's image bit for bit;
with --ffdnet-npz out/ffdnet/clip.npz, out/ffdnet/clip.onnx: FFDNet the same way, its
sub-images in PyTorch's order (`make onnx-dncnn` makes both).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
import torch.nn as nn
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "fixtures", "onnx")


class DnCNN(nn.Module):
    def __init__(self, depth=4, c=8, bn=True):
        super().__init__()
        layers = [nn.Conv2d(1, c, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=not bn)]
            layers += [nn.BatchNorm2d(c, eps=1e-4)] if bn else []
            layers += [nn.ReLU()]
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.net(x)


class FFDNet(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.net = nn.Sequential(nn.Conv2d(5, c, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c, 4, 3, padding=1))

    def forward(self, x, sigma):
        x = self.down(x)
        m = sigma.repeat(1, 1, x.shape[2], x.shape[3])
        return self.up(self.net(torch.cat((x, m), 1)))


class MatMulMLP(nn.Module):
    def __init__(self, seq):
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(l.weight.detach().t().clone()) for l in seq[::2]])
        self.b = nn.ParameterList([nn.Parameter(l.bias.detach().clone()) for l in seq[::2]])

    def forward(self, x):
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            x = x @ w + b
            if i + 1 < len(self.w):
                x = torch.tanh(x)
        return x


def export(model, args, path, names, dynamo=False, **kw):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".onnx")
    os.close(fd)
    extra = {"external_data": False} if dynamo else {}
    torch.onnx.export(model, args, tmp, input_names=names, output_names=["y"],
                      opset_version=18 if dynamo else 17, dynamo=dynamo, **extra, **kw)
    if dynamo:
        # The dynamo exporter writes a stack trace with this machine's paths into each node;
        # nothing committed may name a machine's paths (tests/suite/house/no_machine_paths.rs).
        strip = os.path.join(os.path.dirname(os.path.abspath(__file__)), "strip-onnx-metadata.py")
        subprocess.run([sys.executable, strip, tmp], check=True)
    os.replace(tmp, path)


def set_props(path, props):
    m = onnx.load(path)
    onnx.helper.set_model_props(m, props)
    onnx.save(m, path)


def fixtures():
    torch.manual_seed(2026)
    rng = np.random.default_rng(2026)
    ref = {}

    mlp = nn.Sequential(nn.Linear(81, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                        nn.Linear(16, 25)).eval()
    props = {"sigma": "25", "mean_shift": "true", "residual": "true",
             "aggregation_sigma": "1.5"}
    x = torch.rand(1, 81)
    for name, m in [("tiny-mlp", mlp), ("tiny-mlp-matmul", MatMulMLP(mlp).eval())]:
        p = os.path.join(OUT, f"{name}.onnx")
        export(m, (x,), p, ["x"])
        set_props(p, props)
    xs = torch.tensor(rng.uniform(-2, 2, (5, 81)), dtype=torch.float32)
    ref["mlp_x"] = xs.double().numpy()
    with torch.no_grad():
        ref["mlp_y"] = mlp(xs).double().numpy()

    dn = DnCNN().eval()
    for mod in dn.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    ex = torch.rand(1, 1, 16, 16)
    export(dn, (ex,), os.path.join(OUT, "tiny-dncnn.onnx"), ["x"],
           training=torch.onnx.TrainingMode.PRESERVE)
    export(dn, (ex,), os.path.join(OUT, "tiny-dncnn-dynamo.onnx"), ["x"], dynamo=True)
    save_file(dn.net.state_dict(), os.path.join(OUT, "tiny-dncnn.safetensors"),
              metadata={"sigma": "25", "residual": "true", "bn_eps": "0.0001"})

    ff = FFDNet().eval()
    sig = torch.full((1, 1, 1, 1), 30 / 255)
    export(ff, (ex, sig), os.path.join(OUT, "tiny-ffdnet.onnx"), ["x", "sigma"])
    export(ff, (ex, sig), os.path.join(OUT, "tiny-ffdnet-dynamo.onnx"), ["x", "sigma"],
           dynamo=True)
    save_file(ff.net.state_dict(), os.path.join(OUT, "tiny-ffdnet.safetensors"),
              metadata={"residual": "false", "unshuffle": "2", "noise_map": "true"})

    # Images on the 0..255 scale, at the export's size and at another one: the networks are
    # convolutional, so one export serves every size.
    with torch.no_grad():
        for h, w in [(16, 16), (12, 18)]:
            img = rng.integers(0, 256, (h, w)).astype(np.float64)
            t = torch.tensor(img / 255, dtype=torch.float32)[None, None]
            ref[f"dncnn_in_{h}x{w}"] = img
            ref[f"dncnn_out_{h}x{w}"] = (dn(t)[0, 0].double() * 255).numpy()
            ref[f"ffdnet_out_{h}x{w}"] = (ff(t, sig)[0, 0].double() * 255).numpy()
    # A ReLU MLP, drawn from its own seed so the fixtures above stay as they were.
    torch.manual_seed(2027)
    rmlp = nn.Sequential(nn.Linear(81, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 25)).eval()
    p = os.path.join(OUT, "tiny-mlp-relu.onnx")
    export(rmlp, (x,), p, ["x"])
    set_props(p, props)
    save_file({f"net.{k}": v.contiguous() for k, v in rmlp.state_dict().items()},
              os.path.join(OUT, "tiny-mlp-relu.safetensors"),
              metadata={**props, "activation": "relu"})
    with torch.no_grad():
        ref["mlp_relu_y"] = rmlp(xs).double().numpy()
    np.savez(os.path.join(OUT, "reference.npz"), **ref)
    for f in sorted(os.listdir(OUT)):
        print(f"{f}: {os.path.getsize(os.path.join(OUT, f))} bytes")


def dncnn_s(npz, out):
    """DnCNN-S with the converted weights, in float64, so the ONNX file holds exactly them."""
    z = np.load(npz)
    n = len([k for k in z.files if k.startswith("K")])
    layers = []
    for i in range(1, n + 1):
        k = torch.tensor(z[f"K{i}"], dtype=torch.float64)
        conv = nn.Conv2d(k.shape[1], k.shape[0], k.shape[2], padding=k.shape[2] // 2).double()
        with torch.no_grad():
            conv.weight.copy_(k)
            conv.bias.copy_(torch.tensor(z[f"b{i}"], dtype=torch.float64))
        layers += [conv] + ([nn.ReLU()] if i < n else [])
    m = DnCNN(bn=False).double().eval()
    m.net = nn.Sequential(*layers)
    export(m, (torch.rand(1, 1, 32, 32, dtype=torch.float64),), out, ["x"])
    props = {"sigma": str(float(z["sigma"]))}
    if "fixed_point" in z.files:
        props["fixed_point"] = ",".join(str(int(v)) for v in z["fixed_point"])
    set_props(out, props)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {n} convolutions)")


def ffdnet(npz, out):
    """FFDNet with the converted weights (ppdenoise's sub-image order, the authors') as a
    PyTorch module in float64, PixelUnshuffle/PixelShuffle order: channels permuted here,
    so the importer has to permute them back to give the .npz's model."""
    z = np.load(npz)
    n = len([k for k in z.files if k.startswith("K")])
    r = int(z["unshuffle"])
    # Sub-image q of ppdenoise (row offset q % r, column offset q // r) is PyTorch's channel
    # (q % r) * r + q // r.
    torch_of = [(q % r) * r + q // r for q in range(r * r)]
    m = FFDNet().double().eval()
    layers = []
    for i in range(1, n + 1):
        k, b = z[f"K{i}"].copy(), z[f"b{i}"].copy()
        if i == 1:
            k2 = k.copy()
            for q, t in enumerate(torch_of):
                k2[:, t] = k[:, q]
            k = k2
        if i == n:
            k2, b2 = k.copy(), b.copy()
            for q, t in enumerate(torch_of):
                k2[t], b2[t] = k[q], b[q]
            k, b = k2, b2
        conv = nn.Conv2d(k.shape[1], k.shape[0], k.shape[2], padding=k.shape[2] // 2).double()
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(k))
            conv.bias.copy_(torch.tensor(b))
        layers += [conv] + ([nn.ReLU()] if i < n else [])
    m.net = nn.Sequential(*layers)
    ex = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    export(m, (ex, torch.full((1, 1, 1, 1), 25 / 255, dtype=torch.float64)), out, ["x", "sigma"])
    props = {"sigma": str(float(z["sigma"]))}
    if "fixed_point" in z.files:
        props["fixed_point"] = ",".join(str(int(v)) for v in z["fixed_point"])
    set_props(out, props)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {n} convolutions)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dncnn-npz", help="write DnCNN-S from this converted .npz instead")
    ap.add_argument("--ffdnet-npz", help="write FFDNet from this converted .npz instead")
    ap.add_argument("--out", help="with --dncnn-npz or --ffdnet-npz: the .onnx to write")
    a = ap.parse_args()
    if a.dncnn_npz:
        dncnn_s(a.dncnn_npz, a.out)
    elif a.ffdnet_npz:
        ffdnet(a.ffdnet_npz, a.out)
    else:
        fixtures()
