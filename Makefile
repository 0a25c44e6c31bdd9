# Two commands do everything: `make demo` (the study on the embedded data) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-e2e test-gpu lint dashboard preview clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m deblur.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-e2e: $(STAMP)
	$(PY) -m pytest -q -m e2e

# on a machine without the venv (the GPU machine): make test-gpu PY=python3
test-gpu: $(if $(filter $(PY),$(VENV)/bin/python),$(STAMP))
	$(PY) -m pytest -q -m gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

preview: $(STAMP)
	$(PY) -m deblur.data.preview

dashboard: $(STAMP)
	$(PY) -m deblur.dashboard

clean:
	rm -rf runs .pytest_cache
