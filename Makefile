# Severstal steel-defect pipeline. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
RUN_DIR ?= runs/default
N_TRAIN ?= 1000
N_TEST ?= 200
SEED ?= 0
N_FOLDS ?= 5
FOLD ?= all
TRAIN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint sample-data stats folds train bench bench-model clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the package (editable) with its dev extra

lint: install ## flake8 over the package, tests and benchmarks
	$(PY) -m flake8 pipeline tests bench

test: lint ## lint, then run the test suite
	$(PY) -m pytest

sample-data: install ## write the synthetic dataset to DATA_DIR (N_TRAIN, N_TEST, SEED)
	$(PY) -m pipeline synth --out $(DATA_DIR) --n-train $(N_TRAIN) --n-test $(N_TEST) --seed $(SEED)

stats: install ## summarise the dataset in DATA_DIR
	$(PY) -m pipeline stats --data-dir $(DATA_DIR)

folds: install ## write RUN_DIR/folds.csv (N_FOLDS stratified folds)
	$(PY) -m pipeline folds --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --n-folds $(N_FOLDS) --seed $(SEED)

train: install ## train FOLD (all, or e.g. 2) into RUN_DIR; extra flags in TRAIN_ARGS
	$(PY) -m pipeline train --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --fold $(FOLD) $(TRAIN_ARGS)

bench-model: install ## CPU model benchmark: forward/training images/s vs the matmul limit
	$(PY) bench/bench_model_cpu.py

bench: install ## RLE encode/decode benchmark against the common Kaggle-kernel code
	$(PY) bench/bench_rle.py

clean: ## remove caches (keeps .venv, data and runs)
	rm -rf .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
