# Two commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
JS_STAMP := tests/js/node_modules/.installed-stamp

.PHONY: run playground test lint typecheck unit bench soak clean

# (the C kernels too: an edited one is rebuilt by the editable install)
KERNELS := $(wildcard pipeline/*.c stages/*.c stages/*/*.c stages/*/*/*.c)

$(STAMP): pyproject.toml Makefile setup.py $(KERNELS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Mermaid's own parser (npm) checks the charts `pipeline graph` draws; without npm those checks skip.
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/js --no-audit --no-fund --silent && touch $@ \
	  || echo "npm ci failed: the Mermaid parser checks will be skipped"; \
	else echo "npm not found: the Mermaid parser checks will be skipped"; fi

run: $(STAMP)
	$(BIN)/pipeline run pipelines.yaml

# Talk to the agent (the local emulator) from a browser tab; Ctrl-C stops the server.
playground: $(STAMP)
	$(BIN)/pipeline playground pipelines.yaml browser --open

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages tests benchmarks examples
	$(BIN)/ruff format --check pipeline stages tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(JS_STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/pipeline bench --quick

# Not part of `make test`: an hour of calls against `pipeline serve`, watched for leaks
# (SOAK_ARGS=--short: three minutes; SOAK_ARGS="--duration 900": fifteen).
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules
