#!/usr/bin/env bash
# Coverage-guided fuzzing (`make fuzz`, docs/security.md): every parser target of
# tests/fuzz.rs as one afl++ campaign (tests/fuzz/afl.rs), in a build made by cargo-afl.
#
#   FUZZ_SECS  seconds per target (60)
#   FUZZ_JOBS  targets fuzzed at once (the machine's cores)
#   FUZZ_ONLY  only the targets whose names (as printed, e.g. server-job-files) contain it
#   FUZZ_FRESH 1: make the valid files again and start every target from them, not from
#              the queue kept by earlier runs (target/afl/campaign/out/<target>/)
#
# cargo-afl comes from the crate registry on first use; installing it builds the afl++ it
# pins (4.40c for 0.18.2) and its runtime for this rustc. No LLVM plugins: coverage is
# LLVM's sanitizer coverage (trace-pc-guard and compares), which stable Rust has. The
# instrumented build (codegen-units=1, overflow checks and debug assertions on) goes to
# target/afl/. A run fails when a campaign fails, when it finds a crash (each replayed for
# its message), or when a crash saved by an earlier run still crashes; one that no longer
# does is moved to out/<target>/fixed/. Hangs (an input past 10 s) are counted, not failed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
only=${FUZZ_ONLY:-}
cargo_afl=0.18.2

if ! cargo afl --version 2>/dev/null | grep -qF "$cargo_afl"; then
    cargo install cargo-afl --locked --version "$cargo_afl"
fi
# The runtime is per rustc: after a toolchain update it is built again.
if ! made=$(cargo afl config --build 2>&1) && ! grep -q "already built" <<<"$made"; then
    echo "$made" >&2
    echo "fuzz: cargo afl config --build failed" >&2
    exit 1
fi

export CARGO_TARGET_DIR=$PWD/target/afl
# No LTO: it adds link time and no coverage.
export CARGO_PROFILE_RELEASE_LTO=false
echo "fuzz: building the instrumented test binary in target/afl (cargo afl build)"
bin=$(cargo afl build --release --test fuzz --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fuzz" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "fuzz: cargo afl build gave no test binary" >&2; exit 1; }

dir=$PWD/target/afl/campaign
test=afl_campaign::afl_campaign
mkdir -p "$dir/log"
[ "${FUZZ_FRESH:-0}" = 1 ] && rm -rf "$dir/out" "$dir/files"
mkdir -p "$dir/out"
PPDENOISE_AFL_DIR=$dir "$bin" "$test" --exact --ignored --nocapture --test-threads=1 >"$dir/log/export.log" 2>&1 ||
    { cat "$dir/log/export.log" >&2; echo "fuzz: the export failed" >&2; exit 1; }
grep '^afl:' "$dir/log/export.log" || true
mapfile -t targets < <(grep -iF -- "$only" "$dir/targets")
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz: no target matches FUZZ_ONLY=$only" >&2; exit 1; }

stat() { awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1" 2>/dev/null; }

# Replays one input of target $1 from file $2 outside afl++: 0 when the reader gave a result
# (accepted or refused), else the crash, its message on standard output.
replay() {
    local log
    if log=$(PPDENOISE_AFL_DIR=$dir PPDENOISE_AFL_TARGET=$1 timeout 120 "$bin" "$test" --exact \
        --ignored --nocapture --test-threads=1 <"$2" 2>&1); then
        return 0
    else
        local rc=$?
        grep -m1 -A2 'panicked at\|memory allocation\|overflowed its stack' <<<"$log" |
            sed 's/^/    /' || echo "    exit status $rc"
        return 1
    fi
}

# Crashes saved by earlier runs (afl++ renames crashes/ to crashes.<date> when it resumes,
# and does not requeue a crashing input): each must no longer crash.
status=0
for t in "${targets[@]}"; do
    mapfile -t old < <(find "$dir/out/$t/default" -path '*/crashes*/id:*' -type f 2>/dev/null)
    for c in "${old[@]}"; do
        if replay "$t" "$c" >"$dir/log/replay"; then
            mkdir -p "$dir/out/$t/fixed"
            mv "$c" "$dir/out/$t/fixed/"
            echo "fuzz: $t: earlier crash $(basename "$c") no longer crashes (moved to out/$t/fixed/)"
        else
            echo "fuzz: $t: earlier crash $c still crashes:"
            cat "$dir/log/replay"
            status=1
        fi
    done
done

# One campaign. afl++ runs the target in persistent mode; a refusal is the common outcome
# and a slow input (past 10 s) is counted as a hang, not a crash. The queue is resumed
# when an earlier run left one; a kept input that crashes now is saved as a new crash.
# --nocapture: libtest would otherwise keep everything the target prints, in memory.
campaign() {
    local t=$1 out=$dir/out/$1
    stat "$out/default/fuzzer_stats" execs_done >"$dir/log/$t.before" || true
    if PPDENOISE_AFL_DIR=$dir PPDENOISE_AFL_TARGET=$t AFL_NO_UI=1 AFL_AUTORESUME=1 \
        AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_FORKSRV_INIT_TMOUT=120000 AFL_CRASHING_SEEDS_AS_NEW_CRASH=1 \
        cargo afl fuzz -i "$dir/in/$t" -o "$out" -V "$secs" -t 10000 -m none \
        -- "$bin" "$test" --exact --ignored --nocapture --test-threads=1 >"$dir/log/$t.log" 2>&1; then
        echo 0 >"$dir/log/$t.rc"
        echo "fuzz: $t done"
    else
        echo $? >"$dir/log/$t.rc"
        echo "fuzz: $t: afl-fuzz failed; the end of $dir/log/$t.log:"
        tail -n 15 "$dir/log/$t.log"
    fi
}
export -f campaign stat
export dir bin test secs
echo "fuzz: ${#targets[@]} targets, $secs s each, $jobs at once"
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'campaign "$1"' _ {}

total=0
printf '\n%-44s %10s %9s %7s %8s %6s %7s\n' target "execs" "exec/s" queue edges hangs crashes
for t in "${targets[@]}"; do
    s=$dir/out/$t/default/fuzzer_stats
    if [ "$(cat "$dir/log/$t.rc" 2>/dev/null)" != 0 ] || [ ! -f "$s" ]; then
        echo "fuzz: $t: the campaign failed (see $dir/log/$t.log)"
        status=1
        continue
    fi
    before=$(cat "$dir/log/$t.before" 2>/dev/null || true)
    execs=$(($(stat "$s" execs_done) - ${before:-0}))
    total=$((total + execs))
    mapfile -t crashes < <(find "$dir/out/$t/default/crashes" -name 'id:*' -type f 2>/dev/null)
    hangs=$(find "$dir/out/$t/default/hangs" -name 'id:*' -type f 2>/dev/null | wc -l)
    printf '%-44s %10s %9s %7s %8s %6s %7s\n' "$t" "$execs" "$(stat "$s" execs_per_sec)" \
        "$(stat "$s" corpus_count)" "$(stat "$s" edges_found)" "$hangs" "${#crashes[@]}"
    for c in "${crashes[@]:0:3}"; do
        status=1
        echo "  crash $c:"
        replay "$t" "$c" || true
    done
    [ "${#crashes[@]}" -eq 0 ] || status=1
done
echo "fuzz: ${#targets[@]} targets, $total executions this run, status $status"
echo "fuzz: replay an input: PPDENOISE_AFL_DIR=$dir PPDENOISE_AFL_TARGET=<target> $bin $test --exact --ignored --nocapture < <input>"
exit $status
