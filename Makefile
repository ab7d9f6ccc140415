# Every target builds .venv from nothing when it is missing, installing the pinned CPU torch first
# (a bare `torch` requirement would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url <PyTorch CPU wheel index>" on a
# machine with no local CPU wheel.
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-arviz-base lint format typecheck tutorials docs bench calibrate ci clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,dev]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/probgen demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow" -n 2 $(PYTEST_ARGS)

# The four MCMC fits of pyro.markov gallery entries take 2-7 minutes each: left out of this target
# to keep CI near 25 minutes; `make test-slow SLOW_K=` runs every slow test.
SLOW_K ?= not (markov and mcmc)

test-slow: setup
	$(BIN)/python -m pytest -q -m slow -n 2 --durations=40 -k "$(SLOW_K)" $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: no slow tests collected

lint: setup
	$(BIN)/ruff check probgen models inference tests tutorials benchmarks
	$(BIN)/ruff format --check probgen models inference tests tutorials benchmarks

format: setup
	$(BIN)/ruff format probgen models inference tests tutorials benchmarks
	$(BIN)/ruff check --fix probgen models inference tests tutorials benchmarks

typecheck: setup
	$(BIN)/mypy probgen models inference

tutorials: setup
	PROBGEN_FAST=1 MPLBACKEND=Agg $(BIN)/python tutorials/run_all.py

# The ArviZ tests again on the arviz-base / arviz-stats line (installed beside arviz 0.23).
ARVIZ_TESTS := tests/core/test_arviz.py tests/core/test_arviz_groups.py tests/core/test_arviz_export.py \
	tests/core/test_labelled_outputs.py
test-arviz-base: setup
	PROBGEN_ARVIZ=base $(BIN)/python -m pytest -q -m "not slow" -n 2 $(ARVIZ_TESTS) $(PYTEST_ARGS)

# The API reference and guides; tutorial pages show the figures `make tutorials` saved (none are
# run here).  Warnings are errors.
docs: setup
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

calibrate: setup  # simulation-based calibration over models x backends; refreshes docs/calibration.md
	$(BIN)/probgen calibrate --out docs/calibration.md $(CALIBRATE_ARGS)

bench: setup
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache docs/_build docs/tutorials
