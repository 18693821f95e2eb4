# FusionRx: `make demo` (set up + run the demo cohort end to end), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= demo_data
DEMO_STORE ?= demo_store
PATIENTS ?= 60
SEED ?= 7
# the test suite runs on this many pytest-xdist workers (tests/conftest.py groups the tests that share a fixture)
PYTEST_WORKERS ?= 2

.PHONY: setup system-deps demo test bench clean

setup: $(VENV)/.installed

# torch is installed first, pinned to the CPU build (2.13.0) so that pip never pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# timm (pretrained slide encoders) without its dependencies: they would replace the CPU torch with a CUDA
	# build (torch 2.14 + torchvision); imaging/pretrained_encoder.py needs only torch and safetensors
	$(BIN)/python -m pip install --quiet --no-deps "timm==1.0.31"
	touch $@

# Debian packages the tests start for real (as root, once): Orthanc + DICOMweb plugin, Chromium + ChromeDriver
SYSTEM_PACKAGES := orthanc orthanc-dicomweb chromium chromium-driver
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: setup
	$(BIN)/fusionrx demo-data --out $(DEMO_DATA) --patients $(PATIENTS) --seed $(SEED)
	$(BIN)/fusionrx run --catalog data_catalog.yaml --store $(DEMO_STORE) || [ $$? -eq 3 ]  # 3: done, inputs skipped
	$(BIN)/fusionrx experiments --store $(DEMO_STORE)
	$(BIN)/fusionrx targets --store $(DEMO_STORE) --top 10

test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

bench: setup
	$(BIN)/python bench/run_benchmarks.py

clean:
	rm -rf $(DEMO_DATA) $(DEMO_STORE)
