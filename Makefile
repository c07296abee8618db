# Two entry points, each self-contained on a fresh clone: `make demo` and `make test`.
# Both create .venv when missing and install reidprune with all its extras into it, at the exact
# versions of constraints.txt (reinstalled when pyproject.toml or constraints.txt changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
LOCK_VENV := .venv-lock

.PHONY: demo test lint bench gpu-check lock clean

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

# every CPU benchmark; gpu_check.py needs a GPU and has its own target
bench: $(STAMP)
	for script in benchmarks/*.py; do \
	  [ "$$script" = benchmarks/gpu_check.py ] || $(PY) $$script || exit 1; done

# One CUDA GPU: data, bf16 / fp16 training, pruning, GPU evaluation, throughput (eager and
# torch.compile), ONNX Runtime CUDA, TensorRT, DDP on 2 GPUs -> benchmarks/results/gpu_check.json.
# `$(PY) benchmarks/gpu_check.py --smoke` runs the same steps on the CPU in tiny sizes.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

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
	rm -rf $(VENV) $(LOCK_VENV) build src/*.egg-info .pytest_cache .ruff_cache gpu_check_work
