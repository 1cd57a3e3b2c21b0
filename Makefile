# Set-up and everyday commands. `make demo` installs into .venv and runs both jobs of the tool on
# the bundled example; `make test` runs the test suite (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := out/demo
EXAMPLE := examples/kodim23_crop128.png

.PHONY: install demo test lint fuzz bench bench-quick clean

install: $(STAMP)

# torch is pinned first: 2.13.0 is a local CPU wheel here, an unpinned torch pulls a CUDA build.
# The ray extra (`lottery batch --ray`, ~15 s and ~250 MB more) is installed so the tests run its round trip.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,ray]'
	touch $(STAMP)

# Compression (compress, decode, inspect), then a denoising restore of a noisy copy, shown side by side.
demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/lottery compress $(EXAMPLE) -o $(DEMO)/kodim23.lottery --steps 300
	$(BIN)/lottery decompress $(DEMO)/kodim23.lottery -o $(DEMO)/kodim23.decoded.png
	$(BIN)/lottery info $(DEMO)/kodim23.lottery
	$(BIN)/lottery degrade $(EXAMPLE) --task denoise --sigma 25 --seed 1 -o $(DEMO)/noisy.png
	$(BIN)/lottery restore $(DEMO)/noisy.png --task denoise --reference $(EXAMPLE) --ensemble 2 --steps 600
	$(BIN)/python examples/side_by_side.py $(DEMO)/denoise.png noisy=$(DEMO)/noisy.png \
		restored=$(DEMO)/noisy.restored.png original=$(EXAMPLE)
	@echo "see $(DEMO)/: kodim23.decoded.png, denoise.png (noisy | restored | original)"

test: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks examples

# >= 10,000 mutated .lottery files through the decoder, each in a worker with a time and memory limit.
fuzz: install
	$(BIN)/python tests/fuzz_lottery.py --cases 10000 --workers 2

bench-quick: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m benchmarks --quick

bench: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf out .pytest_cache
