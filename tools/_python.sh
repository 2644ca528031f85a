# Sourced by the launchers (_torchrun.sh, _srun.sh): ROOT (the repository) and PYTHON (default: the
# project's .venv/bin/python if present, else python).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
