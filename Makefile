# ppdenoise: common entry points. `make demo` is the main job, `make test` the test suite.
CARGO ?= cargo
BIN := target/release/ppdenoise
IMAGES ?= $(if $(wildcard ../shared/data/set12),../shared/data/set12,builtin:phantom:128)
SIGMAS ?= 15 20 25 30 35

.PHONY: build demo test lint bench bench-quick table clean

build:
	$(CARGO) build --release

demo: build
	$(BIN) demo

test:
	$(CARGO) test --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	rm -rf out
