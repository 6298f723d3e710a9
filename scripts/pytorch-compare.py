#!/usr/bin/env python3
"""The plaintext paths side by side with PyTorch's float32 CPU forward (issue 26, item 3).

    python3 scripts/pytorch-compare.py [--model out/dncnn/s25.npz] [--size 512] [--runs 3]

One run, the same model and the same noisy image for all three:
  - PyTorch: float32 conv2d stack (torch.nn.functional), inference mode, all cores;
  - `ppdenoise denoise --arith float` (f32, the float path);
  - `ppdenoise denoise --arith fixed` (the fixed-point oracle the secure result equals).
Each is timed best of --runs (PyTorch after one warm-up forward, the forward alone;
ppdenoise by its own `seconds`, which include reading the model, and by the process's wall
time). The outputs are compared with PSNR (8-bit, as `denoise` writes them), and each one's
PSNR against the clean image is printed.

The script makes its own virtual environment (out/.venv-torch) with PyTorch from PyPI the
first time and runs itself inside it; PyTorch is needed by nothing else in the project.
The model is a CNN `.npz` as src/model/cnn.rs defines it (K1..KL, b1..bL, sigma, residual,
unshuffle, noise_map): DnCNN-S or FFDNet (the noise map at the uniform level --sigma).
"""

import argparse
import json
import os
import subprocess
import sys
import time

VENV = "out/.venv-torch"
# PyPI's Linux wheel of torch is the CUDA build; it runs on the CPU all the same.
REQUIREMENTS = ["torch==2.15.0", "numpy", "pillow"]


def in_venv():
    """Re-runs this script inside the venv, making it first when needed."""
    py = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    stamp = os.path.join(VENV, ".ok")
    if not os.path.exists(stamp):
        print(f"making {VENV} (PyTorch from PyPI; once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
        open(stamp, "w").close()
    os.execv(py, [py, *sys.argv])


def load_cnn(path, np):
    z = np.load(path)
    n = 0
    while f"K{n + 1}" in z.files:
        n += 1
    if n == 0:
        sys.exit(f"{path}: no K1 (not a CNN model)")
    scalar = lambda name, default: float(z[name]) if name in z.files else default
    return {
        "K": [z[f"K{i}"].astype(np.float32) for i in range(1, n + 1)],
        "b": [z[f"b{i}"].astype(np.float32) for i in range(1, n + 1)],
        "sigma": scalar("sigma", 25.0),
        "residual": scalar("residual", 1.0) != 0.0,
        "unshuffle": int(scalar("unshuffle", 1)),
        "noise_map": scalar("noise_map", 0.0) != 0.0,
    }


def stack_input(m, img, sigma, np):
    """The network's input as model/frame.rs builds it (images of a multiple of r only)."""
    r = m["unshuffle"]
    if img.shape[0] % r or img.shape[1] % r:
        sys.exit(f"the image's sides must be multiples of {r}")
    # Sub-image dx*r + dy holds the pixels at (dy, dx) of each r x r cell.
    chans = [img[dy::r, dx::r] for dx in range(r) for dy in range(r)]
    if m["noise_map"]:
        chans.append(np.full_like(chans[0], sigma / 255.0))
    return np.stack(chans)


def image_from_stack(m, out, np):
    r = m["unshuffle"]
    h, w = out.shape[1] * r, out.shape[2] * r
    img = np.empty((h, w), dtype=out.dtype)
    for dx in range(r):
        for dy in range(r):
            img[dy::r, dx::r] = out[dy + r * dx]
    return img


def torch_denoise(m, noisy, sigma, runs):
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(os.cpu_count())
    # As denoise does: p/255, times sigma*/sigma for a model without a noise map.
    scale = 1.0 if m["noise_map"] else m["sigma"] / sigma
    x0 = stack_input(m, noisy.astype(np.float64) * scale / 255.0, sigma, np)
    x = torch.from_numpy(x0.astype(np.float32))[None]
    ks = [torch.from_numpy(k) for k in m["K"]]
    bs = [torch.from_numpy(b) for b in m["b"]]

    def forward():
        with torch.inference_mode():
            h = x
            for i, (k, b) in enumerate(zip(ks, bs)):
                h = F.conv2d(h, k, b, padding=k.shape[-1] // 2)
                if i < len(ks) - 1:
                    h = F.relu(h)
            return h[0]

    forward()
    best, y = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        y = forward()
        best = min(best, time.perf_counter() - t)
    y = y.numpy().astype(np.float64)
    if m["residual"]:
        y = x0[: y.shape[0]] - y
    out = image_from_stack(m, y, np) * 255.0 / scale
    return best, out, torch.__version__, torch.get_num_threads()


def ppdenoise(exe, model, noisy, clean, arith, sigma, out, runs):
    best_in, best_wall, res = float("inf"), float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(
            [exe, "--json", "denoise", "--model", model, "--image", noisy, "--arith", arith,
             "--sigma", str(sigma), "--out", out, "--clean", clean],
            check=True, capture_output=True, text=True)
        best_wall = min(best_wall, time.perf_counter() - t)
        res = json.loads(p.stdout.strip().splitlines()[-1])
        best_in = min(best_in, res["seconds"])
    return best_in, best_wall, res["psnr"]


def psnr(a, b, np):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="out/dncnn/s25.npz")
    ap.add_argument("--exe", default="target/release/ppdenoise")
    ap.add_argument("--size", type=int, default=512, help="side of the phantom image")
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each (best is kept)")
    ap.add_argument("--out-dir", default="out/bench-plain")
    a = ap.parse_args()
    in_venv()

    import numpy as np
    from PIL import Image

    clean = f"builtin:phantom:{a.size}"
    os.makedirs(a.out_dir, exist_ok=True)
    noisy_png = os.path.join(a.out_dir, "noisy.png")
    subprocess.run([a.exe, "add-noise", "--image", clean, "--sigma", str(a.sigma), "--seed", "1",
                    "--out", noisy_png], check=True, capture_output=True)
    noisy = np.asarray(Image.open(noisy_png), dtype=np.float64)
    m = load_cnn(a.model, np)

    t_torch, y, version, threads = torch_denoise(m, noisy, a.sigma, a.runs)
    q_torch = np.clip(np.round(y), 0, 255)
    torch_png = os.path.join(a.out_dir, "pytorch.png")
    Image.fromarray(q_torch.astype(np.uint8)).save(torch_png)
    met = subprocess.run([a.exe, "--json", "metrics", clean, torch_png], check=True,
                         capture_output=True, text=True)
    torch_psnr = json.loads(met.stdout.strip().splitlines()[-1])["psnr"]

    rows = [("PyTorch float32", t_torch, None, torch_psnr, None)]
    for arith in ["float", "fixed"]:
        png = os.path.join(a.out_dir, f"{arith}.png")
        t_in, t_wall, p = ppdenoise(a.exe, a.model, noisy_png, clean, arith, a.sigma, png, a.runs)
        mine = np.asarray(Image.open(png), dtype=np.float64)
        rows.append((f"ppdenoise --arith {arith}", t_in, t_wall, p, (mine, q_torch)))

    print(f"model {a.model}, {a.size}x{a.size} phantom at sigma {a.sigma:g}, best of {a.runs}; "
          f"torch {version} on {threads} threads, {os.cpu_count()} cores")
    print()
    print("| run | seconds | process wall | x PyTorch | PSNR vs clean | PSNR vs PyTorch (8-bit) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t, wall, p, cmp in rows:
        agree = "" if cmp is None else f"{psnr(cmp[1], cmp[0], np):.2f} dB"
        if cmp is not None and agree == "inf dB":
            agree = "identical"
        w = "" if wall is None else f"{wall:.2f} s"
        print(f"| {name} | {t:.2f} s | {w} | {t / t_torch:.2f} | {p:.2f} dB | {agree} |")
    print()
    print("PyTorch: the forward alone; ppdenoise: its own `seconds` (model read, encode, forward, "
          "decode), then the whole process.")


if __name__ == "__main__":
    main()
