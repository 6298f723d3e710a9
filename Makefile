# ppdenoise: common entry points. `make demo` is the main job, `make test` the test suite.
CARGO ?= cargo
BIN := target/release/ppdenoise
IMAGES ?= $(if $(wildcard ../shared/data/set12),../shared/data/set12,builtin:phantom:128)
SIGMAS ?= 15 20 25 30 35

.PHONY: build demo test lint bench bench-quick table rescaling-10m clean

build:
	$(CARGO) build --release

demo: build
	$(BIN) demo

test:
	$(CARGO) test --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Evaluation table (docs/results.md): every image in IMAGES x every sigma in SIGMAS, plaintext
# float, fixed-point oracle and the full secure pipeline. Full set12 x 5 sigmas takes about
# 1 h 45 min on 2 cores; an interrupted `make table` picks up where it stopped (--resume reuses
# the runs already recorded in TABLE_OUT; RESUME= starts afresh). TABLE_ARGS="--max-size 96"
# centre-crops the images.
TABLE_OUT ?= out/table
TABLE_ARGS ?=
RESUME ?= --resume
table: build
	$(BIN) table --images "$(IMAGES)" --sigmas "$(SIGMAS)" --out-dir "$(TABLE_OUT)" $(RESUME) $(TABLE_ARGS)

# Performance benchmark (docs/benchmarks.md), both engines side by side: paper-size network, a
# whole 512x512 image end to end on localhost and through the shaping relay (1 Gbit/s, 5 ms
# each way), plaintext comparison, 1521-1024-1024-289 on 96x96. bench-quick runs the same code
# at tiny sizes (CI).
bench: build
	$(BIN) bench --out out/bench/bench.json

bench-quick: build
	$(BIN) bench --quick --workdir out/bench-quick --out out/bench-quick/bench.json

# The exactness claim at full scale: 10^7 secure rescalings per engine (garbled circuits and
# boolean shares), zero off by an ulp.
rescaling-10m:
	$(CARGO) test --release --test rescaling -- --ignored --nocapture ten_million

clean:
	rm -rf out
