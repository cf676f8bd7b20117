# convexlab: the two commands are `make book` and `make test`.
# Both create .venv on their own if it is missing and install it from requirements.lock (every
# package at an exact version, with hashes); a changed lock or pyproject.toml reinstalls it.
# `make lock` regenerates the lock from pyproject.toml's ranges with uv (installed from PyPI at
# UV_VERSION into .tools/, so the resolver is the same on every machine).

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.convexlab-installed
LOCK    := requirements.lock
UV_VERSION := 0.13.9
UV      := .tools/uv-$(UV_VERSION)/bin/uv
PROFILE ?= lite
PYTEST_ARGS ?=
FORCE   ?=
BOOK_FLAGS := $(if $(FORCE),--force,)

.PHONY: book test venv lock chapters html unit nbval browser benchmarks rehearse paper clean distclean

venv: $(STAMP)

$(UV):
	$(PYTHON) -m pip install --disable-pip-version-check -q --target .tools/uv-$(UV_VERSION) uv==$(UV_VERSION)

# sync makes .venv exactly the lock (removing what is not in it); then convexlab itself, editable.
$(STAMP): $(LOCK) pyproject.toml | $(UV)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(UV) pip sync --quiet --python $(PY) --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

## make lock: resolve pyproject.toml's ranges (all extras) to exact versions with hashes
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra book --extra test --universal --python-version 3.11 \
	  --generate-hashes --quiet -o $(LOCK)

## make book: run every chapter on PROFILE (default lite) and build the HTML book in _build/html
## (chapters whose executed notebook is up to date are kept; FORCE=1 executes them all)
book: venv
	@start=$$(date +%s); \
	$(PY) -m convexlab.book build --profile $(PROFILE) $(BOOK_FLAGS) && \
	echo "make book: $$(( $$(date +%s) - start )) s; open _build/html/index.html"

## make chapters PROFILE=paper: execute the chapters only (into _build/executed/PROFILE)
chapters: venv
	$(PY) -m convexlab.book run --profile $(PROFILE)

## make html: build HTML from already executed chapters
html: venv
	$(PY) -m convexlab.book html --profile $(PROFILE)

## make test: unit tests, chapter execution + HTML build + browser check, then nbval on every chapter
test: venv
	$(PY) -m pytest -m "" $(PYTEST_ARGS)
	$(PY) -m pytest -p no:cacheprovider --nbval book $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest $(PYTEST_ARGS)

nbval: venv
	$(PY) -m pytest -p no:cacheprovider --nbval book $(PYTEST_ARGS)

benchmarks: venv
	$(PY) benchmarks/convexity.py --quick
	$(PY) benchmarks/extract.py --quick
	$(PY) benchmarks/prune_speed.py --quick
	$(PY) benchmarks/spoken_corpus.py --quick

## make rehearse: every chapter with --profile paper against a generated stand-in for the warm caches
## (the four hub ids in their real formats, random weights; Speech Commands v0.02's layout), offline, on the
## CPU, with only profile fields shrunk; notebooks in _build/executed/paper-rehearsal
rehearse: venv
	@start=$$(date +%s); \
	HF_HUB_OFFLINE=1 $(PY) -m convexlab.rehearsal run && \
	echo "make rehearse: $$(( $$(date +%s) - start )) s"

## make paper: on a machine with a GPU and network: preflight, downloads, the paper profile's book,
## the GPU benchmarks and _build/paper/figures.json (stops in seconds without a GPU or network)
paper: venv
	$(PY) scripts/paper_run.py

clean:
	rm -rf _build .pytest_cache

distclean: clean
	rm -rf $(VENV)
