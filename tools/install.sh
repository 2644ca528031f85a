#!/usr/bin/env bash
# Idempotent install of the verified stack into a project-local virtual environment (.venv).
# Usage: tools/install.sh [--cuda]
#   --cuda  build mmcv's CUDA ops from source (needs nvcc matching torch's CUDA); default is CPU ops.
# Re-running is cheap: a stamp file records the installed requirement set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
CUDA=0
[ "${1:-}" = "--cuda" ] && CUDA=1

STAMP=$VENV/.stack-stamp
WANT="$(cat requirements/*.txt tools/install.sh | sha1sum | cut -c1-12)-cuda$CUDA"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import mmcv, mmdet, mmseg, timm" 2>/dev/null; then
  exit 0
fi

command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
echo "[install] torch + torchvision (pinned)"
$PIP install -q -r requirements/torch.txt
echo "[install] build helpers for mmcv"
$PIP install -q "setuptools<81" wheel ninja packaging
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  WHEELS=""
  SHARED="$ROOT/../shared/wheels"
  if [ "$CUDA" = 0 ] && [ -d "$SHARED" ]; then
    WHEELS="--find-links $SHARED"
    echo "[install] mmcv 2.1.0 (prebuilt wheel from $SHARED when it matches, else source build, 8-12 min)"
  else
    echo "[install] mmcv 2.1.0 from source with ops (8-12 min on 2 cores)"
  fi
  # --no-cache-dir: pip's wheel cache keys mmcv by its sdist only, not by the torch it was built against.
  MMCV_WITH_OPS=1 FORCE_CUDA=$CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    $PIP install --no-cache-dir --no-build-isolation $WHEELS "mmcv==2.1.0"
fi
echo "[install] OpenMMLab + timm + test tools (pinned)"
$PIP install -q -r requirements/runtime.txt -r requirements/tests.txt
"$VENV/bin/python" - <<'PY'
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmdet, mmseg, timm
print(f"[install] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")
PY
echo "$WANT" > "$STAMP"
