# The two commands of the README:
#   make demo   - create the environment if needed, run the demo deck on 4 MPI ranks, summarise it
#   make test   - create the environment if needed, run the whole test suite
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean-runs

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mpiexec -n 4 $(PY) -m rewl run inputs/quick.toml --force
	$(PY) -m rewl info runs/quick

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m rewl bench inputs/quick.toml --walkers 512

clean-runs:
	rm -rf runs
