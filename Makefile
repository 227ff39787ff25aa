# `make demo` and `make test` work on a fresh machine: they create .venv and install everything.
# TORCH pins the CPU wheel by default so that a CPU machine does not pull a multi-GB CUDA build;
# override it, e.g. `make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test,cosmo,baselines,plot,docs,train,inference
PY := $(VENV)/bin/python
# The oldest torch-geometric that pyproject.toml admits, tested in a venv of its own.
PYG_OLDEST ?= 2.5.3
VENV_OLDEST ?= .venv-pyg-oldest

.PHONY: install demo test test-slow test-pyg-oldest lint format docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(PY) -m pyg_sphere.apps.demo

# Fast tests (slow ones are deselected in pyproject.toml), doctests included.
test: install
	$(PY) -m pytest -q

# Only the heavier tests: larger graphs, full example runs.
test-slow: install
	$(PY) -m pytest -q -m slow

# The whole fast suite against the oldest supported torch-geometric.
test-pyg-oldest:
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet $(TORCH)
	$(VENV_OLDEST)/bin/python -m pip install --quiet -e ".[test,cosmo,baselines,plot,train,inference]" "torch-geometric==$(PYG_OLDEST)"
	$(VENV_OLDEST)/bin/python -c "import torch_geometric as g; assert g.__version__ == '$(PYG_OLDEST)', g.__version__"
	$(VENV_OLDEST)/bin/python -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# A fresh HTML tree: a page left from an earlier build would be served, and checked, too. The
# gallery's examples run again only when they changed (sphinx-gallery keeps docs/auto_examples).
docs: install
	rm -rf docs/_build/html
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	$(PY) docs/check_offline.py docs/_build/html
	$(PY) -m sphinx -W --keep-going -q -b doctest docs docs/_build/doctest

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(VENV_OLDEST) build *.egg-info
