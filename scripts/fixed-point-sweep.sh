#!/bin/bash
# The fixed point's cost in PSNR, measured in the clear: for every image of a folder, noisy at
# SIGMA (8-bit clipped, seed 7), the mean PSNR of `denoise --arith fixed` (what the secure
# path writes, bit for bit) minus that of `--arith float`, for each fixed point "s ws k" given.
#   scripts/fixed-point-sweep.sh MODEL FOLDER SIGMA "13 14 20" "13 16 20" ...
# (docs/results-colour.md, "Fixed point"). Run from the repository root after `make build`.
set -euo pipefail
model=$1 folder=$2 sigma=$3
shift 3
bin=target/release/ppdenoise
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psnr() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1]); print(d["psnr"], d["out_of_range"] if "out_of_range" in d else 0)'; }
declare -A sum oor
n=0
for f in "$folder"/*.png; do
  $bin add-noise --quiet --image "$f" --sigma "$sigma" --seed 7 --out "$work/noisy.png" >/dev/null
  read -r float _ < <($bin denoise --json --model "$model" --image "$work/noisy.png" \
    --sigma "$sigma" --arith float --clean "$f" --out "$work/out.png" | psnr)
  for fp in "$@"; do
    read -r s ws k <<<"$fp"
    read -r fixed o < <($bin denoise --json --model "$model" --image "$work/noisy.png" \
      --sigma "$sigma" --arith fixed --cnn-scale "$s" --cnn-weight-scale "$ws" \
      --cnn-act-bits "$k" --clean "$f" --out "$work/out.png" | psnr)
    sum[$fp]=$(python3 -c "print(${sum[$fp]:-0} + $fixed - $float)")
    oor[$fp]=$(( ${oor[$fp]:-0} + o ))
  done
  n=$((n + 1))
done
for fp in "$@"; do
  printf 's ws k = %s: fixed - float, mean over %d images at sigma %s: %+.4f dB; %d values out of range\n' \
    "$fp" "$n" "$sigma" "$(python3 -c "print(${sum[$fp]} / $n)")" "${oor[$fp]}"
done
