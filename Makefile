# Set-up and everyday commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
BENCH_ARGS ?=
# a test process per core (at most 4): most of a test's time is a charrnn process starting
TEST_ARGS ?= -n auto --maxprocesses 4 --durations 25

.PHONY: install test-deps test test-fast demo bench bench-quick sizing sizing-quick clean

install: $(VENV)/.installed

# torch first, pinned, so that the package's own range never pulls another (CUDA) build
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,tune,tensorboard,compress]"
	touch $@

# the browser the page tests drive: Debian's chromium, never a download at test time
test-deps: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: test-deps
	$(BIN)/python -m pytest -q $(TEST_ARGS)

test-fast: test-deps
	$(BIN)/python -m pytest -q -m "not slow" $(TEST_ARGS)

demo: install
	$(BIN)/charrnn train configs/tiny.yaml --out runs/demo --force
	$(BIN)/charrnn sample --checkpoint runs/demo --prime "sharks"

bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python benchmarks/bench.py --quick $(BENCH_ARGS)

# the sizing study behind the planner's constants: whole runs, on an idle machine
sizing: install
	$(BIN)/python benchmarks/sizing.py

sizing-quick: install
	$(BIN)/python benchmarks/sizing.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
