#!/usr/bin/env python3
"""Train the ppdenoise default MLP denoiser (numpy only, float32, manual backprop, Adam).

Model (exactly what the Rust side implements):
  x  = (clip(noisy,0,255)/255 - 0.5) * 5          39x39 window, row-major, 1521 values
  u  = x - mean(x)                                  per-patch mean shift
  h1 = act(W1 @ u + b1), h2 = act(W2 @ h1 + b2), ...
  o  = WL @ h + bL                                  289 values (17x17 centre, row-major)
  pred = x[11:28, 11:28] + o                        residual prediction
  target = (clean[11:28, 11:28]/255 - 0.5) * 5, loss = MSE
  act = tanh* of the paper (default) or tanh.

Usage:
  python training/train.py --run default --arch 512,512 --sigma 25 --minutes 60 [--resume] [--act tanhstar|tanh]
  python training/train.py --run default --export fixtures/default-model.npz   (export best checkpoint + JSON card)
"""
import argparse
import csv
import glob
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.environ.get("PPDENOISE_DATA", os.path.join(REPO, "..", "shared", "data"))

WIN, OUT, OFF = 39, 17, 11  # input window, output centre, offset of centre in window
STRIDE = 3
PAD_MODE = "symmetric"  # numpy np.pad mode used for whole-image evaluation
# Overlapping 17x17 predictions are combined with Gaussian weights (Burger et al. 2012 do the same):
# centre pixels of a prediction are more reliable than its border. The weights are the integers
# ppdenoise uses (PatchShape::window_weights): max(1, round(32 exp(-r^2 / (2 s^2)))), r measured
# from the window centre; s = 0 means plain averaging. Measured on set12 at sigma 25: with the
# 53.5M-patch model 3: 28.944, 4: 28.947, 5: 28.941, uniform: 28.907 dB; with the shipped
# 125M-patch model (fine-tuned with the s = 4 loss weights) 3.5: 29.013, 4: 29.008, uniform 28.936.
AGG_SIGMA = 3.5

# tanh* constants from the paper (Denoising in the Dark, TDSC 2019)
TS = dict(n1=-0.2716, c1=1.0, d1=0.016, n2=-0.0848, c2=0.42654, d2=0.4519, a=1.52, b=2.57)


# ---------------------------------------------------------------- activations
def tanhstar(z):
    """Returns (tanh*(z), d tanh*/dz). sign(0) = +1."""
    az = np.abs(z)
    s = np.where(z >= 0, np.float32(1), np.float32(-1))
    r1 = az <= TS["a"]
    r2 = az <= TS["b"]
    p1 = (TS["n1"] * az + TS["c1"]) * az + TS["d1"]
    p2 = (TS["n2"] * az + TS["c2"]) * az + TS["d2"]
    y = np.where(r1, p1, np.where(r2, p2, np.float32(1))) * s
    g1 = 2 * TS["n1"] * az + TS["c1"]
    g2 = 2 * TS["n2"] * az + TS["c2"]
    dy = np.where(r1, g1, np.where(r2, g2, np.float32(0)))
    return y.astype(z.dtype, copy=False), dy.astype(z.dtype, copy=False)


def tanhstar_fwd(z):
    az = np.abs(z)
    s = np.where(z >= 0, np.float32(1), np.float32(-1))
    p1 = (TS["n1"] * az + TS["c1"]) * az + TS["d1"]
    p2 = (TS["n2"] * az + TS["c2"]) * az + TS["d2"]
    y = np.where(az <= TS["a"], p1, np.where(az <= TS["b"], p2, np.float32(1))) * s
    return y.astype(z.dtype, copy=False)


def tanh_both(z):
    y = np.tanh(z)
    return y, (1 - y * y)


def act_fns(name):
    if name == "tanhstar":
        return tanhstar_fwd, tanhstar
    if name == "tanh":
        return np.tanh, tanh_both
    raise ValueError(name)


# ---------------------------------------------------------------- model
def init_params(arch, rng):
    """arch: list of layer widths incl. input and output, e.g. [1521,512,512,289]."""
    P = {}
    L = len(arch) - 1
    for i in range(L):
        fan_in, fan_out = arch[i], arch[i + 1]
        lim = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier/Glorot uniform
        if i == L - 1:
            lim *= 0.1  # small output layer: residual starts near identity
        P[f"W{i+1}"] = rng.uniform(-lim, lim, size=(fan_out, fan_in)).astype(np.float32)
        P[f"b{i+1}"] = np.zeros(fan_out, np.float32)
    return P


def n_layers(P):
    return sum(1 for k in P if k.startswith("W"))


def normalise(pix):
    return (pix.astype(np.float32) * np.float32(1 / 255) - np.float32(0.5)) * np.float32(5)


def centre_of(x):
    """x: (B,1521) -> (B,289) 17x17 centre."""
    return x.reshape(-1, WIN, WIN)[:, OFF:OFF + OUT, OFF:OFF + OUT].reshape(-1, OUT * OUT)


def forward(P, x, act_fwd):
    L = n_layers(P)
    h = x - x.mean(axis=1, keepdims=True)
    for i in range(1, L):
        h = act_fwd(h @ P[f"W{i}"].T + P[f"b{i}"])
    o = h @ P[f"W{L}"].T + P[f"b{L}"]
    return centre_of(x) + o


def loss_and_grads(P, x, y, act_both, pix_w=None):
    """Mean squared error over the 17x17 outputs; pix_w (289,) optionally weights the output
    positions (normalised to mean 1), e.g. by the aggregation window the outputs are used with."""
    L = n_layers(P)
    B = x.shape[0]
    hs = [x - x.mean(axis=1, keepdims=True)]
    ds = []
    for i in range(1, L):
        h, d = act_both(hs[-1] @ P[f"W{i}"].T + P[f"b{i}"])
        hs.append(h)
        ds.append(d)
    o = hs[-1] @ P[f"W{L}"].T + P[f"b{L}"]
    err = centre_of(x) + o - y
    if pix_w is None:
        loss = float(np.mean(err * err))
        g = err * np.float32(2.0 / (B * err.shape[1]))
    else:
        loss = float(np.mean(err * err * pix_w))
        g = err * (pix_w * np.float32(2.0 / (B * err.shape[1])))
    G = {}
    for i in range(L, 0, -1):
        G[f"W{i}"] = g.T @ hs[i - 1]
        G[f"b{i}"] = g.sum(axis=0)
        if i > 1:
            g = (g @ P[f"W{i}"]) * ds[i - 2]
    return loss, G


# ---------------------------------------------------------------- data
def load_gray(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


def load_train():
    files = sorted(glob.glob(os.path.join(DATA, "train400", "*.png")))
    if not files:
        sys.exit(f"no training images under {DATA}/train400")
    return np.stack([load_gray(f) for f in files])


def sample_batch(imgs, B, sigma, rng):
    N, H, W = imgs.shape
    idx = rng.integers(0, N, B)
    oy = rng.integers(0, H - WIN + 1, B)
    ox = rng.integers(0, W - WIN + 1, B)
    ar = np.arange(WIN)
    p = imgs[idx[:, None, None], oy[:, None, None] + ar[None, :, None], ox[:, None, None] + ar[None, None, :]]
    aug = rng.integers(0, 8, B)  # dihedral group: bit0 flip rows, bit1 flip cols, bit2 transpose
    m = (aug & 1).astype(bool)
    p[m] = p[m][:, ::-1, :]
    m = (aug & 2).astype(bool)
    p[m] = p[m][:, :, ::-1]
    m = (aug & 4).astype(bool)
    p[m] = p[m].transpose(0, 2, 1)
    clean = p.astype(np.float32)
    noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(noisy, 0, 255, out=noisy)
    x = normalise(noisy).reshape(B, WIN * WIN)
    y = normalise(clean[:, OFF:OFF + OUT, OFF:OFF + OUT]).reshape(B, OUT * OUT)
    return x, y


# ---------------------------------------------------------------- evaluation
def load_set12():
    files = sorted(glob.glob(os.path.join(DATA, "set12", "*.png")))
    return [(os.path.basename(f), load_gray(f)) for f in files]


def make_noisy(clean, sigma, idx, seed=1234):
    """Fixed-seed noisy version of set12 image idx, clipped to [0,255] (float, not rounded)."""
    r = np.random.default_rng([seed, int(round(sigma * 100)), idx])
    n = clean.astype(np.float32) + r.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(n, 0, 255)


def window_weights(agg_sigma):
    """(17,17) integer aggregation weights, as in ppdenoise."""
    if agg_sigma <= 0:
        return np.ones((OUT, OUT))
    r = np.arange(OUT) - (OUT - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * agg_sigma ** 2))
    return np.maximum(1.0, np.floor(32 * g + 0.5))


def denoise_image(P, noisy, act_fwd, stride=STRIDE, chunk=4096, clip=True, agg=0.0):
    """Whole-image denoising. noisy: float array (H,W) in [0,255]. Returns float (H,W) in [0,255].
    agg: Gaussian aggregation sigma (0 = plain averaging of overlapping predictions)."""
    H, W = noisy.shape
    ey = (-(H - OUT)) % stride
    ex = (-(W - OUT)) % stride
    pad = np.pad(noisy.astype(np.float32), ((OFF, OFF + ey), (OFF, OFF + ex)), mode=PAD_MODE)
    xn = normalise(pad)
    win = np.lib.stride_tricks.sliding_window_view(xn, (WIN, WIN))[::stride, ::stride]
    ny, nx = win.shape[:2]
    flat = win.reshape(ny * nx, WIN * WIN)  # copies
    out = np.empty((ny * nx, OUT * OUT), np.float32)
    for s in range(0, ny * nx, chunk):
        out[s:s + chunk] = forward(P, flat[s:s + chunk], act_fwd)
    out = out.reshape(ny, nx, OUT, OUT)
    wts = window_weights(agg)
    acc = np.zeros((H + ey, W + ex), np.float64)
    cnt = np.zeros((H + ey, W + ex), np.float64)
    for di in range(OUT):
        for dj in range(OUT):
            acc[di:di + stride * ny:stride, dj:dj + stride * nx:stride] += wts[di, dj] * out[:, :, di, dj]
            cnt[di:di + stride * ny:stride, dj:dj + stride * nx:stride] += wts[di, dj]
    res = (acc / cnt)[:H, :W]
    res = (res / 5 + 0.5) * 255
    return np.clip(res, 0, 255) if clip else res


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / mse)


def _gauss_filter(img, sigma=1.5, size=11):
    """'valid' separable 11x11 Gaussian filter (as in Wang et al. 2004 reference code)."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    t = np.lib.stride_tricks.sliding_window_view(img, size, axis=1) @ g
    t = np.lib.stride_tricks.sliding_window_view(t, size, axis=0) @ g
    return t


def ssim(a, b):
    """SSIM of Wang et al. 2004: Gaussian 11x11 window sigma 1.5, K1=0.01, K2=0.03, L=255, mean SSIM map (valid)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _gauss_filter(a), _gauss_filter(b)
    s11 = _gauss_filter(a * a) - mu1 ** 2
    s22 = _gauss_filter(b * b) - mu2 ** 2
    s12 = _gauss_filter(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + C1) * (2 * s12 + C2)) / ((mu1 ** 2 + mu2 ** 2 + C1) * (s11 + s22 + C2))
    return float(m.mean())


def evaluate(P, act, sigma, stride=STRIDE, images=None, with_ssim=False, scale_to=None, agg=0.0):
    """Mean PSNR (and SSIM) over set12. scale_to=sigma*: paper's sigma*/sigma scaling (noisy image multiplied by
    sigma*/sigma before denoising, output divided by it, then clipped); None: image fed unscaled."""
    act_fwd, _ = act_fns(act)
    s12 = load_set12()
    rows = []
    for i, (name, clean) in enumerate(s12):
        if images is not None and i not in images:
            continue
        noisy = make_noisy(clean, sigma, i)
        if scale_to is None:
            den = denoise_image(P, noisy, act_fwd, stride, agg=agg)
        else:
            f = scale_to / sigma
            den = np.clip(denoise_image(P, noisy * np.float32(f), act_fwd, stride, clip=False, agg=agg) / f, 0, 255)
        r = dict(image=name, psnr=psnr(den, clean), psnr_u8=psnr(np.round(den), clean),
                 psnr_noisy=psnr(noisy, clean))
        if with_ssim:
            r["ssim"] = ssim(den, clean)
            r["ssim_u8"] = ssim(np.round(den), clean)
        rows.append(r)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    return mean, rows


# ---------------------------------------------------------------- checkpointing
def save_npz_atomic(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def save_ckpt(path, P, M, V, state, rng):
    arrs = {}
    for k in P:
        arrs["P_" + k] = P[k]
        arrs["M_" + k] = M[k]
        arrs["V_" + k] = V[k]
    st = dict(state)
    st["rng"] = rng.bit_generator.state
    arrs["state_json"] = np.array(json.dumps(st))
    save_npz_atomic(path, **arrs)


def load_ckpt(path):
    z = np.load(path)
    P, M, V = {}, {}, {}
    for k in z.files:
        if k.startswith("P_"):
            P[k[2:]] = z[k]
        elif k.startswith("M_"):
            M[k[2:]] = z[k]
        elif k.startswith("V_"):
            V[k[2:]] = z[k]
    st = json.loads(str(z["state_json"]))
    return P, M, V, st


def export_model(P, act, sigma, path, card_extra, full_eval=True):
    """Writes the model npz and the JSON card next to it (same stem, .json)."""
    arrs = {k: P[k].astype(np.float32) for k in P}
    arrs["sigma"] = np.array(float(sigma), dtype=np.float64)
    arrs["mean_shift"] = np.array(1.0, dtype=np.float64)
    arrs["residual"] = np.array(1.0, dtype=np.float64)
    arrs["activation"] = np.array(1.0 if act == "tanhstar" else 0.0, dtype=np.float64)
    arrs["aggregation_sigma"] = np.array(AGG_SIGMA, dtype=np.float64)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    L = n_layers(P)
    arch = [int(P["W1"].shape[1])] + [int(P[f"W{i}"].shape[0]) for i in range(1, L + 1)]
    card = {
        "name": "ppdenoise default MLP denoiser",
        "file": os.path.basename(path),
        "architecture": "-".join(map(str, arch)),
        "layers": arch,
        "activation": act,
        "activation_definition": (
            "tanh*(x) = k*(n1|x|^2+c1|x|+d1) for |x|<=a; k*(n2|x|^2+c2|x|+d2) for a<|x|<=b; k otherwise; "
            "k=sign(x) with sign(0)=+1" if act == "tanhstar" else "tanh"),
        "tanhstar_constants": TS,
        "weights_layout": "W_i float32 shape (out, in); b_i float32 shape (out,); h_i = act(W_i @ h_{i-1} + b_i); last layer linear",
        "preprocessing": {
            "window": "39x39 noisy window, row-major flattened (1521 values)",
            "clip": "noisy pixels clipped to [0,255] (as an 8-bit image)",
            "normalisation": "x = (p/255 - 0.5) * 5",
            "mean_shift": "u = x - mean(x) over the 1521 inputs; u is fed to the first layer",
            "residual": "pred = x_centre + output, x_centre = 17x17 centre of x (rows/cols 11..27), output 289 values row-major",
            "postprocessing": "p = (pred/5 + 0.5) * 255, clip to [0,255]",
        },
        "whole_image": {
            "stride": STRIDE,
            "padding": f"np.pad(img, ((11, 11+ey), (11, 11+ex)), mode='{PAD_MODE}') with ey=(-(H-17))%3, ex=(-(W-17))%3 "
                       "('symmetric' = edge sample repeated, e.g. [c b a | a b c d | d c b])",
            "aggregation": (f"overlapping 17x17 predictions averaged with integer weights "
                            f"max(1, round(32 exp(-r^2/(2*{AGG_SIGMA}^2)))), r = distance from the window centre"),
            "aggregation_sigma": AGG_SIGMA,
        },
        "sigma_star": float(sigma),
        "sigma_scaling_at_other_noise_levels": "none: images at sigma 15/35 are fed unscaled to this sigma-25 model",
    }
    card.update(card_extra)
    if full_eval:
        res = {}
        for s in (15, 25, 35):
            t0 = time.time()
            mean, rows = evaluate(P, act, s, STRIDE, with_ssim=True, agg=AGG_SIGMA)
            res[str(s)] = dict(mean, per_image=rows, eval_seconds=round(time.time() - t0, 1))
            print(f"[export] sigma {s}: PSNR {mean['psnr']:.3f} (u8 {mean['psnr_u8']:.3f}) SSIM {mean['ssim']:.4f}", flush=True)
        scaled = {}
        for s in (15, 35):
            mean, _ = evaluate(P, act, s, STRIDE, with_ssim=True, scale_to=float(sigma), agg=AGG_SIGMA)
            scaled[str(s)] = mean
            print(f"[export] sigma {s} with sigma*/sigma scaling: PSNR {mean['psnr']:.3f} SSIM {mean['ssim']:.4f}", flush=True)
        card["set12"] = {
            "results_with_sigma_star_scaling_informational": scaled,
            "protocol": ("set12 (12 images), additive Gaussian noise with np.random.default_rng([1234, round(sigma*100), "
                         "image_index]) standard_normal float32 * sigma, noisy clipped to [0,255] (float, not rounded), "
                         "stride 3, padding as above. psnr/ssim on float output after clipping; *_u8 after rounding to uint8. "
                         "SSIM: own implementation of Wang et al. 2004 (Gaussian 11x11, sigma 1.5, K1=0.01, K2=0.03, valid "
                         "region mean)."),
            "results": res,
        }
    save_npz_atomic(path, **arrs)
    with open(os.path.splitext(path)[0] + ".json.tmp", "w") as f:
        json.dump(card, f, indent=2)
    os.replace(os.path.splitext(path)[0] + ".json.tmp", os.path.splitext(path)[0] + ".json")
    return card


# ---------------------------------------------------------------- main
def lr_at(args, seen):
    """Linear warmup, constant lr until --decay-start patches, then cosine decay to lr*lr_min_frac at
    --decay-patches, constant after."""
    if seen < args.warmup_patches:
        return args.lr * max(0.05, seen / args.warmup_patches)
    if seen < args.decay_start:
        return args.lr
    f = min(1.0, (seen - args.decay_start) / max(1, args.decay_patches - args.decay_start))
    lo = args.lr * args.lr_min_frac
    return lo + (args.lr - lo) * 0.5 * (1 + math.cos(math.pi * f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="default")
    ap.add_argument("--arch", default="512,512")
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--minutes", type=float, default=0.0, help="wall-clock minutes to train in this invocation")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--act", default="tanhstar", choices=["tanhstar", "tanh"])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min-frac", type=float, default=0.05)
    ap.add_argument("--warmup-patches", type=float, default=100_000)
    ap.add_argument("--decay-start", type=float, default=0)
    ap.add_argument("--decay-patches", type=float, default=20_000_000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--loss-weights", default="uniform", choices=["uniform", "aggregation"],
                    help="weight the loss of each output position: uniform, or by the Gaussian aggregation "
                         "window the outputs are combined with (for a final fine-tuning phase)")
    ap.add_argument("--loss-agg-sigma", type=float, default=4.0,
                    help="with --loss-weights aggregation: sigma of that window (the shipped model: 4.0)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--eval-stride", type=int, default=3, help="stride for the periodic set12 eval")
    ap.add_argument("--export", default=None, help="export best model of the run to this .npz (+ .json card) and exit")
    ap.add_argument("--export-each-best", default=None,
                    help="during training, write the best-so-far model here (card with sigma-25 numbers only)")
    ap.add_argument("--export-full", type=int, default=1,
                    help="1: --export-each-best also evaluates sigma 15/25/35 PSNR+SSIM for the card (~1 min)")
    ap.add_argument("--schedule-note", default=None, help="with --export: lr schedule text for the card")
    ap.add_argument("--export-average", nargs="+", default=None, metavar="CKPT",
                    help="with --export: export the mean of the weights of these checkpoint files (ckpt.npz "
                         "copies of this run) instead of best.npz")
    args = ap.parse_args()

    rundir = os.path.join(HERE, "runs", args.run)
    os.makedirs(rundir, exist_ok=True)
    ckpt_path = os.path.join(rundir, "ckpt.npz")
    best_path = os.path.join(rundir, "best.npz")
    curve_path = os.path.join(rundir, "curve.csv")

    if args.export and args.export_average:
        Ps, states = [], []
        for f in args.export_average:
            Pf, _, _, stf = load_ckpt(f)
            Ps.append(Pf)
            states.append(stf)
        P = {k: np.mean([Pf[k] for Pf in Ps], axis=0).astype(np.float32) for k in Ps[-1]}
        st = states[-1]
        meta = dict(act=args.act, sigma=st["sigma"], card=dict(
            training_data="../shared/data/train400 (400 images 180x180, BSD400 crops from cszn/DnCNN), "
                          "random 39x39 crops + dihedral augmentation, fresh Gaussian noise every step",
            training_sigma=st["sigma"], patches_seen=int(st["seen"]), seed=int(st["seed"]),
            training_minutes=round(st["train_seconds"] / 60, 1),
            activation_history=st.get("act_history", []),
            weights=("weights at patches seen " if len(states) == 1 else "mean of the weights at patches seen ")
            + ", ".join(str(int(s["seen"])) for s in states)))
    elif args.export:
        z = np.load(best_path)
        P = {k: z[k] for k in z.files if k[0] in "Wb"}
        meta = json.loads(str(z["meta_json"]))
    if args.export:
        if os.path.exists(curve_path):
            with open(curve_path) as f:
                meta["card"]["learning_curve_set12_sigma25_stride3"] = [
                    [int(r["patches_seen"]), round(float(r["train_seconds"]) / 60, 1), float(r["set12_psnr_sigma25"])]
                    for r in csv.DictReader(f)]
            meta["card"]["learning_curve_columns"] = ["patches_seen", "training_minutes", "set12_psnr_sigma25"]
        if args.schedule_note:
            meta["card"]["optimizer"] = args.schedule_note
        card = export_model(P, meta["act"], meta["sigma"], args.export, meta["card"], full_eval=True)
        print(json.dumps({k: v for k, v in card.items() if k != "set12"}, indent=1)[:2000])
        return

    if args.resume and os.path.exists(ckpt_path):
        P, M, V, st = load_ckpt(ckpt_path)
        rng = np.random.default_rng()
        rng.bit_generator.state = st.pop("rng")
        print(f"resumed from {ckpt_path}: {st['seen']} patches, step {st['step']}", flush=True)
        if st.get("act") != args.act:
            print(f"note: switching activation {st.get('act')} -> {args.act}", flush=True)
            st.setdefault("act_history", []).append([st["seen"], args.act])
            st["act"] = args.act
    else:
        rng = np.random.default_rng(args.seed)
        arch = [WIN * WIN] + [int(a) for a in args.arch.split(",") if a] + [OUT * OUT]
        P = init_params(arch, rng)
        M = {k: np.zeros_like(v) for k, v in P.items()}
        V = {k: np.zeros_like(v) for k, v in P.items()}
        st = dict(step=0, seen=0, train_seconds=0.0, best_psnr=-1.0, act=args.act, seed=args.seed,
                  arch=arch, sigma=args.sigma, act_history=[[0, args.act]])
        with open(curve_path, "w") as f:
            f.write("patches_seen,train_seconds,wall_clock_utc,act,lr,train_loss,set12_psnr_sigma25,eval_stride\n")

    imgs = load_train()
    _, act_both = act_fns(args.act)
    pix_w = None
    if args.loss_weights == "aggregation":
        w = window_weights(args.loss_agg_sigma).reshape(-1)
        pix_w = (w / w.mean()).astype(np.float32)
    b1, b2, eps = 0.9, 0.999, 1e-8
    t_start = time.time()
    t_last_ck = t_start
    t_seg = t_start
    seen_seg = 0
    loss_acc, loss_n = 0.0, 0
    print(f"training {st['arch']} act={args.act} batch={args.batch} lr={args.lr} for {args.minutes} min", flush=True)

    def checkpoint_and_eval():
        nonlocal loss_acc, loss_n
        now = time.time()
        st["train_seconds"] += now - checkpoint_and_eval.t_mark
        checkpoint_and_eval.t_mark = now
        save_ckpt(ckpt_path, P, M, V, st, rng)
        te = time.time()
        mean, _ = evaluate(P, args.act, 25.0, args.eval_stride)
        p = mean["psnr"]
        lr = lr_at(args, st["seen"])
        tl = loss_acc / max(1, loss_n)
        loss_acc, loss_n = 0.0, 0
        with open(curve_path, "a") as f:
            f.write(f"{st['seen']},{st['train_seconds']:.1f},{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())},"
                    f"{args.act},{lr:.3g},{tl:.5f},{p:.4f},{args.eval_stride}\n")
        print(f"[eval] seen {st['seen']} train {st['train_seconds']/60:.1f} min  set12 s25 stride{args.eval_stride} "
              f"PSNR {p:.3f} (u8 {mean['psnr_u8']:.3f})  loss {tl:.5f}  lr {lr:.2e}  eval {time.time()-te:.0f}s", flush=True)
        if p > st["best_psnr"] and args.act == "tanhstar" or (args.act != "tanhstar" and p > st["best_psnr"]):
            st["best_psnr"] = p
            meta = dict(act=args.act, sigma=st["sigma"], card=dict(
                training_data="../shared/data/train400 (400 images 180x180, BSD400 crops from cszn/DnCNN), "
                              "random 39x39 crops + dihedral augmentation, fresh Gaussian noise every step",
                training_sigma=st["sigma"], patches_seen=int(st["seen"]), seed=int(st["seed"]),
                training_minutes=round(st["train_seconds"] / 60, 1), optimizer=f"Adam lr {args.lr} cosine to "
                f"{args.lr*args.lr_min_frac} between {int(args.decay_start)} and {int(args.decay_patches)} patches seen, "
                f"batch {args.batch}",
                activation_history=st["act_history"],
                set12_sigma25_psnr_at_checkpoint=dict(psnr=p, psnr_u8=mean["psnr_u8"], stride=args.eval_stride)))
            save_npz_atomic(best_path, **P, meta_json=np.array(json.dumps(meta)))
            if args.export_each_best and args.act == "tanhstar":
                export_model(P, args.act, st["sigma"], args.export_each_best, meta["card"], full_eval=args.export_full)
                print(f"[export] best-so-far written to {args.export_each_best}", flush=True)
        save_ckpt(ckpt_path, P, M, V, st, rng)
        checkpoint_and_eval.t_mark = time.time()  # eval time not counted as training time

    checkpoint_and_eval.t_mark = t_start
    if st["step"] == 0:
        checkpoint_and_eval()
    while True:
        now = time.time()
        if args.minutes and now - t_start > args.minutes * 60:
            break
        lr = lr_at(args, st["seen"])
        x, y = sample_batch(imgs, args.batch, args.sigma, rng)
        loss, G = loss_and_grads(P, x, y, act_both, pix_w)
        st["step"] += 1
        t = st["step"]
        bc1 = 1 - b1 ** t
        bc2 = 1 - b2 ** t
        a = np.float32(lr * math.sqrt(bc2) / bc1)
        for k in P:
            g = G[k]
            M[k] *= b1
            M[k] += (1 - b1) * g
            V[k] *= b2
            V[k] += (1 - b2) * (g * g)
            P[k] -= a * M[k] / (np.sqrt(V[k]) + eps)
        st["seen"] += args.batch
        seen_seg += args.batch
        loss_acc += loss
        loss_n += 1
        if t % 200 == 0:
            el = time.time() - t_seg
            print(f"step {t} seen {st['seen']} loss {loss_acc/loss_n:.5f} lr {lr:.2e} {seen_seg/el:.0f} patches/s", flush=True)
            t_seg, seen_seg = time.time(), 0
        if time.time() - t_last_ck > args.ckpt_minutes * 60:
            checkpoint_and_eval()
            t_last_ck = time.time()
            t_seg, seen_seg = time.time(), 0
    checkpoint_and_eval()


if __name__ == "__main__":
    main()
