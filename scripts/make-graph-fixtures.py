#!/usr/bin/env python3
"""Writes the CNN-graph fixtures of tests/suite/models/graph_float.rs (issue 47, docs/graph.md) into the
folder given: small networks built with the `onnx` helper API (random weights, fixed seed)
in the shapes of the denoisers the issue names, and onnxruntime's outputs on fixed inputs at
two image sizes (reference.npz: NAME_x0, NAME_y0, NAME_x1, NAME_y1, float64 H x W).

- redcnn.onnx: RED-CNN (unpadded 5x5 convs down, transposed 5x5 convs up, an added
  shortcut, ReLU of input + net).
- unet.onnx: a 3-level U-Net: max pooling, concatenated skips, nearest up-sampling
  (asymmetric/floor, as torch exports it) and bilinear (pytorch_half_pixel), batch norms
  folded (after a conv) and not (after a concat), residual output.
- drunet.onnx: DRUNet-like: residual blocks, a stride-2 2x2 conv down, a stride-2 2x2
  transposed conv up, an added skip; a depthwise and a dilated conv, PRelu, Clip.
- leaky.onnx: the U-Net's shape with LeakyRelu, average pooling, constant Mul/Add/Div,
  SpaceToDepth / DepthToSpace (CRD) and half_pixel nearest up-sampling.

    make graph-fixtures    (a venv with onnx, onnxruntime and numpy, pinned in the Makefile)
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SIZES = [(24, 32), (16, 40)]


class Net:
    """A graph under construction: nodes, initializers, fresh names."""

    def __init__(self, name, seed):
        self.name, self.rng = name, np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def fresh(self, what):
        self.n += 1
        return f"{what}{self.n}"

    def const(self, value, what="c"):
        name = self.fresh(what)
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op, inputs, **attrs):
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=None, dil=1, group=1, bias=True):
        pad = (k // 2) * dil if pad is None else pad
        fan = cin // group * k * k
        w = self.rng.uniform(-1, 1, (cout, cin // group, k, k)) * np.sqrt(3 / fan)
        ins = [x, self.const(w, "w")]
        if bias:
            ins.append(self.const(self.rng.uniform(-0.1, 0.1, cout), "b"))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride] * 2,
                       pads=[pad] * 4, dilations=[dil] * 2, group=group)

    def convt(self, x, cin, cout, k, stride=1, pad=0, out_pad=0):
        w = self.rng.uniform(-1, 1, (cin, cout, k, k)) * np.sqrt(3 / (cin * k * k / stride**2))
        b = self.rng.uniform(-0.1, 0.1, cout)
        attrs = dict(kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
        if out_pad:
            attrs["output_padding"] = [out_pad] * 2
        return self.op("ConvTranspose", [x, self.const(w, "w"), self.const(b, "b")], **attrs)

    def bn(self, x, c):
        r = self.rng
        p = [r.uniform(0.5, 1.5, c), r.uniform(-0.2, 0.2, c), r.uniform(-0.2, 0.2, c),
             r.uniform(0.5, 2.0, c)]
        return self.op("BatchNormalization", [x] + [self.const(v, "bn") for v in p],
                       epsilon=1e-4)

    def resize(self, x, mode, coords, nearest="floor"):
        scales = self.const([1, 1, 2, 2], "scales")
        attrs = dict(mode=mode, coordinate_transformation_mode=coords)
        if mode == "nearest":
            attrs["nearest_mode"] = nearest
        return self.op("Resize", [x, "", scales], **attrs)

    def model(self, out):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "H", "W"])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 1, "H", "W"])
        g = helper.make_graph(self.nodes, self.name, [x], [y], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="make-graph-fixtures")
        m.ir_version = 8
        helper.set_model_props(m, {"sigma": "25"})
        onnx.checker.check_model(m, full_check=True)
        return m


def redcnn():
    n, c = Net("redcnn", 1), 8
    e1 = n.op("Relu", [n.conv("x", 1, c, 5, pad=0)])
    e2 = n.op("Relu", [n.conv(e1, c, c, 5, pad=0)])
    d1 = n.convt(e2, c, c, 5)
    d1 = n.op("Relu", [n.op("Add", [d1, e1])])
    d2 = n.convt(d1, c, 1, 5)
    return n.model(n.op("Relu", [n.op("Add", [d2, "x"])]))


def unet(leaky=False):
    n, c = Net("leaky" if leaky else "unet", 3 if leaky else 2), 4

    def act(x):
        return n.op("LeakyRelu", [x], alpha=0.1) if leaky else n.op("Relu", [x])

    def pool(x):
        if leaky:
            return n.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        return n.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    x = "x"
    if leaky:
        # Constants on the input: (x * 2 + 0.5) / 2.
        x = n.op("Div", [n.op("Add", [n.op("Mul", ["x", n.const(2.0)]), n.const(0.5)]),
                         n.const(2.0)])
    l1 = act(n.bn(n.conv(x, 1, c, 3, bias=False), c))
    l2 = act(n.conv(pool(l1), c, 2 * c, 3))
    l3 = act(n.conv(pool(l2), 2 * c, 4 * c, 3))
    up2 = n.resize(l3, "nearest", "half_pixel" if leaky else "asymmetric",
                   "round_prefer_ceil" if leaky else "floor")
    m2 = act(n.conv(n.bn(n.op("Concat", [up2, l2], axis=1), 6 * c), 6 * c, 2 * c, 3))
    up1 = n.resize(m2, "linear", "pytorch_half_pixel")
    cat1 = n.op("Concat", [up1, l1], axis=1)
    if leaky:
        # A pixel (un)shuffle pair around one conv, as FFDNet-style nets have.
        s = n.op("SpaceToDepth", [cat1], blocksize=2)
        s = act(n.conv(s, 12 * c, 8 * c, 3))
        cat1 = n.op("DepthToSpace", [s], blocksize=2, mode="CRD")
        cin = 2 * c
    else:
        cin = 3 * c
    out = n.conv(act(n.conv(cat1, cin, c, 3)), c, 1, 3)
    return n.model(n.op("Sub", ["x", out]))


def drunet():
    n, c = Net("drunet", 4), 8

    def res(x, ch, dil=1):
        y = n.conv(n.op("Relu", [n.conv(x, ch, ch, 3, dil=dil)]), ch, ch, 3)
        return n.op("Add", [x, y])

    h = n.conv("x", 1, c, 3, bias=False)
    r1 = res(h, c)
    d = n.conv(r1, c, 2 * c, 2, stride=2, pad=0, bias=False)
    d = res(d, 2 * c, dil=2)
    # Depthwise conv and a per-channel PRelu.
    d = n.conv(d, 2 * c, 2 * c, 3, group=2 * c)
    d = n.op("PRelu", [d, n.const(n.rng.uniform(0.05, 0.3, (2 * c, 1, 1)), "slope")])
    u = n.convt(d, 2 * c, c, 2, stride=2)
    u = n.op("Add", [u, r1])
    u = n.op("Clip", [u, n.const(-1.5), n.const(1.5)])
    t = n.conv(res(u, c), c, 1, 3, bias=False)
    return n.model(n.op("Sub", ["x", t]))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "out/graph-fixtures"
    os.makedirs(out, exist_ok=True)
    ref, rng = {}, np.random.default_rng(0)
    for make in [redcnn, unet, drunet, lambda: unet(leaky=True)]:
        m = make()
        name = m.graph.name
        path = os.path.join(out, name + ".onnx")
        tmp = path + ".tmp"
        onnx.save(m, tmp)
        os.replace(tmp, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for i, (h, w) in enumerate(SIZES):
            x = rng.uniform(0, 1, (1, 1, h, w)).astype(np.float32)
            (y,) = sess.run(None, {"x": x})
            assert y.shape == x.shape, (name, y.shape)
            ref[f"{name}_x{i}"] = x[0, 0].astype(np.float64)
            ref[f"{name}_y{i}"] = y[0, 0].astype(np.float64)
    tmp = os.path.join(out, "reference.tmp.npz")
    np.savez(tmp, **ref)
    os.replace(tmp, os.path.join(out, "reference.npz"))
    print(f"{out}: {len(ref) // 4} graphs, onnxruntime {ort.__version__}, onnx {onnx.__version__}")


if __name__ == "__main__":
    main()
