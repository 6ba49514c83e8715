# Every target works from a clean clone: it creates .venv/ and installs what is missing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch. On this kind of machine pip finds the wheel on local disk; elsewhere
# set TORCH_INDEX=https://download.pytorch.org/whl/cpu to avoid a multi-GB CUDA download.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[serve,train,dev]"
	touch $@

demo: install
	$(VENV)/bin/cosrec demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/train_speed.py
	$(PY) bench/serve.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
