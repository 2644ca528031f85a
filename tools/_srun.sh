#!/usr/bin/env bash
# Shared by slurm_train.sh and slurm_test.sh: run "python tools/TOOL.py ARGS..." under srun,
# one task per GPU.   tools/_srun.sh PARTITION JOB_NAME TOOL [ARGS...]
# Environment: GPUS (total tasks, default 8), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5), SRUN_ARGS
# (extra srun options), PORT (master port, exported as MASTER_PORT; mmengine defaults to 29500),
# PYTHON (default: the project's .venv/bin/python if present, else python).
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
TOOL=$3
shift 3
# shellcheck source=tools/_python.sh
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"  # ROOT, PYTHON
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
if [ -n "${PORT:-}" ]; then export MASTER_PORT=$PORT; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
set -x
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
srun -p "$PARTITION" \
  --job-name="$JOB_NAME" \
  --gres=gpu:"$GPUS_PER_NODE" \
  --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 \
  $SRUN_ARGS \
  "$PYTHON" -u "$ROOT/tools/$TOOL.py" "$@"
