# convexlab: the two commands are `make book` and `make test`.
# Both create .venv on their own if it is missing and reuse it while pyproject.toml is unchanged.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.convexlab-installed
PROFILE ?= lite
PYTEST_ARGS ?=

.PHONY: book test venv chapters html unit nbval browser benchmarks clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[book,test]"
	@touch $(STAMP)

## make book: run every chapter on PROFILE (default lite) and build the HTML book in _build/html
book: venv
	@start=$$(date +%s); \
	$(PY) -m convexlab.book build --profile $(PROFILE) && \
	echo "make book: $$(( $$(date +%s) - start )) s; open _build/html/index.html"

## make chapters PROFILE=paper: execute the chapters only (into _build/executed/PROFILE)
chapters: venv
	$(PY) -m convexlab.book run --profile $(PROFILE)

## make html: build HTML from already executed chapters
html: venv
	$(PY) -m convexlab.book html --profile $(PROFILE)

## make test: unit tests, chapter execution + HTML build + browser check, then nbval on every chapter
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest -p no:cacheprovider --nbval book $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m "not book and not browser and not slow" $(PYTEST_ARGS)

nbval: venv
	$(PY) -m pytest -p no:cacheprovider --nbval book $(PYTEST_ARGS)

benchmarks: venv
	$(PY) benchmarks/convexity.py --quick
	$(PY) benchmarks/extract.py --quick
	$(PY) benchmarks/prune_speed.py --quick

clean:
	rm -rf _build .pytest_cache

distclean: clean
	rm -rf $(VENV)
