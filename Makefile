# Two entry points, each self-contained on a fresh clone: `make demo` and `make test`.
# Both create .venv when missing and install reidprune with all its extras into it, at the exact
# versions of constraints.txt (reinstalled when pyproject.toml or constraints.txt changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
LOCK_VENV := .venv-lock

.PHONY: demo test lint bench lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reidprune demo

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

# Upgrade the pins: install .[all] into a fresh venv without constraints (the newest releases that
# pyproject.toml allows) and freeze it into constraints.txt, keeping the file's comment lines and
# leaving reidprune itself out. Then run `make test` and commit constraints.txt.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[all]"
	{ grep '^#' $(CONSTRAINTS) || true; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i '^reidprune'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build src/*.egg-info .pytest_cache .ruff_cache
