# `make demo` and `make test` work on a fresh machine: they create .venv and install everything.
# TORCH pins the CPU wheel by default so that a CPU machine does not pull a multi-GB CUDA build;
# override it, e.g. `make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test,cosmo,baselines,plot,docs
PY := $(VENV)/bin/python

.PHONY: install demo test docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(PY) -m pyg_sphere.demo

test: install
	$(PY) -m pytest -q

docs: install
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	$(PY) -m sphinx -W --keep-going -q -b doctest docs docs/_build/doctest

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
