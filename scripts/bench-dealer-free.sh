#!/usr/bin/env bash
# One CNN graph job dealt two ways and run on the gc engine, through the binary: by the dealer
# (`gen-triplets`) and by the two servers between themselves (`gen-triplets --party 0|1`, no
# dealer), each then served by both servers and reconstructed; times, files and bytes, and
# the two results compared (docs/benchmarks.md, "Whole jobs dealt by the two servers").
#
#   scripts/bench-dealer-free.sh MODEL SIDE WORKDIR [LINK]
#
# MODEL: an ONNX graph or a CNN .npz (a chain CNN runs as a graph); SIDE: the phantom's side;
# LINK: e.g. 1gbit,5ms to put `ppdenoise relay` between the servers, for the dealing and the
# job (default: localhost); SERVE=0 in the environment leaves out the two jobs' online
# phases. Every port is one the system picks.
set -euo pipefail
B=${PPDENOISE:-$(dirname "$0")/../target/release/ppdenoise}
B=$(cd "$(dirname "$B")" && pwd)/$(basename "$B")
MODEL=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SIDE=$2
W=$3
LINK=${4:-}
rm -rf "$W"
mkdir -p "$W"
cd "$W"
for n in s0 s1; do "$B" keygen --name $n --out-dir keys >/dev/null; done
"$B" share-model --model "$MODEL" --out model >/dev/null
"$B" add-noise --image "builtin:phantom:$SIDE" --sigma 25 --seed 3 --out noisy.png >/dev/null
"$B" share-image --image noisy.png --sigma 25 --model model.pub --out image >/dev/null

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# Runs `$1 0 ARGS` (S0, listening on a port the system picks) and `$1 1 ARGS` (S1, connecting
# to it, or to a relay in front of it), each writing its JSON to $2-<party>.json.
pair() {
    local run=$1 tag=$2
    rm -f port-$tag
    $run 0 --addr 127.0.0.1:0 --port-file port-$tag >"$tag-0.json" &
    local s0=$!
    while [ ! -s port-$tag ]; do
        kill -0 $s0 2>/dev/null || { wait $s0; return 1; }
        sleep 0.05
    done
    local port
    port=$(cat port-$tag)
    if [ -n "$LINK" ]; then
        "$B" relay --listen 127.0.0.1:0 --to "127.0.0.1:$port" --link "$LINK" \
            --max-connections 2 >relay-$tag.log &
        while ! grep -q "listening on" relay-$tag.log 2>/dev/null; do sleep 0.05; done
        port=$(grep -o "listening on 127.0.0.1:[0-9]*" relay-$tag.log | grep -o "[0-9]*$")
    fi
    $run 1 --addr "127.0.0.1:$port" >"$tag-1.json"
    wait $s0
}

deal() {
    local p=$1
    shift
    "$B" --json gen-triplets --party "$p" --engine gc --model model.pub --image image.pub \
        --out tfree --key keys/s$p.key --cert keys/s$p.crt --peer-cert keys/s$((1 - p)).crt \
        --timeout 1800 "$@"
}

serve_with() {
    local t=$1 p=$2
    shift 2
    "$B" --json serve --quiet --insecure-unsigned --party "$p" --model model.p$p \
        --image image.p$p --triplets $t.p$p --key keys/s$p.key --cert keys/s$p.crt \
        --peer-cert keys/s$((1 - p)).crt --timeout 1800 --state-dir state --out out-$t.p$p "$@"
}
serve_dealer() { serve_with tdealer "$@"; }
serve_free() { serve_with tfree "$@"; }

echo "model $(basename "$MODEL"), ${SIDE}x${SIDE}, ${LINK:-localhost}"
t=$(now)
"$B" --json gen-triplets --engine gc --model model.pub --image image.pub --out tdealer >dealer.json
echo "dealer: gen-triplets $(since "$t") s, files $(python3 -c "import json; print(json.load(open('dealer.json'))['dealer_bytes'])") B"
t=$(now)
pair deal free
echo "no dealer: gen-triplets --party 0 and 1 $(since "$t") s"
python3 - <<'PY'
import json
for p in (0, 1):
    j = json.load(open(f"free-{p}.json"))
    print(f"  S{p}: {j['seconds']:.1f} s, file {j['bytes']} B, sent {j['sent']} B, peak RSS {j['peak_rss_bytes']} B")
PY
[ "${SERVE:-1}" = 0 ] && exit 0
for t in tdealer tfree; do
    s=$(now)
    pair serve_${t#t} serve-$t
    echo "serve ($t): $(since "$s") s"
    "$B" reconstruct --insecure-unsigned --share0 out-$t.p0 --share1 out-$t.p1 --out $t.png >/dev/null
done
cmp tdealer.png tfree.png && echo "the two results are the same image"
