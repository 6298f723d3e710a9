#!/usr/bin/env python3
"""Writes CNN-graph fixtures exported from PyTorch with `torch.onnx.export` (issue 47, item 4;
docs/graph.md), the way a hospital's own network reaches ppdenoise, into the folder given:
small networks (random weights, fixed seed, eval mode) in the shapes of the denoisers the
issue names, and PyTorch's own float32 outputs on fixed inputs at two image sizes
(reference.npz: NAME_x0, NAME_y0, NAME_x1, NAME_y1, float64 H x W).

- redcnn.onnx: RED-CNN (Chen et al. 2017) as its authors wrote it: five unpadded 5x5 convs
  down, five 5x5 transposed convs up, three added shortcuts (the input, after conv 2, after
  conv 4), ReLU at the end.
- unet.onnx: a 4-level U-Net (as CARE / MONAI's BasicUNet): two conv-BN-ReLU per level, max
  pooling down, up by a transposed conv, bilinear (align_corners=False) and nearest
  up-sampling, concatenated skips, a residual output.
- drunet.onnx: DRUNet-like (Zhang et al. 2021): no biases, residual blocks, 2x2 stride-2
  convs down, 2x2 stride-2 transposed convs up, added skips.
- leaky.onnx: a U-Net with LeakyReLU, PReLU, average pooling, a pixel shuffle up and a
  clamp at the end.

    make torch-graphs    (PyTorch and onnx from PyPI in out/.venv-torch; not part of make test)
"""
import os
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

OPSET = 17
SIZES = [(24, 32), (40, 24)]


def block(cin, cout, act):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), act(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), act())


class RedCnn(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.down = nn.ModuleList([nn.Conv2d(1 if i == 0 else c, c, 5) for i in range(5)])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(c, 1 if i == 4 else c, 5) for i in range(5)])

    def forward(self, x):
        r1 = x
        out = F.relu(self.down[0](x))
        out = F.relu(self.down[1](out))
        r2 = out
        out = F.relu(self.down[2](out))
        out = F.relu(self.down[3](out))
        r3 = out
        out = F.relu(self.down[4](out))
        out = self.up[0](out) + r3
        out = self.up[1](F.relu(out))
        out = self.up[2](F.relu(out)) + r2
        out = self.up[3](F.relu(out))
        out = self.up[4](F.relu(out)) + r1
        return F.relu(out)


class UNet(nn.Module):
    """Four levels (three poolings): channels c, 2c, 4c, 8c."""

    def __init__(self, c=4, leaky=False):
        super().__init__()
        self.leaky = leaky
        act = (lambda: nn.LeakyReLU(0.1)) if leaky else nn.ReLU
        ch = [c, 2 * c, 4 * c, 8 * c]
        self.enc = nn.ModuleList([block(1 if i == 0 else ch[i - 1], ch[i], act) for i in range(4)])
        self.dec = nn.ModuleList([block(2 * ch[i], ch[i], act) for i in range(3)])
        # Up from level i + 1 to level i: a transposed conv, bilinear, nearest (the leaky
        # variant: a pixel shuffle at every level).
        if leaky:
            self.ups = nn.ModuleList([
                nn.Sequential(nn.Conv2d(ch[i + 1], 4 * ch[i], 1), nn.PixelShuffle(2))
                for i in range(3)])
        else:
            self.ups = nn.ModuleList([
                nn.ConvTranspose2d(ch[1], ch[0], 2, stride=2),
                nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                              nn.Conv2d(ch[2], ch[1], 1)),
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                              nn.Conv2d(ch[3], ch[2], 1)),
            ])
        self.prelu = nn.PReLU(ch[0]) if leaky else nn.Identity()
        self.out = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x):
        pool = (lambda t: F.avg_pool2d(t, 2)) if self.leaky else (lambda t: F.max_pool2d(t, 2))
        skips, h = [], x
        for i, e in enumerate(self.enc):
            h = e(h if i == 0 else pool(h))
            skips.append(h)
        for i in reversed(range(3)):
            h = self.dec[i](torch.cat([self.ups[i](h), skips[i]], dim=1))
        y = x - self.out(self.prelu(h))
        return torch.clamp(y, -0.5, 1.5) if self.leaky else y


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.b(F.relu(self.a(x)))


class DrUNet(nn.Module):
    """`levels` resolutions (channels c, 2c, 4c, ...), `blocks` residual blocks per level."""

    def __init__(self, c=4, levels=3, blocks=1):
        super().__init__()
        ch = [c << i for i in range(levels)]
        res = lambda n: nn.Sequential(*[ResBlock(n) for _ in range(blocks)])
        self.head = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.down = nn.ModuleList([
            nn.Sequential(res(ch[i]), nn.Conv2d(ch[i], ch[i + 1], 2, stride=2, bias=False))
            for i in range(levels - 1)])
        self.body = res(ch[-1])
        self.up = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2, bias=False),
                          res(ch[i]))
            for i in range(levels - 1)])
        self.tail = nn.Conv2d(c, 1, 3, padding=1, bias=False)

    def forward(self, x):
        hs = [self.head(x)]
        for d in self.down:
            hs.append(d(hs[-1]))
        h = self.body(hs[-1]) + hs[-1]
        for i in reversed(range(len(self.up))):
            h = self.up[i](h) + hs[i]
        return self.tail(h)


class DnCnn(nn.Module):
    """DnCNN-17 without batch norms (x - body(x)); `clip` adds a clamp to [0, 1] at the end,
    which only the graph family reads: the same convolutions, run by the other plan."""

    def __init__(self, c=64, depth=17, clip=False):
        super().__init__()
        layers = [nn.Conv2d(1, c, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.clip = clip

    def forward(self, x):
        y = x - self.body(x)
        return torch.clamp(y, 0.0, 1.0) if self.clip else y


def randomise(m, seed):
    """Random weights (and batch-norm statistics, so that folding them matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() > 1:
                fan = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (3 / fan) ** 0.5)
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.1
                        + (1.0 if "weight" in name else 0.0))
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_((torch.rand(mod.num_features, generator=g) - 0.5) * 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def export(net, path):
    tmp = path + ".tmp"
    x = torch.rand(1, 1, *SIZES[0])
    dyn = {"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}
    torch.onnx.export(net, (x,), tmp, dynamo=False, opset_version=OPSET,
                      input_names=["x"], output_names=["y"], dynamic_axes=dyn)
    os.replace(tmp, path)


def main():
    args = [a for a in sys.argv[1:] if a != "--bench"]
    out = args[0] if args else "out/torch-graph-fixtures"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    if "--bench" in sys.argv:
        # `make bench-graphs`: a realistic U-Net denoiser (4 levels, 32 to 256 channels) and a
        # DRUNet-small (4 levels, 16 to 128 channels, two residual blocks per level); and one
        # DnCNN-17 twice, as the CNN family reads it and, clamped, as a graph: the graph's
        # stride-1 convolutions against the same convolutions in a DnCNN job.
        nets = {"bench-unet": UNet(c=32), "bench-drunet": DrUNet(c=16, levels=4, blocks=2),
                "bench-dncnn": DnCnn(), "bench-dncnn-graph": DnCnn(clip=True)}
        for seed, (name, net) in enumerate(nets.items()):
            if name == "bench-dncnn-graph":
                net.load_state_dict(nets["bench-dncnn"].state_dict())
                export(net.eval(), os.path.join(out, name + ".onnx"))
                continue
            export(randomise(net, seed + 11), os.path.join(out, name + ".onnx"))
        print(f"{out}: {len(nets)} benchmark graphs exported by torch {torch.__version__}")
        return
    rng = np.random.default_rng(0)
    nets = {"redcnn": RedCnn(), "unet": UNet(), "drunet": DrUNet(), "leaky": UNet(leaky=True)}
    ref = {}
    for seed, (name, net) in enumerate(nets.items()):
        net = randomise(net, seed + 1)
        export(net, os.path.join(out, name + ".onnx"))
        with torch.no_grad():
            for i, (h, w) in enumerate(SIZES):
                xi = rng.uniform(0, 1, (1, 1, h, w)).astype(np.float32)
                y = net(torch.from_numpy(xi)).numpy()
                assert y.shape == xi.shape, (name, y.shape)
                ref[f"{name}_x{i}"] = xi[0, 0].astype(np.float64)
                ref[f"{name}_y{i}"] = y[0, 0].astype(np.float64)
    tmp = os.path.join(out, "reference.tmp.npz")
    np.savez(tmp, **ref)
    os.replace(tmp, os.path.join(out, "reference.npz"))
    print(f"{out}: {len(nets)} graphs exported by torch {torch.__version__} (opset {OPSET})")


if __name__ == "__main__":
    main()
