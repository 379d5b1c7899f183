# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medseg-installed
# CPU build of torch on this machine kind; any other version pulls gigabytes of CUDA packages.
TORCH_VERSION := 2.13.0
TORCH := torch==$(TORCH_VERSION)

.PHONY: env demo test test-all lint format clean

$(STAMP): pyproject.toml Makefile requirements-nnunet.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,nnunet]" $(TORCH) -c constraints.txt
	# nnunetv2 without its declared timm/torchvision (see requirements-nnunet.txt)
	$(BIN)/python -m pip install -q --no-deps -r requirements-nnunet.txt -c constraints.txt
	$(BIN)/python -c "import sys, torch; v = torch.__version__; sys.exit(None if v.split('+')[0] == '$(TORCH_VERSION)' else 'torch was replaced: ' + v)"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m medseg demo --output demo_output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) demo_output .pytest_cache
