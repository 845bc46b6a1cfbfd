# Every target installs what it needs into .venv: a fresh clone needs only python3 (>= 3.11)
# and a package index. make test: lint + the whole suite; make test-fast: the same without the
# tests marked slow (pyproject's markers), for quick iteration.
#
# torch, by TORCH (e.g. `make venv TORCH=keep`, or `export TORCH=keep` for every target):
#   pinned (default) the first pin pip can find (.ci/torch-pin: one index query, no download):
#                    constraints-torch-cpu.txt (the CPU build we test with; here a local wheel),
#                    else constraints-torch.txt (the same version, the index's build), else
#                    pyproject's torch>=2.4. A missing build never fails the install.
#   keep             no torch pin: a torch already in .venv stays (a GPU user's own build: put it
#                    there first), and a missing one is pyproject's torch>=2.4 from your index.
#   none             no torch extra: the tests that need torch skip, saying why.
# PIP_FLAGS: pip flags for the project's install, e.g. `--dry-run` with a throwaway VENV=... to
# see what it would install (no stamp is written then; pip may still download wheels to read
# their metadata, all of torch's where the index serves no metadata files).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= pinned
PIP_FLAGS ?= --quiet
PINS := pyproject.toml constraints.txt constraints-torch-cpu.txt constraints-torch.txt .ci/torch-pin
ifeq ($(filter pinned keep none,$(TORCH)),)
$(error TORCH=$(TORCH): use pinned, keep or none)
endif
comma := ,
EXTRAS := dev,bench$(if $(filter none,$(TORCH)),,$(comma)torch)
# Reinstall when what is installed can change: the dependencies, our pins, the torch choice.
STAMP := $(VENV)/.installed-$(shell (cat $(PINS); echo $(TORCH)) | cksum | cut -d' ' -f1)

SHARDS ?= 0-1
SRC ?= data/sa1b
DST ?= data/sa1b_packed
JOBS ?= 2
IMAGE_LONGEST ?=
DEMO := demo

.PHONY: venv demo test test-fast lint docs pack bench clean

$(STAMP): $(PINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@pins="$(if $(filter pinned,$(TORCH)),$$(.ci/torch-pin $(BIN)/python))" && set -x && \
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt $$pins -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	$(if $(findstring --dry-run,$(PIP_FLAGS)),,touch $(STAMP))

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check sa1b_pack tests benchmarks
	$(BIN)/ruff format --check sa1b_pack tests benchmarks

# The guides as a site in site/; strict: a broken link or anchor between pages fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir site

# pytest exits 5 when it collected no test: for us that is a broken suite, not a pass.
PYTEST_ARGS ?=
test: lint docs
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

pack: $(STAMP)
	$(BIN)/sa1b-pack pack $(SRC) $(DST) --shards $(SHARDS) --jobs $(JOBS) \
		$(if $(IMAGE_LONGEST),--image-longest $(IMAGE_LONGEST))

demo: $(STAMP)
	$(BIN)/sa1b-pack synth $(DEMO)/src --shards 0-1 --images-per-shard 8 --jobs 2
	$(BIN)/sa1b-pack pack $(DEMO)/src $(DEMO)/store --shards 0-1 --jobs 2
	$(BIN)/sa1b-pack info $(DEMO)/store
	$(BIN)/sa1b-pack verify $(DEMO)/store --source $(DEMO)/src --quiet
	$(BIN)/python benchmarks/run.py --smoke --only masks --src $(DEMO)/src --shards 0-1 \
		--store $(DEMO)/store --results $(DEMO)/results

# make bench: every benchmark in one run on synthetic shards (made once, cached in
# benchmarks/.cache), one table, benchmarks/results/<date>-<host>.json, then
# docs/benchmarks.md generated from that JSON. FULL=1 SRC=/data/sa1b
# SHARDS=0-3: the same on real shards (DST=... on the command line: pack into, or reuse, that
# store). BENCH_ARGS: more flags for benchmarks/run.py (e.g. --only peers,masks).
FULL ?=
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS) $(if $(FULL),--full --src $(SRC) \
		--shards $(SHARDS) $(if $(filter command line,$(origin DST)),--store $(DST)))
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache
