#!/usr/bin/env bash
# Idempotent install of the stack into a Python environment; nothing is compiled.
#
#   bash tools/install.sh                 # into ./.venv (created if missing)
#   VENV=$CONDA_PREFIX bash tools/install.sh   # into an existing environment (conda, venv, ...)
#   bash tools/install.sh --full-mmcv     # opt-in: full mmcv 2.1.0 with compiled ops, built from source
#
# torch: a torch + torchvision already in the environment (any 2.x build: CUDA 12.x, ROCm, CPU, newer
# releases) is kept, and every later pip call is constrained to it; the pinned pair of
# requirements/torch.txt is installed only when there is none.
# mmcv: an mmcv 2.0/2.1 already there (full or lite) is kept; otherwise the pure-Python mmcv-lite 2.1.0,
# whose ops (RoIAlign, NMS) this project provides on torchvision (glue/mmcv_ops.py).
# Then the pinned OpenMMLab stack, timm and the test tools, and this repository as an editable package
# (`pip install -e .`: backbones, detection, segmentation, glue importable from anywhere).
# Re-running is cheap: a stamp file records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
FULL_MMCV=0
for a in "$@"; do
  case $a in
    --full-mmcv) FULL_MMCV=1 ;;
    *) echo "usage: [VENV=DIR] bash tools/install.sh [--full-mmcv]" >&2; exit 2 ;;
  esac
done

STAMP=$VENV/.dense-backbones-stamp
WANT="$(cat requirements/*.txt pyproject.toml tools/install.sh | sha1sum | cut -c1-12)-full$FULL_MMCV-$ROOT"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
   "$VENV/bin/python" -c "import torch, torchvision, mmcv, mmdet, mmseg, timm, backbones, glue" 2>/dev/null; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PY" >/dev/null || PY=python3
  echo "[install] creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP="$VPY -m pip"

# ---- torch: keep the environment's, or install the pinned pair
if "$VPY" - 2>/dev/null <<'PY'
import torch, torchvision
from torchvision.ops import nms
nms(torch.zeros(1, 4), torch.ones(1), 0.5)  # torchvision's compiled ops match this torch
PY
then
  echo "[install] keeping the environment's torch $("$VPY" -c 'import torch; print(torch.__version__)') + torchvision $("$VPY" -c 'import torchvision; print(torchvision.__version__)')"
elif "$VPY" -c "import torch" 2>/dev/null; then
  TV=$("$VPY" -c 'from importlib.metadata import version; print(version("torch"))')
  echo "[install] torch $TV is there without a working torchvision: installing the torchvision built for it"
  $PIP install -q torchvision "torch==$TV" || {
    echo "[install] no torchvision release matches torch $TV: install the matching torchvision from the index that gave you torch" >&2; exit 1; }
else
  echo "[install] no torch in $VENV: installing the pinned torch + torchvision (requirements/torch.txt)"
  $PIP install -q -r requirements/torch.txt
fi
CONSTRAINTS=$VENV/.torch-constraints.txt
# the distributions' own versions (torch.__version__ may carry a local tag, e.g. +cu130, that pip's metadata lacks)
"$VPY" -c "from importlib.metadata import version as v; print(f\"torch=={v('torch')}\ntorchvision=={v('torchvision')}\")" > "$CONSTRAINTS"

# ---- mmcv: keep an installed 2.0/2.1 (full or lite), else mmcv-lite; --full-mmcv builds the ops
MMCV_OK=$("$VPY" -c "
import importlib.util as u, sys
if u.find_spec('mmcv') is None: sys.exit()
import mmcv
from packaging.version import Version
print(int(Version('2.0.0rc4') <= Version(mmcv.__version__) < Version('2.2.0')))" 2>/dev/null || true)
if [ "$FULL_MMCV" = 1 ]; then
  if ! "$VPY" -c "import mmcv._ext" 2>/dev/null; then
    echo "[install] --full-mmcv: building mmcv 2.1.0 with its compiled ops (8-12 min on 2 cores; CUDA ops when nvcc is found)"
    $PIP uninstall -q -y mmcv-lite mmcv 2>/dev/null || true
    $PIP install -q -c "$CONSTRAINTS" "setuptools<81" wheel ninja packaging
    FORCE_CUDA=0
    if command -v nvcc >/dev/null && "$VPY" -c "import torch, sys; sys.exit(torch.version.cuda is None)"; then FORCE_CUDA=1; fi
    # --no-cache-dir: pip's wheel cache keys mmcv by its source archive only, not by the torch it was built against
    MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $PIP install --no-cache-dir --no-build-isolation -c "$CONSTRAINTS" ${MMCV_FIND_LINKS:+--find-links "$MMCV_FIND_LINKS"} "mmcv==2.1.0"
  fi
elif [ "$MMCV_OK" = 1 ]; then
  echo "[install] keeping the installed mmcv $("$VPY" -c 'import mmcv; print(mmcv.__version__)')"
else
  [ "$MMCV_OK" = 0 ] && echo "[install] the installed mmcv is outside mmdet 3.3's range [2.0, 2.2): replacing it with mmcv-lite 2.1.0"
  [ "$MMCV_OK" = 0 ] && $PIP uninstall -q -y mmcv mmcv-lite mmcv-full 2>/dev/null || true
  echo "[install] mmcv-lite 2.1.0 (pure Python; RoIAlign/NMS on torchvision)"
  $PIP install -q -c "$CONSTRAINTS" "mmcv-lite==2.1.0"
fi

echo "[install] OpenMMLab + timm + test tools (pinned) and this repository (editable)"
$PIP install -q -c "$CONSTRAINTS" -r requirements/runtime.txt -r requirements/tests.txt
$PIP install -q -c "$CONSTRAINTS" --no-deps -e "$ROOT"
"$VPY" - <<'PY'
import torch, torchvision, mmcv, mmengine, mmdet, mmseg, timm
import glue
from glue.mmcv_ops import compiled_mmcv_ops
ops = f'compiled ({compiled_mmcv_ops()})' if compiled_mmcv_ops() else 'torchvision (mmcv-lite)'
print(f"[install] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__} "
      f"(ops: {ops}), mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"timm {timm.__version__}, CUDA available: {torch.cuda.is_available()}")
PY
echo "$WANT" > "$STAMP"
