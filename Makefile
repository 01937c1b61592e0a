# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= .ci/constraints.txt
DEMO_DIR ?= demo_work

.PHONY: install test demo demo-brats demo-lesion lint clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

demo: install
	bash scripts/demo.sh $(VENV)/bin/clinix $(DEMO_DIR)

demo-brats: install
	bash scripts/demo.sh $(VENV)/bin/clinix $(DEMO_DIR)_brats brats

demo-lesion: install
	bash scripts/demo.sh $(VENV)/bin/clinix $(DEMO_DIR)_lesion lesion

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)_brats $(DEMO_DIR)_lesion clinix_work .pytest_cache
