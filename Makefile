# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch goes in first: an unpinned torch pulls several GB of CUDA packages.
# Elsewhere: make install TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install assets demo test test-fast docs-check lint clean

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
# 15 minutes on a 2-core CPU (README: Results on the embedded default): one sweep folder filled
# by five multiruns, since Hydra's sweeper crosses every list and each method wants its own k
# and candidates; the last one's report covers them all. Re-running it resumes. It prints the
# machine's fp32 matmul peak before and after, and its wall time, so a reader can scale it.
DEMO_TEST_SIZE ?= 200
DEMO := experiment=compare_regimes sweep_name=demo task.test_size=$(DEMO_TEST_SIZE) seed=0,1,2
NO_REPORT := '~hydra.callbacks.report'
PEAK := $(BIN)/python -c "from shotlab.tracking import matmul_peak; print(f'make demo: fp32 matmul peak {matmul_peak():.0f} GFLOP/s (2048x2048, this CPU now)')"
demo: install
	@mkdir -p outputs/sweeps/demo && date +%s > outputs/sweeps/demo/.started
	@$(PEAK)
	$(BIN)/python -m shotlab.train $(DEMO) $(NO_REPORT) method=prompt,prompt_probe,prompt_finetune regime.k=0
	$(BIN)/python -m shotlab.train $(DEMO) $(NO_REPORT) method=prompt_calibrated regime.k=4
	$(BIN)/python -m shotlab.train $(DEMO) $(NO_REPORT) method=linear_probe regime.k=4,16 optimizer.lr=1e-3,1e-2
	$(BIN)/python -m shotlab.train $(DEMO) $(NO_REPORT) method=prompt_probe regime.k=4,16
	$(BIN)/python -m shotlab.train $(DEMO) method=prompt_finetune regime.k=4,16
	@$(PEAK)
	@echo "make demo: $$(( $$(date +%s) - $$(cat outputs/sweeps/demo/.started) )) s wall; report: outputs/sweeps/demo/report.md"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

# Every command, script, path and link the README and docs/ name exists (also part of make test).
docs-check: install
	$(BIN)/python -m pytest -q tests/test_docs.py

lint: install
	$(BIN)/ruff check src tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache
