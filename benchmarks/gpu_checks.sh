#!/usr/bin/env bash
# The CUDA checks and GPU figures in one run, on a machine with a CUDA GPU (about 8 minutes):
#   benchmarks/gpu_checks.sh [RESULTS_DIR]
# Runs the cuda-marked tests, the quick benchmark on the GPU, and configs/shakespeare.yaml for
# a few minutes (then eval and a sample). Each part runs even if an earlier one fails.
set -uo pipefail
results=${1:-benchmarks/results}
minutes=${MINUTES:-3}
py=${PYTHON:-python3}
mkdir -p "$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CHARRNN_CACHE_DIR=${CHARRNN_CACHE_DIR:-/tmp/charrnn-cache}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c 'import torch, typer; print("torch", torch.__version__, "typer", typer.__version__, torch.cuda.get_device_name())'

echo "== cuda-marked tests"
timeout 300 $py -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tail -n 15

echo "== quick benchmark on the GPU"
timeout 300 $py benchmarks/bench.py --quick --device cuda --out "$results/gpu-quick.json" \
  2>"$results/gpu-bench.log"

echo "== configs/shakespeare.yaml for $minutes minutes"
$py -m charrnn train configs/shakespeare.yaml --out /tmp/gpu-shakespeare --force \
  --max-minutes "$minutes" --set train.log_every=250 2>&1 | tail -n 8
$py -m charrnn eval -c /tmp/gpu-shakespeare --json
$py -m charrnn info /tmp/gpu-shakespeare
$py -m charrnn sample -c /tmp/gpu-shakespeare --prime "ROMEO:" --length 400 --seed 1 -q
