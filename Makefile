# Every target installs what it needs into .venv: a fresh clone needs only python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall when what is installed can change: the dependencies or the pins of our own build.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

SHARDS ?= 0-1
SRC ?= data/sa1b
DST ?= data/sa1b_packed
JOBS ?= 2
IMAGE_LONGEST ?=
DEMO := demo

.PHONY: venv demo test lint docs pack bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,bench,torch]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check sa1b_pack tests benchmarks
	$(BIN)/ruff format --check sa1b_pack tests benchmarks

# The guides as a site in site/; strict: a broken link or anchor between pages fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir site

# pytest exits 5 when it collected no test: for us that is a broken suite, not a pass.
test: lint docs
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

pack: $(STAMP)
	$(BIN)/sa1b-pack pack $(SRC) $(DST) --shards $(SHARDS) --jobs $(JOBS) \
		$(if $(IMAGE_LONGEST),--image-longest $(IMAGE_LONGEST))

demo: $(STAMP)
	$(BIN)/sa1b-pack synth $(DEMO)/src --shards 0-1 --images-per-shard 8 --jobs 2
	$(BIN)/sa1b-pack pack $(DEMO)/src $(DEMO)/store --shards 0-1 --jobs 2
	$(BIN)/sa1b-pack info $(DEMO)/store
	$(BIN)/python benchmarks/demo_readback.py $(DEMO)/store $(DEMO)/src

# make bench: every benchmark in one run on synthetic shards (made once, cached in
# benchmarks/.cache), one table, benchmarks/results/<date>-<host>.json + .png, then
# docs/benchmarks.md (+ its chart) generated from that JSON. FULL=1 SRC=/data/sa1b
# SHARDS=0-3: the same on real shards (DST=... on the command line: pack into, or reuse, that
# store). BENCH_ARGS: more flags for benchmarks/run.py (e.g. --only peers,access).
FULL ?=
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS) $(if $(FULL),--full --src $(SRC) \
		--shards $(SHARDS) $(if $(filter command line,$(origin DST)),--store $(DST)))
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache
