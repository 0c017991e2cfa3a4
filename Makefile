# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch goes in first: an unpinned torch pulls several GB of CUDA packages.
# Elsewhere: make install TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install assets demo test test-fast lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m shotlab.fetch
	touch $@

install: $(VENV)/.installed

assets: install
	$(BIN)/python -m shotlab.fetch

# The regime comparison on the embedded default (smollm2-135m, movie_sentiment), cut to fit
# 15 minutes on a 2-core CPU (README: Results); re-running it resumes, skipping finished runs.
# DEMO_ARGS narrows or widens the grid.
DEMO_ARGS ?= method=prompt,linear_probe,finetune regime.k=0,1,4,null task.test_size=100 regime.min_steps=10 sweep_name=demo
demo: install
	$(BIN)/python -m shotlab.train experiment=compare_regimes $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache
