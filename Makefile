# ppdenoise: common entry points. `make demo` is the main job, `make test` the test suite.
CARGO ?= cargo
BIN := target/release/ppdenoise
IMAGES ?= $(if $(wildcard ../shared/data/set12),../shared/data/set12,builtin:phantom:128)
SIGMAS ?= 15 20 25 30 35

# The JPEG-LS and 12-bit JPEG decoders (CharLS, libjpeg-turbo) are C/C++ that their crates
# build with cmake. A machine without cmake gets PyPI's (pinned) in .venv-build; every cargo
# command below depends on `tools` and sees it through CMAKE.
ifeq ($(shell command -v cmake 2>/dev/null),)
export CMAKE := $(CURDIR)/.venv-build/bin/cmake
TOOLS := .venv-build/.ok
endif

.PHONY: tools install-strace orthanc pacs-test clippy dicom-testdata build demo readme-figure test test-build fuzz fuzz-mutation faults soak lint graph-fixtures torch-graphs bench-graphs bench-dealer-free bench-colour bench bench-quick bench-kernels bench-plain bench-tiles table table-check dicom-table dncnn table-dncnn ffdnet table-ffdnet table-colour rescaling-10m slurm-test slurm-packages k8s-validate onnx-fixtures onnx-dncnn clean

# tests/suite/files/read_once.rs counts the opens of each input file with strace (a system package).
ifeq ($(shell command -v strace 2>/dev/null),)
TOOLS += install-strace
endif

tools: $(TOOLS)

install-strace:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace

# The stamps depend on the Makefile, so that a changed pin is installed; a venv that could not
# be made is removed, not left half-made.
.venv-build/.ok: Makefile
	test -x .venv-build/bin/pip || { python3 -m venv .venv-build || { rm -rf .venv-build; exit 1; }; }
	.venv-build/bin/pip install --quiet cmake==3.31.10
	touch $@

build: tools
	$(CARGO) build --release

demo: build
	$(BIN) demo

# The README's first picture: the noisy phantom and the secure result of `make demo`.
readme-figure: build
	$(BIN) demo --quiet
	cp out/demo/before-after.png docs/img/demo-before-after.png

# The fuzzing pass (tests/fuzz.rs) runs last with its counts printed: about 4 s per parser.
# The fault injection scenarios are `make faults` (CI runs both). The fuzzing pass, the faults
# and the soak are #[ignore]d, so that a plain `cargo test` leaves them to their targets.
# A plain `cargo test` skips, with a line, the tests whose generated fixtures are missing;
# here they are made first and required (PPDENOISE_FIXTURES_REQUIRED).
test: tools dicom-testdata graph-fixtures orthanc
	PPDENOISE_FIXTURES_REQUIRED=1 $(CARGO) test --release --no-fail-fast
	PPDENOISE_FIXTURES_REQUIRED=1 $(CARGO) test --release --test fuzz -- --ignored --nocapture fuzz_every_parser

# Every target `make test` runs, built only (CI builds them while the fixtures are fetched).
test-build: tools
	$(CARGO) test --release --no-run

# The hospital's archive at both ends (tests/suite/archive/pacs.rs, docs/pacs.md): a real Orthanc with its
# DICOMweb plugin, from the distribution's packages when missing (root, as CI runs), started by
# each test on free ports with its own configuration and stopped after; about 40 s on 2 cores.
# `make test` runs the same tests, which skip with a line where apt could not install Orthanc;
# here a missing Orthanc is a failure.
ORTHANC_DICOMWEB_PLUGIN ?= /usr/share/orthanc/plugins/libOrthancDicomWeb.so
export ORTHANC_DICOMWEB_PLUGIN
orthanc:
	@if command -v Orthanc >/dev/null 2>&1 && test -f $(ORTHANC_DICOMWEB_PLUGIN); then :; else \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb; } \
	  || echo "Orthanc could not be installed from the distribution's packages: tests/suite/archive/pacs.rs skips"; fi
	@# curl: docs/pacs.md's push through Orthanc's REST API, which tests/suite/archive/pacs.rs runs as written.
	@if command -v curl >/dev/null 2>&1; then :; else \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; } \
	  || echo "curl could not be installed from the distribution's packages: tests/suite/archive/pacs.rs skips the page's commands"; fi
	@# dcmtk's storescu: an archive pushing into `ppdenoise receive` (tests/suite/archive/pacs.rs).
	@if command -v storescu >/dev/null 2>&1; then :; else \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; } \
	  || echo "dcmtk could not be installed from the distribution's packages: tests/suite/archive/pacs.rs skips its test"; fi

pacs-test: tools dicom-testdata orthanc
	PPDENOISE_PACS_REQUIRED=1 PPDENOISE_FIXTURES_REQUIRED=1 $(CARGO) test --release --test suite -- --nocapture archive::pacs::

# Fault injection with real processes (tests/suite/stress/faults.rs, docs/security.md): servers killed,
# the link cut, output disks that fail, damaged and swapped files; one line per scenario and
# the counts (about a minute on 2 cores).
faults: tools
	$(CARGO) test --release --test suite -- --ignored --nocapture stress::faults::

# The soak (tests/suite/stress/soak.rs, docs/security.md): SOAK_JOBS consecutive small jobs through one
# server pair's state dirs, both engines and model families, a fault in every ten, each job
# exact; prints the servers' memory and open files across the run.
SOAK_JOBS ?= 200
soak: tools
	PPDENOISE_SOAK_JOBS=$(SOAK_JOBS) $(CARGO) test --release --test suite -- --ignored --nocapture stress::soak::

# Coverage-guided fuzzing (scripts/fuzz-afl.sh, docs/security.md): every parser target of
# tests/fuzz.rs as an afl++ campaign of FUZZ_SECS seconds, FUZZ_JOBS at once, built by
# cargo-afl (installed from the crate registry on first use). The instrumented build goes to
# target/afl/ (about 15 minutes on 2 cores the first time); afl++'s queues are kept there
# and grow across runs; any crash fails, with its panic message.
FUZZ_SECS ?= 60
FUZZ_JOBS ?=
FUZZ_ONLY ?=
fuzz: tools dicom-testdata
	FUZZ_SECS=$(FUZZ_SECS) FUZZ_JOBS=$(FUZZ_JOBS) FUZZ_ONLY="$(FUZZ_ONLY)" scripts/fuzz-afl.sh

# The mutation fuzzer of `make test` at length: FUZZ_SECS seconds per parser from a fresh
# seed, or FUZZ_INPUTS inputs per parser (the long recorded run, docs/security.md), on every
# core, the peer frames included; crashes are saved in target/fuzz/, and the corpus of inputs
# that met a new refusal in target/fuzz/corpus/.
FUZZ_INPUTS ?=
fuzz-mutation: tools dicom-testdata
	PPDENOISE_FUZZ_CORPUS=$(CURDIR)/target/fuzz/corpus \
	$(if $(FUZZ_INPUTS),PPDENOISE_FUZZ_INPUTS=$(FUZZ_INPUTS),PPDENOISE_FUZZ_SECS=$(FUZZ_SECS)) \
	$(CARGO) test --release --test fuzz -- --ignored --nocapture fuzz_every_parser

lint: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# What CI runs: clippy on the release profile, which the tests build too.
clippy: tools
	$(CARGO) clippy --release --all-targets -- -D warnings

# DICOM inputs the tests read (tests/suite/images/dicom.rs): pydicom's own test files (the PyPI wheel ships
# them: big endian, deflated, RLE, JPEG 2000, JPEG-LS, 12-bit JPEG, padded pixel data), and
# 8- and 12-bit JPEG 2000 files made by scripts/make-dicom-testdata.py with OpenJPEG, all in
# .venv-dicom and out/dicom-testdata. Pinned versions; PyPI only.
dicom-testdata: out/dicom-testdata/.ok

.venv-dicom/.ok: Makefile
	test -x .venv-dicom/bin/pip || { python3 -m venv .venv-dicom || { rm -rf .venv-dicom; exit 1; }; }
	.venv-dicom/bin/pip install --quiet pydicom==3.0.2 numpy==2.4.6 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0 pylibjpeg-libjpeg==2.3.0
	touch $@

out/dicom-testdata/.ok: scripts/make-dicom-testdata.py | .venv-dicom/.ok
	.venv-dicom/bin/python scripts/make-dicom-testdata.py out/dicom-testdata
	touch $@

# CNN graphs' float reference (tests/suite/models/graph_float.rs, docs/graph.md): small fixture graphs
# written with the onnx helper API by scripts/make-graph-fixtures.py and run by onnxruntime,
# in .venv-onnxrt and out/graph-fixtures. Pinned versions; PyPI only (no torch: too big).
graph-fixtures: out/graph-fixtures/.ok

.venv-onnxrt/.ok: Makefile
	test -x .venv-onnxrt/bin/pip || { python3 -m venv .venv-onnxrt || { rm -rf .venv-onnxrt; exit 1; }; }
	.venv-onnxrt/bin/pip install --quiet onnx==1.23.2 onnxruntime==1.31.1 numpy==2.4.6
	touch $@

out/graph-fixtures/.ok: scripts/make-graph-fixtures.py | .venv-onnxrt/.ok
	.venv-onnxrt/bin/python scripts/make-graph-fixtures.py out/graph-fixtures
	touch $@

# The same four shapes exported by PyTorch itself (torch.onnx.export, scripts/
# make-torch-graph-fixtures.py), as a hospital's training code would write them, through
# tests/suite/models/torch_graphs.rs: float against PyTorch's own outputs, secure == oracle on both
# engines. PyTorch from PyPI in out/.venv-torch (the venv `make bench-plain` uses; several
# GB, so not part of `make test`); a few minutes the first time, about a minute after.
torch-graphs: build out/torch-graph-fixtures/.ok
	$(CARGO) test --release --test suite -- --ignored --nocapture models::torch_graphs::

out/.venv-torch/.graphs-ok: Makefile
	test -x out/.venv-torch/bin/pip || { python3 -m venv out/.venv-torch || { rm -rf out/.venv-torch; exit 1; }; }
	out/.venv-torch/bin/pip install --quiet torch==2.15.0 numpy pillow onnx==1.23.2
	touch $@

out/torch-graph-fixtures/.ok: scripts/make-torch-graph-fixtures.py | out/.venv-torch/.graphs-ok
	out/.venv-torch/bin/python scripts/make-torch-graph-fixtures.py out/torch-graph-fixtures
	touch $@

# CNN graphs benchmarked (issue 47, item 7; docs/benchmarks.md): a realistic U-Net denoiser
# (4 levels, 32 to 256 channels) and a DRUNet-small (4 levels, 16 to 128 channels), exported by
# PyTorch with random weights, each at GRAPH_BENCH_SIZES through `bench` (boolean engine,
# localhost and the shaping relay, plaintext float beside): out/bench-graphs/MODEL-SIZE.json.
# Then one DnCNN-17 (64 channels) as a DnCNN job and as a graph (the same weights, clamped at
# the end) at GRAPH_BENCH_CONV_SIZE, localhost: the linear phase's rates side by side.
GRAPH_BENCH_SIZES ?= 256 512
GRAPH_BENCH_CONV_SIZE ?= 128
bench-graphs: build out/graph-bench/.ok
	for m in unet drunet; do for n in $(GRAPH_BENCH_SIZES); do \
	  $(BIN) bench --skip-paper --skip-mid --engine gmw --model out/graph-bench/bench-$$m.onnx \
	    --image builtin:phantom:$$n --workdir out/bench-graphs/$$m-$$n \
	    --out out/bench-graphs/$$m-$$n.json || exit 1; done; done
	for m in dncnn dncnn-graph; do n=$(GRAPH_BENCH_CONV_SIZE); \
	  $(BIN) bench --skip-paper --skip-mid --no-relay --engine gmw \
	    --model out/graph-bench/bench-$$m.onnx --image builtin:phantom:$$n \
	    --workdir out/bench-graphs/$$m-$$n --out out/bench-graphs/$$m-$$n.json || exit 1; done

# Jobs dealt by the two servers between themselves, no dealer (`gen-triplets --party`),
# beside the dealer's, on the gc engine (docs/benchmarks.md, "Whole jobs dealt by the two
# servers"): FFDNet gray and the bench U-Net, localhost and through the shaping relay.
# FFDNet at 512 takes about 15 minutes on 2 cores.
DEALER_FREE_SIZES ?= 128 512
bench-dealer-free: build out/ffdnet/clip.npz out/graph-bench/.ok
	for n in $(DEALER_FREE_SIZES); do \
	  PPDENOISE=$(BIN) scripts/bench-dealer-free.sh out/ffdnet/clip.npz $$n out/bench-dealer-free/ffdnet-$$n || exit 1; done
	PPDENOISE=$(BIN) scripts/bench-dealer-free.sh out/ffdnet/clip.npz 128 out/bench-dealer-free/ffdnet-128-relay 1gbit,5ms
	PPDENOISE=$(BIN) scripts/bench-dealer-free.sh out/graph-bench/bench-unet.onnx 256 out/bench-dealer-free/unet-256

# Colour FFDNet beside gray FFDNet (issue 48, item 5; docs/benchmarks.md): the phantom (given
# colours for the colour model: bench's noisy_file) at COLOUR_BENCH_SIZES, boolean engine,
# localhost and the shaping relay: out/bench-colour/MODEL-SIZE.json.
COLOUR_BENCH_SIZES ?= 256 512
bench-colour: build out/ffdnet/clip.npz out/ffdnet/clip-colour.npz
	for m in clip clip-colour; do for n in $(COLOUR_BENCH_SIZES); do \
	  $(BIN) bench --skip-paper --skip-mid --engine gmw --model out/ffdnet/$$m.npz \
	    --image builtin:phantom:$$n --workdir out/bench-colour/$$m-$$n \
	    --out out/bench-colour/$$m-$$n.json || exit 1; done; done

out/graph-bench/.ok: scripts/make-torch-graph-fixtures.py | out/.venv-torch/.graphs-ok
	out/.venv-torch/bin/python scripts/make-torch-graph-fixtures.py --bench out/graph-bench
	touch $@

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

# CI reproduces a published table: the 64x64 centre crops of set12 at sigma 15/25/35 (shipped
# model, secure runs) must print exactly the PSNR and SSIM of docs/results-final-crop64.md.
TABLE_CHECK_REF := docs/results-final-crop64.md
table-check: build
	@test -d ../shared/data/set12 || { echo "table-check: ../shared/data/set12 is missing" >&2; exit 1; }
	python3 scripts/table-check.py --self-test $(TABLE_CHECK_REF)
	$(BIN) table --images ../shared/data/set12 --sigmas "15 25 35" --max-size 64 --figures none \
	  --out-dir out/table-check
	python3 scripts/table-check.py $(TABLE_CHECK_REF) out/table-check/table.json

# DnCNN-S (Zhang et al.), the authors' sigma-specific weights in ../shared/models/dncnn, converted
# into out/dncnn/ (never committed; h5py from PyPI reads the MATLAB v7.3 files), and the
# full-size secure table with each noise level's own model (docs/results.md, docs/cnn.md):
# about 40 min per sigma on 2 cores, resumable like `make table`.
DNCNN ?= ../shared/models/dncnn
DNCNN_SIGMAS ?= 15 25 50
dncnn: $(foreach s,$(DNCNN_SIGMAS),out/dncnn/s$(s).npz)

# A converted file is kept: converting again would give another hash (zip timestamps), and
# `--resume` rightly refuses runs made with another model file.
out/dncnn/s%.npz: | .venv-import/.ok
	mkdir -p out/dncnn
	.venv-import/bin/python scripts/import-dncnn.py "$(DNCNN)/sigma=$*.mat" $@ --sigma $*

# FFDNet (Zhang, Zuo, Zhang, TIP 2018): one model for every sigma, the authors' weights in
# ../shared/models/ffdnet converted into out/ffdnet/ (never committed). clip.npz was trained on
# clipped (8-bit) noisy images and is the one to use; gray.npz on unclipped noise.
FFDNET ?= ../shared/models/ffdnet
ffdnet: out/ffdnet/clip.npz out/ffdnet/gray.npz out/ffdnet/clip-colour.npz

# The colour model (issue 48), told by its 13 input channels.
out/ffdnet/clip-colour.npz: scripts/import-ffdnet.py | .venv-import/.ok
	mkdir -p out/ffdnet
	.venv-import/bin/python scripts/import-ffdnet.py "$(FFDNET)/FFDNet_Clip_color.mat" $@

out/ffdnet/clip.npz: scripts/import-ffdnet.py | .venv-import/.ok
	mkdir -p out/ffdnet
	.venv-import/bin/python scripts/import-ffdnet.py "$(FFDNET)/FFDNet_Clip_gray.mat" $@

out/ffdnet/gray.npz: scripts/import-ffdnet.py | .venv-import/.ok
	mkdir -p out/ffdnet
	.venv-import/bin/python scripts/import-ffdnet.py "$(FFDNET)/FFDNet_gray.mat" $@

# The full-size set12 table with the one FFDNet model at every sigma (docs/results-ffdnet.md):
# secure runs at FFDNET_SIGMAS and one signal-dependent (Poisson-Gaussian) row with per-pixel
# maps, BM3D on the same noisy images, and DnCNN-S (its per-sigma models) and the shipped MLP
# in float on them, side by side (scripts/ffdnet-compare.py). Resumable like `make table`.
FFDNET_SIGMAS ?= 15 25 50 75
FFDNET_PG ?= poisson-gaussian:4,25
table-ffdnet: build out/ffdnet/clip.npz dncnn .venv-bm3d/.ok
	$(BIN) table --images "$(IMAGES)" --sigmas "$(FFDNET_SIGMAS)" --model out/ffdnet/clip.npz \
	  --out-dir out/table-ffdnet $(RESUME) $(TABLE_ARGS)
	$(BIN) table --images "$(IMAGES)" --sigmas 25 --noise $(FFDNET_PG) --model out/ffdnet/clip.npz \
	  --out-dir out/table-ffdnet-pg $(RESUME) $(TABLE_ARGS)
	.venv-bm3d/bin/python scripts/bm3d-compare.py out/table-ffdnet $(BIN) > /dev/null
	.venv-bm3d/bin/python scripts/ffdnet-compare.py out/table-ffdnet out/table-ffdnet-pg $(BIN) > out/results-ffdnet.md
	@echo "wrote out/results-ffdnet.md (docs/results-ffdnet.md is its recorded copy)"

# The colour table (issue 48, docs/results-colour.md): kodak24 with the authors' colour FFDNet
# (clipped-noise model) secure, float and the oracle, and CBM3D on the very same noisy RGB
# images (scripts/cbm3d-compare.py). Sigma 25 and 50 first (the targets), then 15; about a
# minute per secure run on 2 cores. Resumable: an interrupted run picks up where it stopped,
# and CBM3D reuses the estimates it made.
COLOUR_IMAGES ?= ../shared/data/kodak24
table-colour: build out/ffdnet/clip-colour.npz .venv-bm3d/.ok
	@test -d $(COLOUR_IMAGES) || { echo "table-colour: $(COLOUR_IMAGES) is missing" >&2; exit 1; }
	$(BIN) table --images "$(COLOUR_IMAGES)" --sigmas "25 50" --model out/ffdnet/clip-colour.npz \
	  --out-dir out/table-colour $(RESUME) $(TABLE_ARGS)
	$(BIN) table --images "$(COLOUR_IMAGES)" --sigmas "15 25 50" --model out/ffdnet/clip-colour.npz \
	  --out-dir out/table-colour $(RESUME) $(TABLE_ARGS)
	.venv-bm3d/bin/python scripts/cbm3d-compare.py out/table-colour $(BIN) > out/results-colour.md
	@echo "wrote out/results-colour.md (docs/results-colour.md is its recorded copy)"

# The CT table of docs/dicom.md ("Quality on a real CT"): pydicom's CT_small at 10, 20 and 40 HU
# through the fixed-point oracle (what the secure path writes, bit for bit) with the shipped
# MLP and FFDNet-Clip (when ../shared/models/ffdnet exists), known sigma and `auto`, and BM3D
# in the clear; RMSE in HU (scripts/dicom-table.py; about a minute).
dicom-table: build dicom-testdata .venv-bm3d/.dicom-ok $(if $(wildcard $(FFDNET)/FFDNet_Clip_gray.mat),out/ffdnet/clip.npz)
	.venv-bm3d/bin/python scripts/dicom-table.py $(BIN) out/dicom-table \
	  $(if $(wildcard $(FFDNET)/FFDNet_Clip_gray.mat),--ffdnet out/ffdnet/clip.npz) > out/dicom-table.md
	cat out/dicom-table.md

.venv-bm3d/.dicom-ok: .venv-bm3d/.ok Makefile
	.venv-bm3d/bin/pip install --quiet pydicom==3.0.2
	touch $@

.venv-bm3d/.ok:
	test -d .venv-bm3d || python3 -m venv .venv-bm3d
	.venv-bm3d/bin/pip install --quiet bm3d==4.0.3 pillow
	touch $@

# PyTorch and ONNX (torch, onnx, onnxscript, safetensors from PyPI: a few GB), only to remake
# the committed fixtures of tests/suite/models/onnx.rs (fixtures/onnx/), and out/dncnn/s25.onnx and
# out/ffdnet/clip.onnx: the authors' DnCNN-S and FFDNet weights as PyTorch modules exported to
# ONNX; `make onnx-dncnn` then runs the two tests of tests/suite/models/onnx.rs (ignored by `make test`)
# that check them against the .npz imports.
onnx-fixtures: | .venv-onnx/.ok
	.venv-onnx/bin/python scripts/make-onnx-fixtures.py

onnx-dncnn: tools out/dncnn/s25.onnx out/ffdnet/clip.onnx
	$(CARGO) test --release --test suite -- --ignored models::onnx::

out/dncnn/s25.onnx: out/dncnn/s25.npz | .venv-onnx/.ok
	.venv-onnx/bin/python scripts/make-onnx-fixtures.py --dncnn-npz $< --out $@

out/ffdnet/clip.onnx: out/ffdnet/clip.npz | .venv-onnx/.ok
	.venv-onnx/bin/python scripts/make-onnx-fixtures.py --ffdnet-npz $< --out $@

.venv-onnx/.ok:
	test -d .venv-onnx || python3 -m venv .venv-onnx
	.venv-onnx/bin/pip install --quiet torch onnx onnxscript safetensors numpy
	touch $@

# The stamp is written only once pip has succeeded, so a failed install is retried.
.venv-import/.ok:
	test -d .venv-import || python3 -m venv .venv-import
	.venv-import/bin/pip install --quiet h5py numpy
	touch $@

table-dncnn: build dncnn
	$(BIN) table --images "$(IMAGES)" --sigmas "$(DNCNN_SIGMAS)" --out-dir out/table-dncnn $(RESUME) \
	  --models "$(foreach s,$(DNCNN_SIGMAS),$(s)=out/dncnn/s$(s).npz)" $(TABLE_ARGS)

# Performance benchmark (docs/benchmarks.md), both engines side by side: paper-size network, a
# whole 512x512 image end to end on localhost and through the shaping relay (1 Gbit/s, 5 ms
# each way), plaintext comparison, 1521-1024-1024-289 on 96x96. bench-quick runs the same code
# at tiny sizes (CI).
bench: build
	$(BIN) bench --out out/bench/bench.json

bench-quick: build graph-fixtures
	$(BIN) bench --quick --workdir out/bench-quick --out out/bench-quick/bench.json
	PPDENOISE=$(BIN) scripts/bench-dealer-free.sh out/graph-fixtures/unet.onnx 32 out/bench-quick/dealer-free 1gbit,5ms

# The matrix-product kernels alone: G multiply-adds per second per core and on all cores, u64
# (blocked kernel and the previous one) and f64/f32, on the CNN's and the MLP's layer shapes,
# against the core's peak (about 20 s).
bench-kernels: build
	$(BIN) bench-kernels

# The plaintext paths (denoise --arith float and fixed) against PyTorch's float32 CPU forward
# on the same CNN and the same 512x512 image, one table (docs/benchmarks.md). The script makes
# its own venv (out/.venv-torch, PyTorch from PyPI) once; nothing else needs PyTorch.
PLAIN_MODEL ?= out/dncnn/s25.npz
bench-plain: build $(PLAIN_MODEL)
	python3 scripts/pytorch-compare.py --model $(PLAIN_MODEL)

# The exactness claim at full scale: 10^7 secure rescalings per engine (garbled circuits and
# boolean shares) through the circuits the pipeline runs (tanh* selection, ReLU), zero off by
# an ulp.
rescaling-10m: tools
	$(CARGO) test --release --test suite -- --ignored --nocapture oracle::rescaling::ten_million

# One CNN job as 1, 2 and 4 tiles (all pairs at once here, and each tile alone), the halo's
# extra rows, and a 200-slice study projected on 1-128 server pairs, with its figure
# (docs/benchmarks.md, the Tiles row; the runs in docs/benchmarks-history.md, "Tiles"). FFDNet by default: `make ffdnet` first.
TILES_MODEL ?= out/ffdnet/clip.npz
bench-tiles: build
	$(BIN) bench-tiles --model $(TILES_MODEL) --image builtin:phantom:512 --tiles 1,2,4

# The pipeline through a real single-node Slurm cluster started on this machine (root; installs
# slurm-wlm and munge from the distribution's packages when missing): the one-piece job, a
# study, a task killed mid-run and re-run with fresh triplets, all equal to the oracle; the
# cluster is stopped afterwards (scripts/slurm-test.sh, docs/scale-out.md). A few minutes.
slurm-test: build
	scripts/slurm-test.sh

# Slurm's packages alone (what `make slurm-test` installs when missing), for CI to fetch them
# while it compiles.
slurm-packages:
	scripts/slurm-cluster.sh install

# The Kubernetes manifests in k8s/ against the Kubernetes schema (PyPI's kubernetes-validate in
# its own venv under out/): not part of `make test`, it needs PyPI.
k8s-validate:
	scripts/k8s-validate.sh

clean:
	rm -rf out
