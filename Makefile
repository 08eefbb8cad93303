# The two set-up commands: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DIR ?= demo-output
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install bench train-bundled clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real_weights"

bench: $(STAMP)
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/identification.py
	$(BIN)/python bench/encoding.py
	$(BIN)/python bench/bundled_quality.py

train-bundled: $(STAMP)
	$(BIN)/brain2image train-bundled --work .train-bundled

clean:
	rm -rf $(DIR) .pytest_cache
