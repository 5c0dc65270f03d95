#!/usr/bin/env bash
# The GPU benchmark as one command for a machine with a CUDA GPU (see bench/gpu_bench.py):
# every registered model at 256x1600, compile on, 20 timed steps after 5 warm-up ones.
#   bash bench/gpu_bench.sh [extra gpu_bench.py flags]        # OUT=folder for JSON + log
# Expected time on an H100/H200 (an estimate, not yet measured): 5-9 minutes for all 8 models,
# nearly all of it torch.compile (which counts: a training and an eval graph per model, shown
# as warm-up s); the timed steps take seconds. `timeout 560` keeps it inside a 10-minute slot;
# the JSON is rewritten after each model (FCN32 first), so a run stopped there keeps the rows it
# finished; the rest can follow with --models.
# Where segmentation_models_pytorch is not installed and cannot be downloaded, put its wheel
# (pure Python; its other needs, timm included, are common) in $WHEELS (default .whl/).
set -euo pipefail
OUT=${OUT:-.}
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import segmentation_models_pytorch" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/gpu_bench_site \
        "$WHEELS"/segmentation_models_pytorch-*.whl
    export PYTHONPATH=/tmp/gpu_bench_site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
PYTHONUNBUFFERED=1 timeout 560 "$PYTHON" bench/gpu_bench.py --out "$OUT/gpu_bench.json" "$@" \
    2>&1 | tee "$OUT/gpu_bench.log"
