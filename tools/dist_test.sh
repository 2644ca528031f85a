#!/usr/bin/env bash
# Distributed testing on one or more nodes with torchrun (torch.distributed.run).
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py ARGS...]
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON (see tools/_torchrun.sh).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh" dist_test "$GPUS" test.py "$CONFIG" "$CHECKPOINT" \
  --launcher pytorch "$@"
