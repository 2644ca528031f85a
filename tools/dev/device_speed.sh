#!/usr/bin/env bash
# The backbone half of the speed issue's GPU item, as one script for a lent GPU machine (torch + timm only:
# the benchmark needs no mmengine/mmcv/mmdet/mmseg, tested by tests/test_benchmark_backbones.py).
# Every family's T-size and timm ConvNeXt-T (Conv2Former-T's reference), fp32, fp16 autocast and compiled,
# forward and forward+backward at the detection size; JSON and logs under $OUT (default work_dirs/device).
#
#   bash tools/dev/device_speed.sh                 # on the GPU machine, from the repository root
#   DEVICE=cpu SHAPE="64 64" REPEATS=1 WARMUP=0 bash tools/dev/device_speed.sh   # a smoke run anywhere
#
# Not covered: whole-model Mask R-CNN / UperNet training throughput, which needs mmdet/mmseg on that machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-800 1216}
REPEATS=${REPEATS:-20}
WARMUP=${WARMUP:-5}
OUT=${OUT:-work_dirs/device}
NAMES=${NAMES:-conv2former_t convnext_tiny convnextv2_tiny identityformer_s12 randformer_s12 poolformerv2_s12 \
convformer_s18 caformer_s18 unified_halo_tiny unified_swin_tiny unified_pvt_tiny unified_convnext_tiny \
unified_dcn_v3_tiny}
COMPILED=${COMPILED:-conv2former_t convnext_tiny}
mkdir -p "$OUT"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")' | tee "$OUT/env.txt"

bench() {  # bench LABEL ARGS...: one run of the benchmark, its table in $OUT/LABEL.log, raw numbers in .json
    local label=$1; shift
    echo "== $label: $(date +%T)"
    "$PY" tools/analysis/benchmark_backbones.py "$@" --device "$DEVICE" --shape $SHAPE --repeats "$REPEATS" \
        --warmup "$WARMUP" --json "$OUT/$label.json" 2>&1 | tee "$OUT/$label.log" | tail -n 30
}
# shellcheck disable=SC2086
bench fp32 $NAMES --reference conv2former_t=convnext_tiny
# shellcheck disable=SC2086
bench amp $NAMES --amp --reference conv2former_t=convnext_tiny
# shellcheck disable=SC2086
bench compiled $COMPILED --compile --no-memory
echo "== done: $(date +%T)"
