# Every target works from a clean clone: it creates .venv/ and installs what is missing first.
#   make install   the virtual environment .venv/ with every extra (serve, train, dev, demo)
#   make demo      train on generated data and serve it (ARGS="--data log.csv" for your own file)
#   make test      the test suite
#   make lint      ruff
#   make bench     training speed and serving benchmarks (bench/results/)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# The CPU build of torch, pinned. Machines of this project's kind carry its wheel on local disk,
# where pip finds it. Elsewhere pass TORCH_INDEX=https://download.pytorch.org/whl/cpu: the pin
# names the +cpu build, so pip never falls back to PyPI's multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0+cpu
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
ARGS ?=

.PHONY: install demo test lint bench bench-ml1m compose-e2e ci clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)" || { \
	  echo "make: cannot install $(TORCH_SPEC); try: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu" >&2; \
	  exit 1; }
	$(PIP) -e ".[serve,train,dev,demo]"
	touch $@

demo: install
	$(VENV)/bin/cosrec demo $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/train_speed.py
	$(PY) bench/serve.py

# The paper's ML-1M experiment (40 epochs per model: hours on a CPU; ARGS="--device cuda").
bench-ml1m: install
	$(PY) bench/ml1m.py $(ARGS)

# The compose stack end to end on a private Docker engine (root; see .ci/compose-e2e.sh).
compose-e2e: install
	bash .ci/compose-e2e.sh

ci:
	bash .ci/run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo
