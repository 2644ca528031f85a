#!/usr/bin/env bash
# Training under Slurm (one task per GPU, --launcher slurm).
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py ARGS...]
# Environment: GPUS (total tasks, default 8), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5), SRUN_ARGS
# (extra srun options), PORT (master port, exported as MASTER_PORT; mmengine defaults to 29500),
# PYTHON (default: the project's .venv/bin/python if present, else python). See tools/_srun.sh.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
  exit 2
fi
PARTITION=$1 JOB_NAME=$2 CONFIG=$3 WORK_DIR=$4
shift 4
exec bash "$(dirname "${BASH_SOURCE[0]}")/_srun.sh" "$PARTITION" "$JOB_NAME" train "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "$@"
