# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medseg-installed
# CPU build of torch on this machine kind; any other version pulls gigabytes of CUDA packages.
TORCH_VERSION := 2.13.0
TORCH := torch==$(TORCH_VERSION)

.PHONY: env demo test test-all lint format clean viewer-vendor

$(STAMP): pyproject.toml Makefile requirements-nnunet.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,nnunet]" $(TORCH) -c constraints.txt
	# nnunetv2 without its declared timm/torchvision (see requirements-nnunet.txt)
	$(BIN)/python -m pip install -q --no-deps -r requirements-nnunet.txt -c constraints.txt
	$(BIN)/python -c "import sys, torch; v = torch.__version__; sys.exit(None if v.split('+')[0] == '$(TORCH_VERSION)' else 'torch was replaced: ' + v)"
	touch $(STAMP)

# NiiVue (the viewer's WebGL library, BSD-2-Clause) comes from npm at build time and is copied into the
# package, so `medseg view` fetches nothing at run time; the file is git-ignored, never committed.
NIIVUE_VERSION := 0.69.0
NIIVUE_SHA256 := 6e9a6a471b428eb3b258a0086beca9187d95e43a781a39e8a519c6da246af485
VENDOR := medseg/viewer/static/vendor

$(VENDOR)/niivue.umd.js: Makefile
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "make: npm not found, so NiiVue was not vendored: 'medseg view' and its browser tests need it" \
	       "(apt-get install npm, then 'make viewer-vendor')"; \
	else \
	  tmp=$$(mktemp -d) && \
	  (cd $$tmp && npm pack --silent @niivue/niivue@$(NIIVUE_VERSION) >/dev/null) && \
	  echo "$(NIIVUE_SHA256)  $$tmp/niivue-niivue-$(NIIVUE_VERSION).tgz" | sha256sum -c --quiet - && \
	  tar xzf $$tmp/niivue-niivue-$(NIIVUE_VERSION).tgz -C $$tmp package/dist/niivue.umd.js && \
	  mkdir -p $(VENDOR) && cp $$tmp/package/dist/niivue.umd.js $@.part && mv $@.part $@ && \
	  printf 'NiiVue %s (BSD-2-Clause, https://github.com/niivue/niivue), npm package @niivue/niivue, dist/niivue.umd.js\n' \
	    "$(NIIVUE_VERSION)" > $(VENDOR)/NIIVUE.txt; \
	  status=$$?; rm -rf $$tmp; exit $$status; \
	fi

viewer-vendor: $(VENDOR)/niivue.umd.js

env: $(STAMP) viewer-vendor

demo: $(STAMP) viewer-vendor
	$(BIN)/python -m medseg demo --output demo_output

test: $(STAMP) viewer-vendor
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-all: $(STAMP) viewer-vendor
	$(BIN)/python -m pytest -m ""

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) demo_output .pytest_cache
