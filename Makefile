# critpoint: two set-up commands, each doing its whole set-up on a fresh machine.
#   make demo   installs into .venv and runs the main job on the built-in data
#   make test   installs into .venv and runs lint, format check and the test suite
#
# TORCH picks the torch build: the default is the CPU wheel; a GPU user sets e.g.
#   make demo TORCH="torch==2.14.1"   (or any pip requirement for their build)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.critpoint-installed

.PHONY: demo test lint bench bench-scale install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Torch first (a range in pyproject would otherwise pull a multi-GB CUDA build),
# then the project with its extras, editable.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/critpoint demo -o critpoint-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint
	OMP_NUM_THREADS=1 MPLBACKEND=Agg CRITPOINT_SMOKE=1 $(BIN)/python -m pytest

# The peers are installed without their dependencies: curvlinops -> backpack ->
# torchvision would replace the CPU torch by a multi-GB CUDA build.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps "pyhessian==0.1" "hessian-eigenthings==1.0.0a5" \
		"curvlinops-for-pytorch==3.0.1" "einops>=0.8" "einconv>=0.1" "linear-operator>=0.6" "opt-einsum>=3.3"
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/engine.py --write
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run.py --write

# critpoint at scale (benchmarks/scale.py): ResNet-20 beside PyHessian and the
# default diagnosis of a ResNet-18, on one CPU thread (about an hour); the
# GPU section runs separately: python benchmarks/scale.py gpt2 --write
bench-scale: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps "pyhessian==0.1"
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/scale.py resnet20 --write
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/scale.py resnet18 --write

clean:
	rm -rf $(VENV) critpoint-demo build *.egg-info
