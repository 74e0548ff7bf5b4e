# dgsolve — `make help` lists the targets.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
RUN_ARGS ?= algo=stackelberg_ppo env=simple_adversary
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench clean
STAMP := .install.stamp

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

install: ## install dgsolve, its dev tools, OpenSpiel, the sweep launchers and W&B (CPU torch 2.13.0 first where torch is missing)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,openspiel,sweep,ray,wandb]"
	@touch $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) install

run: $(STAMP) ## install if needed, then train Stackelberg PPO on simple_adversary (4M steps, minutes)
	$(PYTHON) -m dgsolve.cli $(RUN_ARGS)

test: $(STAMP) ## install if needed, then run the test suite
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

lint: ## ruff check and format check
	$(PYTHON) -m ruff check dgsolve tests benchmarks
	$(PYTHON) -m ruff format --check dgsolve tests benchmarks

bench: ## print the benchmark figures (JSON)
	$(PYTHON) benchmarks/overhead.py
	$(PYTHON) benchmarks/mpe_throughput.py
	$(PYTHON) benchmarks/bargain_throughput.py

clean: ## remove build files and caches (keeps outputs/)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache $(STAMP)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
