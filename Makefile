# FusionRx: `make demo` (set up + run the demo cohort end to end), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= demo_data
DEMO_STORE ?= demo_store
PATIENTS ?= 60
SEED ?= 7

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# torch is installed first, pinned to the CPU build (2.13.0) so that pip never pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/fusionrx demo-data --out $(DEMO_DATA) --patients $(PATIENTS) --seed $(SEED)
	$(BIN)/fusionrx run --catalog data_catalog.yaml --store $(DEMO_STORE)
	$(BIN)/fusionrx experiments --store $(DEMO_STORE)
	$(BIN)/fusionrx targets --store $(DEMO_STORE) --top 10

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/run_benchmarks.py

clean:
	rm -rf $(DEMO_DATA) $(DEMO_STORE)
