#!/usr/bin/env bash
# Plaintext quality of a model on a set of images at several noise levels, with the Rust tools
# only: for each image and sigma, `add-noise` (8-bit noisy PNG, seed = image number), then
# `denoise --arith float` (f64 with tanh*) and `--arith fixed` (the fixed-point oracle = what
# the secure protocol outputs), stride 3. Prints Markdown (means and per-image float PSNR).
#
#   scripts/quality-table.sh [IMAGES_DIR] [SIGMAS] [MODEL]
#   scripts/quality-table.sh ../shared/data/set12 "15 20 25 30 35" fixtures/default-model.npz
set -euo pipefail
DIR=${1:-../shared/data/set12}
SIGMAS=${2:-"15 20 25 30 35"}
MODEL=${3:-fixtures/default-model.npz}
BIN=${BIN:-target/release/ppdenoise}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
metric() { "$BIN" metrics --json "$1" "$2" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['psnr'], d['ssim'])"; }
echo "| sigma | noisy PSNR | float (tanh*) PSNR / SSIM | fixed-point oracle PSNR / SSIM |"
echo "|---|---|---|---|"
: > "$WORK/per_image"
for s in $SIGMAS; do
  : > "$WORK/rows"
  for f in "$DIR"/*.png; do
    n=$(basename "$f" .png)
    seed=$((10#${n//[!0-9]/}))
    "$BIN" add-noise --image "$f" --sigma "$s" --seed "$seed" --out "$WORK/noisy.png" > /dev/null
    "$BIN" denoise --model "$MODEL" --image "$WORK/noisy.png" --sigma "$s" --arith float --out "$WORK/float.png" > /dev/null
    "$BIN" denoise --model "$MODEL" --image "$WORK/noisy.png" --sigma "$s" --arith fixed --out "$WORK/fixed.png" > /dev/null
    echo "$n $(metric "$f" "$WORK/noisy.png") $(metric "$f" "$WORK/float.png") $(metric "$f" "$WORK/fixed.png")" >> "$WORK/rows"
    echo "$s $n $(metric "$f" "$WORK/float.png")" >> "$WORK/per_image"
  done
  python3 - "$s" "$WORK/rows" <<'PY'
import sys
s, path = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(path)]
m = lambda i: sum(float(r[i]) for r in rows) / len(rows)
print(f"| {s} | {m(1):.2f} | {m(3):.2f} / {m(4):.3f} | {m(5):.2f} / {m(6):.3f} |")
PY
done
python3 - "$WORK/per_image" <<'PY'
import sys, collections
t = collections.defaultdict(dict)
sig = []
for l in open(sys.argv[1]):
    s, n, p, _ = l.split()
    t[n][s] = float(p)
    if s not in sig:
        sig.append(s)
print()
print("| image | " + " | ".join(f"σ{s}" for s in sig) + " |")
print("|---|" + "---|" * len(sig))
for n in sorted(t):
    print(f"| {n} | " + " | ".join(f"{t[n][s]:.2f}" for s in sig) + " |")
PY
