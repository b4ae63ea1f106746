# Two entry points: `make demo` and `make test`. Both create .venv in the repo
# root and install everything into it. torch is pinned first: a looser torch
# requirement would pull the CUDA build (gigabytes) from the registry.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# Where torch comes from: empty for the default index (the CPU build here), or
# e.g. https://download.pytorch.org/whl/cu128 for a CUDA build (docker/).
TORCH_INDEX ?=
EXTRAS ?= pipeline,reader,dev
STAMP := $(VENV)/.installed

.PHONY: venv install demo test test-all lint format bench gpu-check clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	$(MAKE) install
	touch $(STAMP)

# The install steps, also used by the images in docker/ (with VENV, EXTRAS, TORCH_INDEX).
install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e '.[$(EXTRAS)]'

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check tristream tests benchmarks scripts
	$(VENV)/bin/ruff format --check tristream tests benchmarks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format tristream tests benchmarks scripts
	$(VENV)/bin/ruff check --fix tristream tests benchmarks scripts

bench: $(STAMP)
	$(PY) benchmarks/pipeline.py

# The prepared TV-L1 GPU check (under 5 minutes): runs with the Python that has a CUDA
# torch and Triton (no Beam, no OpenCV contrib, no network needed), e.g. on a lent GPU host.
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info demo-out
