# The two set-up commands of a fresh machine (each installs what it needs, idempotently, into $(VENV)):
#   make demo   train + evaluate the toy detector and segmentor on the embedded synthetic data
#   make test   run the test suite
# VENV=DIR uses an existing environment instead of ./.venv and keeps its torch (e.g. VENV=$$CONDA_PREFIX).
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist worker processes: the suite is ~1500 small CPU tests (2 workers on 2 cores: 7 min instead of 11)
TEST_JOBS ?= 2
export VENV

.PHONY: install install-full-mmcv demo test
install:
	@bash tools/install.sh

install-full-mmcv:
	@bash tools/install.sh --full-mmcv

demo: install
	$(PY) tools/run_demo.py

test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) tests
