#!/usr/bin/env bash
# make slurm-test: the secure pipeline through a real (single-node) Slurm cluster.
#
# Brings up scripts/slurm-cluster.sh, then, with slurm/serve.sbatch submitted once per party:
#   1. the one-piece job (a 1-task array per party), result == the plaintext fixed-point oracle;
#   2. with SLURM_TEST_TILES=K (K > 0, 4 by default): the MLP job as 2 tiles, and a CNN job
#      (fixtures/tiny-cnn.npz) in one piece and as K tiles, one array task per tile;
#   3. with SLURM_TEST_STUDY=N (N > 0): a study of N slices (share-study, gen-triplets
#      --study, serve --study in the array tasks), one array task per slice; S0's task of
#      slice 1 is cancelled mid-run, study-status must name that slice only, the dealer deal
#      it again, and the whole array resubmitted skip the finished slices; then docs/scale-out.md's
#      study example run as written (both organisations' commands, from the document itself)
#      on the 2-slot partition `pairs`, fewer slots than tasks: first with S0's signing key
#      left out (S0's tasks fail; S1's must stop on their own, saying why), then whole;
# and in the last of 1./2. one S0 task is cancelled mid-run: its burned triplets must be
# refused, and the re-run with fresh ones (gen-triplets again) must complete the job. Every
# result is compared pixel by pixel with the oracle, the tiled one also with the one-piece
# result (16-bit). Before all that, a second cluster beside the first must come up (free
# ports), and one given a busy port must fail naming it. Shuts the clusters down whatever
# happens; exits non-zero on any failure, saying which command failed.
#
# Settings (environment): SLURM_TEST_IMAGE (builtin:phantom:96), SLURM_TEST_TILES (4; 0 skips
# the tiles), SLURM_TEST_TILE_IMAGE (builtin:phantom:192), SLURM_TEST_KILL_TILE (1), SLURM_TEST_STUDY (3), SLURM_TEST_KEEP=1
# leaves the cluster up, SLURM_TEST_DIR (out/slurm-test).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release/ppdenoise}
W=${SLURM_TEST_DIR:-$ROOT/out/slurm-test}
IMAGE=${SLURM_TEST_IMAGE:-builtin:phantom:96}
SIGMA=25
TILES=${SLURM_TEST_TILES:-4}
TILE_IMAGE=${SLURM_TEST_TILE_IMAGE:-builtin:phantom:192}
# ReLU elements per circuit run of the CNN tiles: small, so the kill lands mid-run.
CNN_BATCH=(--batch "${SLURM_TEST_CNN_BATCH:-2048}")
KILL_TILE=${SLURM_TEST_KILL_TILE:-1}
STUDY=${SLURM_TEST_STUDY:-3}
STUDY_IMAGE=${SLURM_TEST_STUDY_IMAGE:-builtin:phantom:64}
# The servers' ports: a free range (PORT_BASE-2 .. PORT_BASE+15), unless given.
free_base() {
    python3 -c 'import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000)
    socks = []
    try:
        for p in range(base - 2, base + 16):
            s = socket.socket(); s.bind(("", p)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    print(base); break'
}
PORT_BASE=${SLURM_TEST_PORT_BASE:-$(free_base)}
WAIT_SECS=${SLURM_TEST_WAIT:-900}
# Small batches: more rounds, so a task is seen running (a progress line per batch) well before
# it ends, and the kill lands mid-run. The result does not depend on the batch size.
BATCH=(--batch "${SLURM_TEST_BATCH:-64}")
T0=$SECONDS

say() { printf '[slurm-test %4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
fail() {
    say "FAIL: $*"
    exit 1
}

[[ -x $BIN ]] || fail "$BIN is missing: cargo build --release first"
[[ $TILES -eq 0 || $KILL_TILE -lt $TILES ]] || fail "SLURM_TEST_KILL_TILE=$KILL_TILE is not a tile of $TILES"

# Ends the address forwarders and their relays (their jobs are over). Defined before the exit
# trap, which calls it whenever the test stops.
stop_forwarders() {
    local f
    for f in "$W/forwarders" "$W/relays"; do
        [[ -e $f ]] || continue
        xargs -r kill 2>/dev/null <"$f" || true
        rm -f "$f"
    done
}

# The command that failed, for the last line (set -e stops at it).
FAILED_AT=""
trap 'FAILED_AT="line $LINENO: $BASH_COMMAND"' ERR

cleanup() {
    local rc=$?
    trap - ERR
    stop_forwarders || true
    [[ -n ${SECOND:-} ]] && SLURM_SCRATCH=$SECOND scripts/slurm-cluster.sh down >/dev/null 2>&1 || true
    if [[ ${SLURM_TEST_KEEP:-} == 1 ]]; then
        say "cluster left up (SLURM_TEST_KEEP=1): scripts/slurm-cluster.sh down stops it"
    else
        scripts/slurm-cluster.sh down || rc=1
    fi
    if [[ $rc -eq 0 ]]; then
        say "PASS (${SECONDS}s)"
    else
        say "FAILED (exit $rc${FAILED_AT:+, at $FAILED_AT}); logs in $W/logs"
    fi
    exit "$rc"
}
trap cleanup EXIT

scripts/slurm-cluster.sh up
eval "$(scripts/slurm-cluster.sh env)"

# A second cluster beside this one (another checkout, a trial): it takes free ports of its own
# and comes up; one told to use a port this cluster holds fails, naming the port.
SECOND=$(mktemp -d "${TMPDIR:-/tmp}/ppdenoise-slurm-second.XXXXXX")
chmod 0755 "$SECOND" # munged runs as its own user: it must reach its folder in there
SLURM_SCRATCH=$SECOND scripts/slurm-cluster.sh up 2>"$SECOND.log" || fail "a second cluster did not come up: $(cat "$SECOND.log")"
SLURM_SCRATCH=$SECOND scripts/slurm-cluster.sh down 2>/dev/null
rm -rf "$SECOND"
mkdir -m 0755 "$SECOND"
BUSY=$(sed -n 's/^SlurmctldPort=//p' "$SLURM_CONF")
if SLURM_SCRATCH=$SECOND SLURM_CTLD_PORT=$BUSY scripts/slurm-cluster.sh up 2>"$SECOND.log"; then
    fail "a cluster on the busy port $BUSY came up"
fi
grep -q "port $BUSY (SlurmctldPort) is in use" "$SECOND.log" || fail "the busy port was not named: $(cat "$SECOND.log")"
SLURM_SCRATCH=$SECOND scripts/slurm-cluster.sh down >/dev/null 2>&1 || true
rm -rf "$SECOND" "$SECOND.log"
SECOND=""
say "a second cluster came up beside the first; one on the first's port $BUSY was refused naming it"

# --- the parties' keys and the one-off inputs, as the README's pipeline by hand --------------
rm -rf "$W"
mkdir -p "$W"/{keys,logs,rdv}
K=$W/keys
for n in s0 s1 rx; do "$BIN" keygen --name "$n" --out-dir "$K" >/dev/null; done
TO=(--to-s0 "$K/s0.age-recipient" --to-s1 "$K/s1.age-recipient")
# The makers' signing keys; the servers accept only files they signed (the trust file). The
# servers' own: the receiver accepts only output shares they signed (the same trust file).
for r in dealer owner gateway s0 s1; do
    "$BIN" --json keygen --signing --name "$r" --out-dir "$K" \
        | python3 -c "import json,sys; print('$r', json.load(sys.stdin)['public_key'])" >>"$K/trust"
done
OWNER=("${TO[@]}" --sign-key "$K/owner.sign-key")
GATEWAY=("${TO[@]}" --sign-key "$K/gateway.sign-key")
DEALER=("${TO[@]}" --sign-key "$K/dealer.sign-key")
say "sharing the model and the noisy $IMAGE (sigma $SIGMA)"
"$BIN" share-model --model fixtures/default-model.npz --out "$W/model" "${OWNER[@]}" >/dev/null
"$BIN" add-noise --image "$IMAGE" --sigma $SIGMA --seed 1 --out "$W/noisy.png" >/dev/null
# The job id share-image prints: the gateway tells the receiver, whose reconstruct expects it.
job_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])'; }
JOB=$("$BIN" --json share-image --image "$W/noisy.png" --sigma $SIGMA --out "$W/image" "${GATEWAY[@]}" | job_id)

# Once per model: the dealer's weight mask, opened by both servers (two local processes).
say "model set-up: gen-model-mask, open-weights"
"$BIN" gen-model-mask --model "$W/model.pub" --out "$W/mask" "${DEALER[@]}" >/dev/null
link() { echo --key "$K/s$1.key" --cert "$K/s$1.crt" --peer-cert "$K/s$((1 - $1)).crt"; }
pids=()
for p in 0 1; do
    # shellcheck disable=SC2046 # link's words are paths without spaces (ours)
    "$BIN" open-weights --party $p --model "$W/model.p$p" --mask "$W/mask.p$p" \
        --identity "$K/s$p.age-identity" $(link $p) --trust "$K/trust" --addr "127.0.0.1:$((PORT_BASE - 1))" \
        --state-dir "$W/state-s$p" --out "$W/weights.p$p" >"$W/logs/open-weights-s$p.log" 2>&1 &
    pids+=($!)
done
wait "${pids[0]}" || fail "open-weights S0 (see $W/logs/open-weights-s0.log)"
wait "${pids[1]}" || fail "open-weights S1 (see $W/logs/open-weights-s1.log)"

say "the plaintext fixed-point oracle"
"$BIN" denoise --arith fixed --image "$W/noisy.png" --sigma $SIGMA --out "$W/oracle.png" >/dev/null

# --- Slurm --------------------------------------------------------------------------------
# submit NAME ARRAY RUNKEY IMAGE TRIPLETS OUT: both parties' arrays (each organisation's own
# sbatch), every path a template of slurm/serve.sbatch ("{i}" tile/slice, "{p}" party); the
# model share and opened weights are MODEL_TPL and WEIGHTS_TPL (empty: the job opens them);
# with STUDY_TPL (a study folder) the tasks run its slices and the three paths are unused.
MODEL_TPL="$W/model.p{p}"
WEIGHTS_TPL="$W/weights.p{p}"
# With SLOW_TASK=T, S1 reads its addresses from a folder of its own, filled by forward_addrs
# (task T's link through a slow relay). Prints "JOBID_S0 JOBID_S1".
submit() {
    local name=$1 array=$2 run=$3 image=$4 triplets=$5 out=$6 p ids=() rdv
    if [[ -n ${SLOW_TASK:-} ]]; then
        forward_addrs "$W/rdv/$name" "$W/rdv/$name-s1" "$SLOW_TASK" </dev/null >/dev/null 2>"$W/logs/forward-$name.log" &
        echo $! >>"$W/forwarders"
    fi
    for p in 0 1; do
        rdv=$W/rdv/$name
        [[ -n ${SLOW_TASK:-} && $p == 1 ]] && rdv=$W/rdv/$name-s1
        ids+=("$(env PPD_PARTY=$p PPD_BIN="$BIN" PPD_MODEL="$MODEL_TPL" PPD_IMAGE="$image" \
            PPD_TRIPLETS="$triplets" PPD_OUT="$out" PPD_WEIGHTS="$WEIGHTS_TPL" PPD_STUDY="${STUDY_TPL:-}" \
            PPD_KEY="$K/s$p.key" PPD_CERT="$K/s$p.crt" PPD_PEER_CERT="$K/s$((1 - p)).crt" PPD_TRUST="$K/trust" \
            PPD_IDENTITY="$K/s$p.age-identity" PPD_OUT_TO="$K/rx.age-recipient" PPD_SIGN_KEY="$K/s$p.sign-key" \
            PPD_STATE_DIR="$W/state-s$p" PPD_RENDEZVOUS="$rdv" PPD_RUN="$run" \
            PPD_PORT_BASE="$PORT_BASE" PPD_TIMEOUT=300 PPDENOISE_PROGRESS_SECS=0 \
            sbatch --parsable --array="$array" --job-name="ppd-$name-s$p" \
            --output="$W/logs/$name-s$p-%a-%A.log" slurm/serve.sbatch)")
    done
    [[ ${ids[0]} =~ ^[0-9]+$ && ${ids[1]} =~ ^[0-9]+$ ]] || fail "sbatch failed for $name"
    echo "${ids[*]}"
}

# Passes S0's published addresses (FROM) on to S1's folder (TO), as a NAT between two sites
# would, until killed. Task T's address is replaced by a `ppdenoise relay` to it that delays
# each direction by 100 ms: its protocol then lasts seconds however fast the machine is, and
# the test's kill lands mid-run (on a fast machine a tile ran in less than a poll's 0.2 s).
forward_addrs() { # FROM TO T
    local from=$1 to=$2 t=$3 f name line rlog listen
    local -A passed=()
    mkdir -p "$to"
    while :; do
        for f in "$from"/tile-*.addr; do
            name=${f##*/}
            line=$(cat "$f" 2>/dev/null) || continue
            [[ -n $line && ${passed[$name]:-} != "$line" ]] || continue
            passed[$name]=$line
            if [[ $name == "tile-$t.addr" ]]; then
                rlog=$W/logs/relay-$t-$RANDOM.log
                "$BIN" --json relay --listen 127.0.0.1:0 --to "${line%% *}" --link 10gbit,100ms \
                    --connect-timeout 300 >"$rlog" 2>&1 &
                echo $! >>"$W/relays"
                until listen=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listen"])' \
                    "$rlog" 2>/dev/null); do sleep 0.1; done
                echo "tile $t: S1 goes through the relay on $listen to ${line%% *}" >&2
                line="$listen ${line#* }"
            fi
            echo "$line" >"$to/$name.tmp" && mv "$to/$name.tmp" "$to/$name"
        done
        sleep 0.2
    done
}

# submit, with both job ids in J0 and J1 (a failed sbatch stops the test here, not later).
submit_pair() {
    local ids
    ids=$(submit "$@") || exit 1
    read -r J0 J1 <<<"$ids"
    say "$1: S0 job $J0, S1 job $J1 (array $2)"
}

# Waits until none of the given jobs is pending or running.
wait_jobs() {
    local deadline=$((SECONDS + WAIT_SECS)) ids
    ids=$(tr ' ' ',' <<<"$*")
    while [[ -n $(squeue -h -j "$ids" 2>/dev/null) ]]; do
        ((SECONDS < deadline)) || fail "jobs $* still running after ${WAIT_SECS}s"
        sleep 2
    done
}

# State of array task I of job J (COMPLETED, FAILED, CANCELLED, ...).
task_state() {
    scontrol -o show job "$1" 2>/dev/null \
        | awk -v t="$2" '{s=""; a=""; for (i=1;i<=NF;i++) { if ($i ~ /^ArrayTaskId=/) a=substr($i,13); if ($i ~ /^JobState=/) s=substr($i,10) } if (a==t) print s}'
}

expect_completed() { # JOB TASKS...
    local j=$1 t s
    shift
    for t in "$@"; do
        s=$(task_state "$j" "$t")
        [[ $s == COMPLETED ]] || fail "job ${j}_$t ended $s (log: $(ls "$W"/logs/*-"$t"-"$j".log 2>/dev/null))"
    done
}

# Cancels S0's task T of job J once its protocol is running (its first progress line comes
# after the link is up), and checks that the tile then has no output share.
kill_mid_run() { # J0 J1 T LOGPREFIX OUT0 OUT1
    local j0=$1 j1=$2 t=$3 log0="$4-s0-$3-$1.log" deadline=$((SECONDS + 300))
    until grep -qs '^serve S0' "$log0"; do
        [[ -z $(squeue -h -j "${j0}_$t" 2>/dev/null) ]] && fail "${j0}_$t ended before it could be killed mid-run (make the image larger)"
        ((SECONDS < deadline)) || fail "${j0}_$t never started its protocol"
        sleep 0.2
    done
    say "cancelling S0's task ${j0}_$t mid-run: $(grep '^serve S0' "$log0" | tail -1)"
    scancel "${j0}_$t"
    # The surviving S1 must give up by itself once its peer is gone.
    deadline=$((SECONDS + 120))
    while [[ -n $(squeue -h -j "${j1}_$t" 2>/dev/null) ]]; do
        ((SECONDS < deadline)) || fail "S1's task ${j1}_$t still runs 120 s after its peer died"
        sleep 1
    done
    wait_jobs "$j0" "$j1"
    local s0 s1
    s0=$(task_state "$j0" "$t")
    s1=$(task_state "$j1" "$t")
    say "killed pair of task $t: S0 $s0, S1 $s1"
    [[ $s0 == CANCELLED* && $s1 == FAILED ]] || fail "expected S0 CANCELLED and S1 FAILED, got $s0 and $s1"
    [[ ! -e $5 && ! -e $6 ]] || fail "a killed task left an output share ($5 / $6)"
    stop_forwarders
}

# The burned triplets must be refused before anything reaches the network.
expect_burned() { # TRIPLETS_P0 IMAGE_P0
    local log=$W/logs/burned-check.log
    local weights=()
    [[ -n $WEIGHTS_TPL ]] && weights=(--weights "${WEIGHTS_TPL//\{p\}/0}")
    # shellcheck disable=SC2046 # link's words are paths without spaces (ours)
    if "$BIN" serve --party 0 --model "${MODEL_TPL//\{p\}/0}" --image "$2" --triplets "$1" \
        "${weights[@]}" --identity "$K/s0.age-identity" $(link 0) --trust "$K/trust" \
        --addr "127.0.0.1:$((PORT_BASE - 2))" --timeout 5 --state-dir "$W/state-s0" \
        --out-to "$K/rx.age-recipient" --sign-key "$K/s0.sign-key" --out "$W/burned.p0" --quiet >"$log" 2>&1; then
        fail "serve accepted the burned triplets $1"
    fi
    grep -q "already consumed" "$log" || fail "burned triplets refused for another reason: $(cat "$log")"
    say "the burned triplets are refused: $(grep -o 'already consumed[^;]*' "$log" | head -1)"
}

reconstruct() { # OUT.png BITS JOB_ID SHARE0S... -- SHARE1S...
    local out=$1 bits=$2 job=$3 s0=() s1=()
    shift 3
    while [[ $1 != -- ]]; do s0+=("$1"); shift; done
    shift
    s1=("$@")
    "$BIN" reconstruct --share0 "${s0[@]}" --share1 "${s1[@]}" --identity "$K/rx.age-identity" \
        --trust "$K/trust" --job-id "$job" --bit-depth "$bits" --out "$out" >/dev/null
}

same() { python3 scripts/png-equal.py "$1" "$2" >&2 || fail "$3"; }

# --- 1. the one-piece job ------------------------------------------------------------------
gen_onepiece() {
    "$BIN" gen-triplets --model "$W/model.pub" --image "$W/image.pub" --model-mask "$W/mask.dealer" "${BATCH[@]}" \
        --out "$W/one/triplets" "${DEALER[@]}" >/dev/null
}
mkdir -p "$W/one"
gen_onepiece
say "one-piece job: submitting S0's and S1's 1-task arrays"
# The kill-and-re-run check on the one-piece job itself when there are no tiles.
[[ $TILES -eq 0 ]] && SLOW_TASK=0
submit_pair one 0 one-1 "$W/image.p{p}" "$W/one/triplets.p{p}" "$W/one/out.p{p}"
SLOW_TASK=""
if [[ $TILES -eq 0 ]]; then
    kill_mid_run "$J0" "$J1" 0 "$W/logs/one" "$W/one/out.p0" "$W/one/out.p1"
    expect_burned "$W/one/triplets.p0" "$W/image.p0"
    gen_onepiece
    say "re-running the job with fresh triplets"
    submit_pair one 0 one-2 "$W/image.p{p}" "$W/one/triplets.p{p}" "$W/one/out.p{p}"
fi
wait_jobs "$J0" "$J1"
expect_completed "$J0" 0
expect_completed "$J1" 0
reconstruct "$W/one.png" 8 "$JOB" "$W/one/out.p0" -- "$W/one/out.p1"
reconstruct "$W/one16.png" 16 "$JOB" "$W/one/out.p0" -- "$W/one/out.p1"
same "$W/one.png" "$W/oracle.png" "the one-piece Slurm result differs from the oracle"
say "one-piece job through Slurm == the fixed-point oracle"

# --- 1b. the same MLP job as 2 tiles (runs of the patch grid), weights opened once ----------
if [[ $TILES -gt 0 ]]; then
    mkdir -p "$W/mlp-tiles"
    "$BIN" gen-triplets --model "$W/model.pub" --image "$W/image.pub" --model-mask "$W/mask.dealer" "${BATCH[@]}" \
        --tiles 2 --out "$W/mlp-tiles/triplets" "${DEALER[@]}" >/dev/null
    say "MLP as 2 tiles: submitting S0's and S1's 2-task arrays"
    submit_pair mlp-tiles 0-1 mlp-tiles-1 "$W/image.p{p}" \
        "$W/mlp-tiles/triplets.t{i}.p{p}" "$W/mlp-tiles/out.t{i}.p{p}"
    wait_jobs "$J0" "$J1"
    expect_completed "$J0" 0 1
    expect_completed "$J1" 0 1
    reconstruct "$W/mlp-tiles16.png" 16 "$JOB" "$W/mlp-tiles/out.t0.p0" "$W/mlp-tiles/out.t1.p0" -- \
        "$W/mlp-tiles/out.t0.p1" "$W/mlp-tiles/out.t1.p1"
    same "$W/mlp-tiles16.png" "$W/one16.png" "the 2-tile MLP result differs from the one-piece result"
    say "MLP as 2 tiles through Slurm == the one-piece job"
fi

# --- 2. K tiles of a CNN job (gen-triplets --tiles K [--tile I], out.t<I>.p<P>) ------------
# Tiles are bands of rows of a CNN job: fixtures/tiny-cnn.npz (a small seeded random CNN), its
# one-piece job through Slurm first, then the same job as K tiles.
if [[ $TILES -gt 0 ]]; then
    C=$W/cnn
    mkdir -p "$C/one" "$C/tiles"
    say "CNN: sharing fixtures/tiny-cnn.npz and the noisy $TILE_IMAGE for it"
    "$BIN" share-model --model fixtures/tiny-cnn.npz --out "$C/model" "${OWNER[@]}" >/dev/null
    "$BIN" add-noise --image "$TILE_IMAGE" --sigma $SIGMA --seed 2 --out "$C/noisy.png" >/dev/null
    CNN_JOB=$("$BIN" --json share-image --image "$C/noisy.png" --model "$C/model.pub" --trust "$K/trust" --sigma $SIGMA \
        --out "$C/image" "${GATEWAY[@]}" | job_id)
    "$BIN" denoise --arith fixed --model fixtures/tiny-cnn.npz --image "$C/noisy.png" --sigma $SIGMA \
        --out "$C/oracle.png" >/dev/null
    MODEL_TPL="$C/model.p{p}"
    WEIGHTS_TPL=""
    cnn_triplets() { # OUT [--tiles K [--tile I]]
        local out=$1
        shift
        "$BIN" gen-triplets --model "$C/model.pub" --image "$C/image.pub" "${CNN_BATCH[@]}" \
            --out "$out" "$@" "${DEALER[@]}" >/dev/null
    }
    cnn_triplets "$C/one/triplets"
    say "CNN one-piece job: submitting S0's and S1's 1-task arrays"
    submit_pair cnn-one 0 cnn-one-1 "$C/image.p{p}" "$C/one/triplets.p{p}" "$C/one/out.p{p}"
    wait_jobs "$J0" "$J1"
    expect_completed "$J0" 0
    expect_completed "$J1" 0
    reconstruct "$C/one16.png" 16 "$CNN_JOB" "$C/one/out.p0" -- "$C/one/out.p1"

    cnn_triplets "$C/tiles/triplets" --tiles "$TILES"
    say "$TILES-tile CNN job: submitting S0's and S1's $TILES-task arrays"
    SLOW_TASK=$KILL_TILE submit_pair tiles "0-$((TILES - 1))" tiles-1 "$C/image.p{p}" \
        "$C/tiles/triplets.t{i}.p{p}" "$C/tiles/out.t{i}.p{p}"
    kill_mid_run "$J0" "$J1" "$KILL_TILE" "$W/logs/tiles" \
        "$C/tiles/out.t$KILL_TILE.p0" "$C/tiles/out.t$KILL_TILE.p1"
    others=()
    for ((t = 0; t < TILES; t++)); do [[ $t -eq $KILL_TILE ]] || others+=("$t"); done
    expect_completed "$J0" "${others[@]}"
    expect_completed "$J1" "${others[@]}"
    expect_burned "$C/tiles/triplets.t$KILL_TILE.p0" "$C/image.p0"
    say "re-running tile $KILL_TILE with fresh triplets"
    cnn_triplets "$C/tiles/triplets" --tiles "$TILES" --tile "$KILL_TILE"
    submit_pair tiles "$KILL_TILE" tiles-2 "$C/image.p{p}" \
        "$C/tiles/triplets.t{i}.p{p}" "$C/tiles/out.t{i}.p{p}"
    wait_jobs "$J0" "$J1"
    expect_completed "$J0" "$KILL_TILE"
    expect_completed "$J1" "$KILL_TILE"
    s0=() s1=()
    for ((t = 0; t < TILES; t++)); do
        s0+=("$C/tiles/out.t$t.p0")
        s1+=("$C/tiles/out.t$t.p1")
    done
    reconstruct "$C/tiles.png" 8 "$CNN_JOB" "${s0[@]}" -- "${s1[@]}"
    reconstruct "$C/tiles16.png" 16 "$CNN_JOB" "${s0[@]}" -- "${s1[@]}"
    same "$C/tiles16.png" "$C/one16.png" "the $TILES-tile result differs from the one-piece result"
    same "$C/tiles.png" "$C/oracle.png" "the $TILES-tile result differs from the oracle"
    say "$TILES-tile CNN job through Slurm == the one-piece job == the oracle"
    MODEL_TPL="$W/model.p{p}"
    WEIGHTS_TPL="$W/weights.p{p}"
fi

# --- 3. a study (share-study): one job per slice, one array task per slice, resumed ----------
if [[ $STUDY -gt 0 ]]; then
    S=$W/study
    KILL_SLICE=$((STUDY > 1 ? 1 : 0))
    mkdir -p "$W/study-in" "$W/study-oracle"
    say "study of $STUDY slices ($STUDY_IMAGE, each its own noise): share-study, gen-triplets --study"
    for ((i = 0; i < STUDY; i++)); do
        "$BIN" add-noise --image "$STUDY_IMAGE" --sigma $SIGMA --seed $((100 + i)) \
            --out "$W/study-in/slice$i.png" >/dev/null
        "$BIN" denoise --arith fixed --image "$W/study-in/slice$i.png" --sigma $SIGMA \
            --out "$W/study-oracle/slice$i.png" >/dev/null
    done
    STUDY_ID=$("$BIN" --json share-study --in "$W/study-in" --out "$S" --sigma $SIGMA "${GATEWAY[@]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["study_id"])')
    deal_study() { "$BIN" --json gen-triplets --study "$S" --model "$W/model.pub" \
        --model-mask "$W/mask.dealer" "${BATCH[@]}" "${DEALER[@]}"; }
    deal_study >/dev/null
    STUDY_TPL=$S
    SLOW_TASK=$KILL_SLICE submit_pair study "0-$((STUDY - 1))" study-1 "" "" ""
    kill_mid_run "$J0" "$J1" "$KILL_SLICE" "$W/logs/study" \
        "$S/slice$KILL_SLICE/done.p0" "$S/slice$KILL_SLICE/done.p1"
    others=()
    for ((i = 0; i < STUDY; i++)); do [[ $i -eq $KILL_SLICE ]] || others+=("$i"); done
    [[ ${#others[@]} -eq 0 ]] || { expect_completed "$J0" "${others[@]}"; expect_completed "$J1" "${others[@]}"; }
    left=$("$BIN" --json study-status --study "$S" | python3 -c 'import json,sys; print(json.load(sys.stdin)["left_spec"])')
    [[ $left == "$KILL_SLICE" ]] || fail "study-status says slices '$left' are left, expected $KILL_SLICE"
    dealt=$(deal_study | python3 -c 'import json,sys; print(json.load(sys.stdin)["dealt_spec"])')
    [[ $dealt == "$KILL_SLICE" ]] || fail "the dealer dealt slices '$dealt' again, expected $KILL_SLICE"
    say "study: slice $KILL_SLICE left and dealt again; resubmitting the whole array"
    submit_pair study "0-$((STUDY - 1))" study-2 "" "" ""
    wait_jobs "$J0" "$J1"
    all=()
    for ((i = 0; i < STUDY; i++)); do all+=("$i"); done
    expect_completed "$J0" "${all[@]}"
    expect_completed "$J1" "${all[@]}"
    STUDY_TPL=""
    # The finished slices were skipped, not redone.
    for i in "${others[@]}"; do
        grep -qs '"skipped":\['"$i"'\]' "$W/logs/study-s0-$i-$J0.log" \
            || fail "slice $i was not skipped by the resubmitted array ($W/logs/study-s0-$i-$J0.log)"
    done
    "$BIN" reconstruct --study "$S" --study-id "$STUDY_ID" --identity "$K/rx.age-identity" --trust "$K/trust" --out "$W/study-out" >/dev/null
    for ((i = 0; i < STUDY; i++)); do
        same "$W/study-out/slice$i.png" "$W/study-oracle/slice$i.png" "study slice $i differs from its oracle"
    done
    say "study of $STUDY slices through Slurm, resumed after a kill: every slice == its oracle"

    # --- 3b. docs/scale-out.md's study example, as written -----------------------------------
    # The two commands (S0's, S1's) are read from the document itself, so that what it tells
    # the organisations to run is what runs here: $DATA, $KEYS and $SHARED set (each party's
    # DATA a folder of links to its files), the array's range and throttle put to this study
    # and to the 2-slot partition `pairs` (fewer slots than the 2 x $STUDY tasks: without the
    # throttle S0's tasks take both slots waiting for S1's, which cannot start).
    mapfile -t DOC < <(awk '/<!-- the study example/ {f=1; next}
        f && /^```sh/ {g=1; next} g && /^```/ {exit}
        g && !/^#/ && NF {line = line $0; if (!sub(/\\$/, "", line)) {print line; line=""}}' docs/scale-out.md)
    [[ ${#DOC[@]} -eq 2 && ${DOC[0]} == PPD_PARTY=0* && ${DOC[1]} == PPD_PARTY=1* ]] \
        || fail "docs/scale-out.md's study example is not S0's and S1's commands: ${DOC[*]}"
    D=$W/doc-study
    "$BIN" --json share-study --in "$W/study-in" --out "$D" --sigma $SIGMA "${GATEWAY[@]}" >"$W/doc-share.json"
    DOC_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["study_id"])' "$W/doc-share.json")
    "$BIN" --json gen-triplets --study "$D" --model "$W/model.pub" --model-mask "$W/mask.dealer" \
        "${BATCH[@]}" "${DEALER[@]}" >/dev/null
    mkdir -p "$W/bin"
    ln -sf "$BIN" "$W/bin/ppdenoise"
    for p in 0 1; do
        mkdir -p "$W/doc-s$p"
        ln -sfn "$D" "$W/doc-s$p/study"
        ln -sf "$W/model.p$p" "$W/doc-s$p/model.p$p"
        ln -sf "$W/weights.p$p" "$W/doc-s$p/weights.p$p"
        ln -sfn "$W/state-s$p" "$W/doc-s$p/state"
    done
    # doc_submit P CMD RUN: one organisation's command as the document has it; prints the job id.
    doc_submit() {
        local p=$1 cmd=$2 run=$3
        (
            export PATH="$W/bin:$PATH" PPD_PORT_BASE="$PORT_BASE" PPD_TIMEOUT=300 PPD_WAIT_NOTE=5 \
                PPDENOISE_PROGRESS_SECS=0 PPDENOISE_WAIT_NOTE_SECS=5
            DATA=$W/doc-s$p KEYS=$K SHARED=$W/doc-rdv
            sbatch() {
                local a=() x
                for x in "$@"; do
                    [[ $x == --array=* ]] && x="--array=0-$((STUDY - 1))%1"
                    a+=("$x")
                done
                command sbatch --parsable --partition=pairs --job-name="ppd-doc-s$p" \
                    --output="$W/logs/doc-$run-s$p-%a-%A.log" "${a[@]}"
            }
            eval "${cmd//study7-1/$run}"
        )
    }
    all=()
    for ((i = 0; i < STUDY; i++)); do all+=("$i"); done
    # S0 without its signing key (as this document's example once was): every S0 task fails
    # at once, and every S1 task must stop on its own, naming S0's end, long before
    # PPD_TIMEOUT (300 s), and say what it waited for.
    J0=$(doc_submit 0 "${DOC[0]/PPD_SIGN_KEY=\$KEYS\/s0.sign-key /}" doc-bad)
    J1=$(doc_submit 1 "${DOC[1]}" doc-bad)
    [[ ${DOC[0]/PPD_SIGN_KEY=} != "${DOC[0]}" ]] || fail "the example has no PPD_SIGN_KEY for S0"
    say "the study example without S0's signing key: S0 job $J0, S1 job $J1 (pairs partition)"
    deadline=$((SECONDS + 40 * STUDY + 30))
    while [[ -n $(squeue -h -j "$J0,$J1" 2>/dev/null) ]]; do
        ((SECONDS < deadline)) || fail "the example's tasks still wait $((40 * STUDY + 30))s after S0's failed: $(tail -3 "$W"/logs/doc-doc-bad-s1-*.log)"
        sleep 2
    done
    for i in "${all[@]}"; do
        [[ $(task_state "$J0" "$i") == FAILED && $(task_state "$J1" "$i") == FAILED ]] \
            || fail "task $i without S0's signing key: S0 $(task_state "$J0" "$i"), S1 $(task_state "$J1" "$i"), expected both FAILED"
        log1=$W/logs/doc-doc-bad-s1-$i-$J1.log
        grep -q "waiting up to 300s for S0's task $i" "$log1" || fail "S1's task $i did not say what it waits for ($log1)"
        grep -q "S0's task for tile $i (run key doc-bad) ended: error (exit 1)" "$log1" \
            || fail "S1's task $i did not stop on S0's end, naming how it ended ($log1)"
        # The rendezvous folder, read by the other organisation, carries the run key, a
        # reason word and the exit code only: no error text, no path, no host name.
        for f in "$W"/doc-rdv/study7/tile-$i.end.p*; do
            [[ $(cat "$f") =~ ^doc-bad\ (error|timeout|signal)\ \(exit\ [0-9]+\)$ ]] \
                || fail "$f carries more than the run key, a reason and the exit code: $(cat "$f")"
        done
    done
    say "without S0's signing key every S0 task failed and every S1 task stopped on its own: $(grep -ho "S1 task 0: [^:]*" "$W"/logs/doc-doc-bad-s1-0-*.log | tail -1)"
    # Resubmitted keeping its run key (as a timed-out task may be): the failed attempt's end
    # records, still in the folder, must stop no one. S1's array comes later (as another
    # organisation's may), so that S0's tasks meet S1's old records before S1's tasks start.
    J0=$(doc_submit 0 "${DOC[0]}" doc-bad)
    sleep 8
    J1=$(doc_submit 1 "${DOC[1]}" doc-bad)
    say "the study example as written, same run key: S0 job $J0, S1 job $J1 ($STUDY slices on 2 slots, %1)"
    wait_jobs "$J0" "$J1"
    expect_completed "$J0" "${all[@]}"
    expect_completed "$J1" "${all[@]}"
    "$BIN" reconstruct --study "$D" --study-id "$DOC_ID" --identity "$K/rx.age-identity" --trust "$K/trust" \
        --out "$W/doc-out" >/dev/null
    for ((i = 0; i < STUDY; i++)); do
        same "$W/doc-out/slice$i.png" "$W/study-oracle/slice$i.png" "the example's slice $i differs from its oracle"
    done
    say "docs/scale-out.md's study example, as written, on 2 slots for $((2 * STUDY)) tasks: every slice == its oracle"
fi
