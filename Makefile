# fedbio: two commands do everything. `make demo` runs the main job, `make test` the whole suite.
# Each sets up its own virtual environment in .venv/ on first use.

VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip --disable-pip-version-check
# CPU build of torch, pinned so a bare install never pulls a multi-GB CUDA build.
TORCH    ?= torch==2.13.0
FIND     := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
RUNS     ?= runs
# Notebooks in CI run the offline quick profile, whatever weights the machine holds. A cell may
# take up to the per-test limit: notebook 02's transformer cell passed 600 s with two other test
# runs on the same two cores.
NB_TIMEOUT ?= 1500
# A hung test fails alone (pytest-timeout) instead of holding CI; a stalled NVFlare simulator is
# stopped and retried once (fedbio.federation.nvflare.watch).
TEST_TIMEOUT ?= 1500
SIM_TIMEOUT  ?= 600
# nbval re-executes every notebook and compares the cells marked `# NBVAL_CHECK_OUTPUT` with their
# committed outputs (after tests/nbval-sanitize.cfg; stderr and images are not compared).
NBVAL   := --nbval-lax --nbval-sanitize-with tests/nbval-sanitize.cfg
# The environment the committed outputs were made in: `make notebooks` and `make test` share it,
# so CI reproduces the committed numbers on any machine (FEDBIO_THREADS pins torch's threads).
PINNED  := FEDBIO_PROFILE=quick FEDBIO_THREADS=2 PYTHONHASHSEED=0

.PHONY: setup demo test lint bench notebooks figures clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-ci.txt
	python3 -m venv $(VENV)
	$(PIP) install -q $(FIND) "$(TORCH)"
	$(PIP) install -q $(FIND) -r requirements-ci.txt -e ".[notebooks,dev]"
	@touch $@

demo: setup
	$(VENV)/bin/fedbio demo --out $(RUNS)/demo

# Each test run has a pytest folder of its own: runs sharing pytest's default folder
# (/tmp/pytest-of-$USER) prune each other's, so two at once (two checkouts) would fail.
test: setup
	$(PINNED) FEDBIO_SIM_TIMEOUT=$(SIM_TIMEOUT) MPLBACKEND=Agg $(PY) -m pytest $(NBVAL) --nbval-cell-timeout=$(NB_TIMEOUT) --timeout=$(TEST_TIMEOUT) -p no:cacheprovider \
	  --basetemp="$$(mktemp -d "$${TMPDIR:-/tmp}/fedbio-tests.XXXXXX")" tests notebooks

# Execute every notebook from an empty run cache and write it back with its outputs (~25 min on 2 cores).
notebooks: setup
	$(PINNED) $(PY) -m fedbio.reporting.notebooks notebooks/*.ipynb --runs $(RUNS)/notebooks

# The README's figures and the numbers behind them, into docs/img/ (runs cached in $(RUNS)/figures).
figures: setup
	$(PINNED) $(PY) -m fedbio.reporting.figures docs/img --runs $(RUNS)/figures --overwrite

lint: setup
	$(VENV)/bin/ruff check fedbio tests

bench: setup
	$(VENV)/bin/fedbio bench train --full
	$(VENV)/bin/fedbio bench fed --full
	$(VENV)/bin/fedbio bench deploy --full

clean:
	rm -rf $(RUNS) .pytest_cache
