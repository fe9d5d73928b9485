# The README's two commands: `make demo` (set up + run the main job) and `make test` (set up + run all tests).
PY := .venv/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export HF_HUB_OFFLINE ?= 1
export WANDB_SILENT ?= true
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m dpot demo --output_dir=outputs/demo

test: setup
	.venv/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/ot_solver.py

clean:
	rm -rf outputs .pytest_cache
