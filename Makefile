# The two set-up commands: `make demo` and `make test`. Both create or refresh .venv.
# `make lint`: ruff (style, imports, numpydoc docstrings, complexity), mypy on src/, and the
# function-length check (tools/check_function_length.py); .ci/run runs it before the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DIR ?= demo-output
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-faults lint install bench bench-nsd train-bundled clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools

# torch + torchvision first, as the matched pair pinned in the lock file, so no other
# package can make pip pick a torch on its own.
$(STAMP): $(BIN)/python pyproject.toml requirements-lock.txt
	$(BIN)/pip install --quiet $$(grep -E '^(torch|torchvision)==' requirements-lock.txt)
	$(BIN)/pip install --quiet -r requirements-lock.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/brain2image demo --out $(DIR)

# Coverage of the package, one line per file not fully covered, before pytest's closing line.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real_weights and not faults" --cov=brain2image --cov-report=term:skip-covered

# The fault-injection suite: a small run killed with SIGKILL at every stage boundary and inside
# the heavy stages, resumed each time, must end identical to an uninterrupted run (minutes).
test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -rP -m faults

LINT_PATHS := src tests bench tools

# Every check runs, and the target fails when any of them found something.
lint: $(STAMP)
	@rc=0; \
	echo "lint: ruff check $(LINT_PATHS)"; $(BIN)/ruff check $(LINT_PATHS) || rc=1; \
	echo "lint: mypy src"; $(BIN)/mypy src || rc=1; \
	echo "lint: function length"; $(BIN)/python tools/check_function_length.py $(LINT_PATHS) || rc=1; \
	exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/identification.py
	$(BIN)/python bench/encoding.py
	$(BIN)/python bench/bundled_quality.py

# Every stage at NSD subject-1 size (hours on a CPU; simulates the NSD-size study first, 12 GB).
NSD_BENCH ?= nsd-bench
bench-nsd: $(STAMP)
	$(BIN)/python bench/nsd_scale.py --study $(NSD_BENCH)/study --work $(NSD_BENCH)/work

train-bundled: $(STAMP)
	$(BIN)/brain2image train-bundled --work .train-bundled

clean:
	rm -rf $(DIR) .pytest_cache .mypy_cache .ruff_cache .coverage
