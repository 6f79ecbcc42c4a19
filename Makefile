# `make recipe` runs the main job, `make test` the tests; each builds .venv by itself first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The oldest jax CI tests (pyproject.toml: jax>=$(FLOOR_JAX)); its own venv, core tests only.
FLOOR_JAX ?= 0.6.2
FLOOR_VENV ?= .venv-floor
CORE_TESTS := tests/test_core.py tests/test_optimizers.py tests/test_transforms.py tests/test_hyper.py \
	tests/test_flat.py tests/test_bad_input.py tests/test_multi_tensor.py tests/test_clients.py \
	tests/test_schedules.py tests/test_readme.py tests/test_kfac.py tests/test_kfac_layers.py \
	tests/test_kfac_optimizer.py tests/test_kfac_distributed.py tests/test_kfac_linalg.py
# Modules whose docstring examples run as doctests.
DOCTEST_MODULES := gradchain/core.py gradchain/hyper.py gradchain/optimizers.py gradchain/state.py

.PHONY: recipe demo test test-all test-floor test-wheel doctest lint docs bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,lint,docs]"
	touch $@

recipe: $(VENV)/.installed
	$(PY) -m gradchain recipe

demo: $(VENV)/.installed
	$(PY) -m gradchain demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --runslow

# The wheel in a fresh venv with core dependencies only, run from an empty directory.
test-wheel: $(VENV)/.installed
	$(PY) -m pytest -q --runslow tests/test_packaging.py

doctest: $(VENV)/.installed
	$(PY) -m pytest -q --doctest-modules $(DOCTEST_MODULES)

$(FLOOR_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install -q "jax==$(FLOOR_JAX)" "jaxlib==$(FLOOR_JAX)" -e ".[test-core]"
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -q -n 2 -p no:cacheprovider $(CORE_TESTS)

# ruff (rules in pyproject.toml) and basedpyright (pyright, standard mode; include/exclude there).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check gradchain tests
	$(VENV)/bin/basedpyright --project . --pythonpath $(PY)

# The notebooks run during the build, in their small setting (docs/conf.py: inline figures).
docs: $(VENV)/.installed
	rm -rf docs/_build docs/generated docs/notebooks
	GRADCHAIN_SMALL=1 $(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

bench: $(VENV)/.installed
	$(PY) benchmarks/update_step.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) demo-output gradchain-report .pytest_cache docs/_build docs/generated
