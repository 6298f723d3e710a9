#!/usr/bin/env python3
"""The FFDNet page (docs/results-ffdnet.md) from two `ppdenoise table` outputs, side by side
with DnCNN-S, the shipped MLP and BM3D on exactly the same noisy images.

    .venv-bm3d/bin/python scripts/ffdnet-compare.py out/table-ffdnet out/table-ffdnet-pg [target/release/ppdenoise]

Reads `table.json` (secure and float FFDNet runs, one model for every sigma) and `bm3d.json`
(scripts/bm3d-compare.py) of the Gaussian table; for every run's noisy.png runs, in the
clear with `ppdenoise denoise --arith float`: DnCNN-S with the model of that sigma
(out/dncnn/sN.npz, where one exists) and the shipped MLP (sigma*/sigma scaling on). For the
signal-dependent table (`table --noise poisson-gaussian:A,B`): FFDNet with the per-pixel
map (the secure runs) against FFDNet, DnCNN-S and the MLP given one global sigma,
sqrt(A * mean(noisy) + B), which is what a tool without per-pixel maps would be told.
Every PSNR is ppdenoise's own (`denoise --clean`, output rounded to 8 bits). Prints Markdown.
"""

import json
import os
import subprocess
import sys


def denoise(exe, model, noisy, clean, sigma, extra=()):
    args = [exe, "--json", "denoise", "--image", noisy, "--clean", clean, "--sigma", f"{sigma:g}"]
    if model:
        args += ["--model", model]
    out = subprocess.run(args + list(extra), check=True, capture_output=True, text=True).stdout
    return json.loads(out)["psnr"]


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def run_dir(table_dir, run):
    tag = ("%g" % run["sigma"]).replace(".", "p")
    return os.path.join(table_dir, "runs", run["image"], "sigma" + tag)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    gauss, pg_dir = sys.argv[1], sys.argv[2]
    exe = sys.argv[3] if len(sys.argv) > 3 else "target/release/ppdenoise"
    table = json.load(open(os.path.join(gauss, "table.json")))
    bm3d = {}
    bpath = os.path.join(gauss, "bm3d.json")
    if os.path.exists(bpath):
        for r in json.load(open(bpath))["runs"]:
            bm3d[(r["image"], r["sigma"])] = r["psnr_bm3d"]
    rows = []
    for run in table["runs"]:
        d = run_dir(gauss, run)
        noisy, clean = os.path.join(d, "noisy.png"), os.path.join(d, "clean.png")
        s = run["sigma"]
        dn = f"out/dncnn/s{s:g}.npz"
        rows.append({
            "image": run["image"], "sigma": s,
            "ffdnet_secure": run["psnr_secure"], "ffdnet_float": run["psnr_float"],
            "ffdnet_ssim": run["ssim_secure"], "exact": run["secure_equals_oracle"],
            "serve_seconds": run["serve_seconds"],
            "bytes": run["s0_bytes_sent"] + run["s1_bytes_sent"],
            "size": f"{run['height']}x{run['width']}",
            "dncnn": denoise(exe, dn, noisy, clean, s) if os.path.exists(dn) else None,
            "mlp": denoise(exe, None, noisy, clean, s),
            "bm3d": bm3d.get((run["image"], s)),
        })
        print(f"{run['image']} sigma {s:g}: done", file=sys.stderr)
    sigmas = sorted({r["sigma"] for r in rows})
    fmt = lambda v: "–" if v is None or v != v else f"{v:.2f}"  # noqa: E731
    print("## Gaussian noise: one FFDNet model for every σ\n")
    print("Mean PSNR (dB) over set12 (12 images, full size), 8-bit noisy images "
          "(`add-noise --seed 0`, rounded and clipped). FFDNet secure = the full two-server "
          "protocol (boolean engine), one model (`FFDNet_Clip_gray`) at every σ with a uniform "
          "noise map; the other methods in the clear on the same noisy images.\n")
    print("| σ | FFDNet secure | FFDNet float | secure − float | DnCNN-S (own σ model) | MLP (shipped) | BM3D | FFDNet − DnCNN-S | FFDNet − BM3D | secure = oracle |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in sigmas:
        rs = [r for r in rows if r["sigma"] == s]
        sec, fl = mean(r["ffdnet_secure"] for r in rs), mean(r["ffdnet_float"] for r in rs)
        dn = mean(r["dncnn"] for r in rs) if all(r["dncnn"] is not None for r in rs) else None
        bm = mean(r["bm3d"] for r in rs) if all(r["bm3d"] is not None for r in rs) else None
        ml = mean(r["mlp"] for r in rs)
        diff = lambda o: "–" if o is None else f"{sec - o:+.2f}"  # noqa: E731
        exact = sum(r["exact"] for r in rs)
        print(f"| {s:g} | {sec:.2f} | {fl:.2f} | {sec - fl:+.4f} | {fmt(dn)} | {ml:.2f} | {fmt(bm)} "
              f"| {diff(dn)} | {diff(bm)} | {exact}/{len(rs)} |")
    print("\nPer size, the secure FFDNet runs (servers' wall time as the table measured it, "
          "traffic both ways):\n")
    print("| size | runs | servers (s), mean | S0<->S1 (MB), each run |")
    print("|---|---:|---:|---:|")
    for size in sorted({r["size"] for r in rows}):
        rs = [r for r in rows if r["size"] == size]
        print(f"| {size} | {len(rs)} | {mean(r['serve_seconds'] for r in rs):.1f} | "
              f"{rs[0]['bytes'] / 1e6:.1f} |")

    pg_table = os.path.join(pg_dir, "table.json")
    if not os.path.exists(pg_table):
        return
    pt = json.load(open(pg_table))
    spec = pt.get("noise") or next(
        (json.load(open(os.path.join(run_dir(pg_dir, r), "run.json"))).get("noise")
         for r in pt["runs"]), None)
    a, b = (float(x) for x in spec.split(":")[1].split(","))
    prow = []
    for run in pt["runs"]:
        d = run_dir(pg_dir, run)
        noisy, clean = os.path.join(d, "noisy.png"), os.path.join(d, "clean.png")
        # The global sigma a tool without maps would be given: from the mean noisy pixel.
        m = mean_pixel(noisy)
        g = (a * m + b) ** 0.5
        prow.append({
            "image": run["image"], "secure": run["psnr_secure"], "float": run["psnr_float"],
            "exact": run["secure_equals_oracle"], "global": g,
            "ffdnet_uniform": denoise(exe, "out/ffdnet/clip.npz", noisy, clean, g),
            "dncnn": denoise(exe, "out/dncnn/s25.npz", noisy, clean, g)
            if os.path.exists("out/dncnn/s25.npz") else None,
            "mlp": denoise(exe, None, noisy, clean, g),
        })
        print(f"{run['image']} {spec}: done", file=sys.stderr)
    print(f"\n## Signal-dependent noise ({spec}: variance = {a:g} · pixel + {b:g})\n")
    print("FFDNet secure with the per-pixel map the gateway computes from each noisy image "
          "(shared with it, never in the clear), against the same and the other methods given "
          "one global σ = sqrt(A · mean(noisy) + B) (DnCNN-S: its σ = 25 model, scaled).\n")
    print("| | FFDNet secure, per-pixel map | FFDNet float, per-pixel map | secure − float | FFDNet, global σ | DnCNN-S, global σ | MLP, global σ | secure = oracle |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    sec, fl = mean(r["secure"] for r in prow), mean(r["float"] for r in prow)
    dn = mean(r["dncnn"] for r in prow) if all(r["dncnn"] is not None for r in prow) else None
    print(f"| set12 mean (global σ {mean(r['global'] for r in prow):.1f} on average) | {sec:.2f} | {fl:.2f} | "
          f"{sec - fl:+.4f} | {mean(r['ffdnet_uniform'] for r in prow):.2f} | {fmt(dn)} | "
          f"{mean(r['mlp'] for r in prow):.2f} | {sum(r['exact'] for r in prow)}/{len(prow)} |")


def mean_pixel(png):
    """Mean grey level of an image (Pillow, from the BM3D venv)."""
    from PIL import Image
    im = Image.open(png).convert("L")
    return sum(im.getdata()) / (im.width * im.height)


if __name__ == "__main__":
    main()
