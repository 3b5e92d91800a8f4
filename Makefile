# Two front doors: `make demo` (the whole synthetic pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

$(BIN)/activate: pyproject.toml requirements.lock requirements-dev.lock requirements-nodeps.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(BIN)/activate

.PHONY: setup demo test test-quick clean
setup: $(BIN)/activate

demo: setup
	$(BIN)/python tools/demo.py

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

test-quick: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow"

clean:
	rm -rf $(VENV) demo_output
