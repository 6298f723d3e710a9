#!/usr/bin/env python3
"""Writes fixtures/tiny-mlp.safetensors and fixtures/tiny-mlp.npz: one tiny MLP denoiser
(9x9 window in, 5x5 centre out, widths 81-16-16-25) in both formats ppdenoise reads.

The .safetensors is written by the reference Python `safetensors` package (numpy API, so no
torch is needed) with PyTorch's naming of an nn.Sequential state dict under a prefix
(`net.0.weight`, `net.0.bias`, `net.2.weight`, ...: the activations at odd indices hold no
tensors), weights out x in, float32, and the settings as `__metadata__` strings. The .npz
holds the same float32 values under ppdenoise's own names (W1, b1, ...) and the settings as
scalars. tests/suite/models/safetensors.rs checks that both load to the same model, bit for bit.

    python3 -m venv .venv-st && .venv-st/bin/pip install numpy safetensors
    .venv-st/bin/python scripts/make-safetensors-fixture.py
"""
import os

import numpy as np
from safetensors.numpy import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "fixtures")
WIDTHS = [81, 16, 16, 25]
SETTINGS = {
    "sigma": 25.0,
    "mean_shift": True,
    "residual": True,
    "activation": "tanh_star",
    "aggregation_sigma": 1.5,
}

rng = np.random.default_rng(2026)
layers = []
for fan_in, fan_out in zip(WIDTHS, WIDTHS[1:]):
    r = np.sqrt(3.0 / fan_in)
    w = rng.uniform(-r, r, size=(fan_out, fan_in)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, size=fan_out).astype(np.float32)
    layers.append((w, b))

# PyTorch's names: nn.Sequential(Linear, Tanh, Linear, Tanh, Linear) as `self.net`.
tensors = {}
for k, (w, b) in enumerate(layers):
    tensors[f"net.{2 * k}.weight"] = w
    tensors[f"net.{2 * k}.bias"] = b
metadata = {
    "sigma": str(SETTINGS["sigma"]),
    "mean_shift": str(SETTINGS["mean_shift"]).lower(),
    "residual": str(SETTINGS["residual"]).lower(),
    "activation": SETTINGS["activation"],
    "aggregation_sigma": str(SETTINGS["aggregation_sigma"]),
}
st_path = os.path.join(OUT, "tiny-mlp.safetensors")
save_file(tensors, st_path, metadata=metadata)

arrays = {}
for k, (w, b) in enumerate(layers):
    arrays[f"W{k + 1}"] = w
    arrays[f"b{k + 1}"] = b
arrays["sigma"] = np.array(SETTINGS["sigma"])
arrays["mean_shift"] = np.array(float(SETTINGS["mean_shift"]))
arrays["residual"] = np.array(float(SETTINGS["residual"]))
arrays["activation"] = np.array(1.0 if SETTINGS["activation"] == "tanh_star" else 0.0)
arrays["aggregation_sigma"] = np.array(SETTINGS["aggregation_sigma"])
npz_path = os.path.join(OUT, "tiny-mlp.npz")
np.savez(npz_path, **arrays)

# The file reads back as written.
back = load_file(st_path)
assert sorted(back) == sorted(tensors)
assert all(np.array_equal(back[k], tensors[k]) for k in tensors)
print(f"wrote {st_path} ({os.path.getsize(st_path)} bytes) and {npz_path} ({os.path.getsize(npz_path)} bytes)")
