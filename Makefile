# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned in every install command so that pip never resolves another (CUDA) build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_SPEC)" "numpy>=1.24" versioneer
	$(PY) -c "import radiomics" 2>/dev/null || $(PIP) install -q --no-build-isolation "$(TORCH_SPEC)" "pyradiomics>=3.0.1"
	$(PIP) install -q -e ".[test]" "$(TORCH_SPEC)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vertebral-fracture demo -o demo-output --overwrite

test: $(STAMP)
	$(VENV)/bin/ruff check VertebralFractureLib VertebralFracture Testing
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo-output .pytest_cache
