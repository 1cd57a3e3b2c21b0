# Set-up and everyday commands. `make demo` installs into .venv and runs the main job on the
# bundled example; `make test` runs the test suite (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench bench-quick clean

install: $(STAMP)

# torch is pinned first: 2.13.0 is a local CPU wheel here, an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	rm -rf out/demo && mkdir -p out/demo
	$(BIN)/lottery compress examples/kodim23_crop128.png -o out/demo/kodim23.lottery --steps 300
	$(BIN)/lottery decompress out/demo/kodim23.lottery -o out/demo/kodim23.decoded.png
	$(BIN)/lottery info out/demo/kodim23.lottery

test: install
	$(BIN)/python -m pytest

bench-quick: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m benchmarks --quick

bench: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf out .pytest_cache
