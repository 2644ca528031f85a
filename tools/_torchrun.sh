#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: torchrun SCRIPT with NPROC processes on this node.
#   tools/_torchrun.sh TAG NPROC SCRIPT [SCRIPT ARGS...]
# Environment: NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (on a single node a
# free port is picked when unset, so two jobs on one machine do not collide; 29500 for multi-node),
# PYTHON (default: the project's .venv/bin/python if present, else python).
set -euo pipefail
TAG=$1
NPROC=$2
SCRIPT=$3
shift 3
# shellcheck source=tools/_python.sh
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"  # ROOT, PYTHON
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if [ -z "${PORT:-}" ]; then
  if [ "$NNODES" -gt 1 ]; then
    PORT=29500
  else
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  fi
fi
echo "[$TAG] nodes=$NNODES node_rank=$NODE_RANK procs_per_node=$NPROC master=$MASTER_ADDR port=$PORT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" \
  --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" \
  --master_port="$PORT" \
  --nproc_per_node="$NPROC" \
  "$ROOT/tools/$SCRIPT" "$@"
