#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun (torch.distributed.run).
#   tools/dist_train.sh CONFIG GPUS [train.py ARGS...]
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON (see tools/_torchrun.sh).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh" dist_train "$GPUS" train.py "$CONFIG" --launcher pytorch "$@"
