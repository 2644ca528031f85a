# The two set-up commands of a fresh machine (each installs what it needs, idempotently, into .venv):
#   make demo   train + evaluate the toy detector and segmentor on the embedded synthetic data
#   make test   run the test suite
PY := .venv/bin/python

.PHONY: install install-cuda demo test
install:
	@bash tools/install.sh

install-cuda:
	@bash tools/install.sh --cuda

demo: install
	$(PY) tools/run_demo.py

test: install
	$(PY) -m pytest -q tests
