# `make recipe` runs the main job, `make test` the tests; each builds .venv by itself first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: recipe demo test test-all bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

recipe: $(VENV)/.installed
	$(PY) -m gradchain recipe

demo: $(VENV)/.installed
	$(PY) -m gradchain demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --runslow

bench: $(VENV)/.installed
	$(PY) benchmarks/update_step.py

clean:
	rm -rf $(VENV) demo-output gradchain-report .pytest_cache
