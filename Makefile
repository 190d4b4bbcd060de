# One venv, set up on first use. `make demo` runs the main job; `make test` runs the tests;
# `make lint` checks lint and formatting with ruff (configured in pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/nf demo

# The report's browser test opens index.html in Debian's chromium (headless); installed once, when missing.
browser:
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

# Two workers (pytest-xdist): most of the suite's time is spent waiting on subprocesses, Ray and servers,
# so two workers on two cores finish it sooner than one (the two longest files open the two halves:
# tests/conftest.py).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_chips.py
	$(BIN)/python benchmarks/bench_eopm.py
	$(BIN)/python benchmarks/bench_orchestration.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_pa.py
	$(BIN)/python benchmarks/bench_gpu.py
	$(BIN)/python benchmarks/bench_beyond.py
	$(BIN)/python benchmarks/bench_schedule.py
	$(BIN)/python benchmarks/bench_status.py

clean:
	rm -rf $(VENV) runs .pytest_cache
