# The two commands of the README:
#   make demo   - create the environment if needed, run the demo deck on 4 MPI ranks, train the SGD
#                 baselines, draw the landscape and print equilibrium vs SGD at the SGD endpoint
#   make test   - create the environment if needed, lint, run the whole test suite
#   make test-fast - the in-process tests only (no subprocesses, nothing slow): under a minute
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
REWL   := $(VENV)/bin/rewl
STAMP  := $(VENV)/.installed
# the torch the suite is tested with (setup.cfg asks only for >= 2.11, the oldest it has run on);
# `make test TORCH=torch` takes whatever pip picks instead
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast lint bench clean-runs

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' '$(TORCH)'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mpiexec -n 4 $(REWL) run inputs/quick.toml --force
	$(REWL) info runs/quick
	$(REWL) sgd inputs/quick.toml --force
	$(REWL) analyse landscape runs/quick --sgd runs/quick/baseline.h5 -o runs/quick/landscape

test: lint
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not mpi and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(REWL) bench inputs/quick_wlmc.toml --walkers 512

clean-runs:
	rm -rf runs
