# Thin targets; every one runs inside .venv/ (created by `make install`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test keras-tests demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m ruff check keras_repro tests examples benchmarks
	$(PY) -m pytest -q tests keras_repro --doctest-modules --ignore=tests/programs

# Keras's own fit tests (copied from the installed wheel at run time), on plain Keras and with every
# model.fit routed through keras_repro.fit; fails if the two pass lists differ. Not in `make test`
# (~5 minutes on a 2-core machine; tests/test_keras_suite.py runs a routed sample there).
keras-tests: install
	$(PY) tests/keras_suite/run.py --save bench-out/keras-suite.json

demo: install
	$(PY) examples/seed_story.py --out demo-out

bench: install
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) demo-out bench-out runs build *.egg-info
