#!/usr/bin/env bash
# Testing under Slurm (one task per GPU, --launcher slurm).
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py ARGS...]
# Environment: GPUS (total tasks, default 8), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5), SRUN_ARGS
# (extra srun options), PORT (master port, exported as MASTER_PORT; mmengine defaults to 29500),
# PYTHON (default: the project's .venv/bin/python if present, else python). See tools/_srun.sh.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]" >&2
  exit 2
fi
PARTITION=$1 JOB_NAME=$2 CONFIG=$3 CHECKPOINT=$4
shift 4
exec bash "$(dirname "${BASH_SOURCE[0]}")/_srun.sh" "$PARTITION" "$JOB_NAME" test "$CONFIG" "$CHECKPOINT" --launcher=slurm "$@"
