# The two commands of the README: `make demo` (main job) and `make test`.
# Each makes its own virtual environment and installs what it needs (torch pinned to the CPU build
# by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check -c constraints.txt
CORE := $(VENV)/.core-installed
DEV := $(VENV)/.dev-installed

.PHONY: demo test test-all lint bench clean

$(CORE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(CORE)

$(DEV): $(CORE)
	$(PIP) -e '.[dev,bench,text,music,chem,data,tensorboard,hf,images,audio,motion,structures]'
	touch $(DEV)

demo: $(CORE)
	$(BIN)/unmask train digits --out runs/digits

# one test process per CPU core (at most 8: each holds its own copy of the data it loads), a whole
# file per process (module fixtures are built once)
test: $(DEV)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 8 --dist loadfile

test-all: $(DEV)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 8 --dist loadfile -m ''

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks

bench: $(DEV)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs
