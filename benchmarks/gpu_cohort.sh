#!/usr/bin/env bash
# Issue 21's GPU measurements in one script, for a lent GPU box (the `device` tool) or any CUDA machine:
#   (1) the read stage against its decode bound with the box's cores;
#   (2) dnd extract (b) against CLAM's own loop (a: read_region dataset, DataLoader with 8 workers, pinned memory,
#       batch 256, fp32) over the bundled + TCGA + a 20480-px pyramid x 12 (the absolute rate: goal >= 8k patches/s);
#   (3) slides per hour for 1 process, --devices over every GPU, 2 processes on one folder and Ray local.
# Random weights (speed does not depend on them). Outputs under $OUT (default benchmarks/results/gpu-<date>/).
# Usage: bash benchmarks/gpu_cohort.sh            (about 8 minutes on an H100 box with 16 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpus.txt"
$PY benchmarks/extract_throughput.py --read-bound --device cuda 2>&1 | tee "$OUT/read_bound.txt"
$PY benchmarks/extract_throughput.py --device cuda --batch-size 256 --copies 12 2>&1 | tee "$OUT/throughput.txt"
# dnd extract needs a weights file for resnet50_trunc: random ImageNet-shaped weights made here
$PY -c "import torch, torchvision; torch.save(torchvision.models.resnet50().state_dict(), '$OUT/r50_random.pth')"
$PY benchmarks/extract_scale.py --device cuda --extractor resnet50_trunc --weights "$OUT/r50_random.pth" \
    --slides 24 --size 8192 --batch-size 256 2>&1 | tee "$OUT/scale.txt"
echo "results in $OUT"
