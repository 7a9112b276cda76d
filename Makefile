# vidnoise set-up: `make demo` and `make test` each create .venv, install and run.
# torch==2.13.0 (the CPU wheel on this machine's disk) is installed unless torch is
# already importable in .venv or TORCH_SPEC names another requirement.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_SPEC ?=
PYTEST_ARGS ?=

.PHONY: venv install-demo install-dev demo test test-slow lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true

venv: $(PY)
	@if [ -n "$(TORCH_SPEC)" ]; then \
		echo "installing torch from TORCH_SPEC=$(TORCH_SPEC)"; $(PIP) install -q "$(TORCH_SPEC)"; \
	elif $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "torch already importable: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "installing torch==2.13.0"; $(PIP) install -q torch==2.13.0; \
	fi

install-demo: venv
	$(PIP) install -q -e ".[demo]"

# k-diffusion is a reference for the sampler tests only: its sampling.py is read from the
# installed package; --no-deps keeps its heavy requirements (torchvision, wandb) out.
install-dev: venv
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps k-diffusion==0.1.1.post1

demo: install-demo
	$(PY) -m vidnoise demo

test: install-dev
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install-dev
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

bench: install-dev
	$(PY) benchmarks/bench_noise.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
