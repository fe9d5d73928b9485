# The README's commands: `make demo` (set up + run the main job), `make check` (the development loop: ruff + the
# fast tests), `make test` (CI: ruff + every test, two workers).
PY := .venv/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export HF_HUB_OFFLINE ?= 1
export WANDB_SILENT ?= true
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo check test bench clean

RUFF := .venv/bin/ruff check src tests benchmarks scripts
# one unit of work per test file (or per group sharing a session fixture: tests/conftest.py) on each of 2 workers,
# handed out in the order tests/conftest.py sets (the units with slow tests first)
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder
TESTENV := OMP_NUM_THREADS=1   # one thread per worker: 2 workers on 2 cores

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m dpot demo --output_dir=outputs/demo

check: setup
	$(RUFF)
	$(TESTENV) $(PY) -m pytest -q -m "not slow" $(XDIST) tests

test: setup
	$(RUFF)
	$(TESTENV) $(PY) -m pytest -q $(XDIST) tests

bench: setup
	$(PY) benchmarks/ot_solver.py

clean:
	rm -rf outputs .pytest_cache
