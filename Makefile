# Fresh machine: `make demo` and `make test` create .venv and install everything they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test install install-dev bench lint fuzz clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e ".[dev,hf]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/netarchitect design

test: install-dev
	$(PY) -m pytest -n 2 --cov=netarchitect --cov-report=term --cov-fail-under=90

bench: install-dev
	$(PY) -m benchmarks.run_all $(BENCH)

fuzz: install-dev
	$(PY) -m netarchitect.testing.fuzz --cases $(or $(CASES),10000)

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov
