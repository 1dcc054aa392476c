# Two commands do everything: `make localnet` (a whole local subnet) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The examples' CPU build of torch, installed before anything can ask for a CUDA one.
TORCH ?= 2.13.0

.PHONY: setup test localnet bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

test: setup
	bash scripts/test.sh

# A real subtensor node when CHAIN_URL is given, or when CHAIN_START (a script that starts a dev node and
# prints its URL) exists; the in-memory chain otherwise. ARGS go to `inference-subnet localnet`.
CHAIN_START ?= ../shared/chain/start.sh
localnet: setup
	@if [ -n "$(CHAIN_URL)" ]; then \
	  $(BIN)/inference-subnet localnet --chain real --chain-url "$(CHAIN_URL)" $(ARGS); \
	elif [ -f "$(CHAIN_START)" ]; then \
	  bash scripts/with-chain.sh "$(CHAIN_START)" $(BIN)/inference-subnet localnet --chain real $(ARGS); \
	else \
	  $(BIN)/inference-subnet localnet $(ARGS); \
	fi

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
