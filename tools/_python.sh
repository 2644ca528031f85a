# Sourced by the launchers (_torchrun.sh, _srun.sh): ROOT (the repository) and PYTHON (default: the
# python of $VENV, else of the project's .venv, else python on PATH).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VENV:-}" ] && [ -x "$VENV/bin/python" ]; then PYTHON="$VENV/bin/python"
  elif [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"
  else PYTHON=python; fi
fi
