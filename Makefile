# deqexp: `make help` lists the targets.
PYTHON ?= python3
# pip takes the local CPU wheel for this pin; e.g. TORCH_SPEC="torch==2.5.1" for a CUDA build
TORCH_SPEC ?= torch==2.13.0
# LOCK=1: the exact, hash-checked versions in requirements.lock (torch stays TORCH_SPEC's);
# LOCK= installs from pyproject.toml's ranges instead
LOCK ?= 1
PROFILE ?= quick
PYTEST_ARGS ?=
# the default suite leaves out the end-to-end CLI runs (-m slow) and the SLURM cluster tests;
# ALL=1 runs everything (CI does)
ALL ?=
MARKERS := $(if $(ALL),,-m "not slow and not slurm")
# test files run on JOBS pytest-xdist workers (one thread each), a whole file to a worker: the
# SLURM and signal scenarios mostly wait, and the rest run beside them. JOBS=1: one process
JOBS ?= 2
XDIST := $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile --no-loadscope-reorder)

.PHONY: help install lock train test lint docs reproduce-paper report bench slurm-up slurm-down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

install: .install.stamp  ## install deqexp (editable) with torch pinned by TORCH_SPEC

.install.stamp: pyproject.toml requirements.lock
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(if $(LOCK),$(PYTHON) -m pip install -q --require-hashes -r requirements.lock,$(PYTHON) -m pip install -q -e ".[dev,docs]")
	$(PYTHON) -m pip install -q --no-deps -e .
	touch $@

lock:  ## rewrite requirements.lock (pip-compile, with hashes) from pyproject.toml; torch left to TORCH_SPEC
	$(PYTHON) -m pip install -q pip-tools
	$(PYTHON) scripts/lock.py

train: install  ## the main job: train one kGLM-initialised DEQ on the embedded default data
	$(PYTHON) -m deqexp.cli train init=kglm

test: install lint  ## lint, then the fast suite (ALL=1: also the CLI runs and SLURM tests)
	PYTHONUNBUFFERED=1 $(PYTHON) -m pytest $(MARKERS) $(XDIST) $(PYTEST_ARGS)  # each file named as it starts

docs: install  ## the docs site (mkdocs-material, mkdocstrings) into site/, built with --strict
	rm -rf docs/assets && mkdir -p docs/assets && cp -r results/paper docs/assets/paper
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

lint: install  ## ruff over the tree
	$(PYTHON) -m ruff check .

reproduce-paper: install  ## E1-E6 at PROFILE=quick|full|smoke, then tables and figures in results/paper
	$(PYTHON) scripts/reproduce_paper.py --profile $(PROFILE)

report: install  ## rebuild results/paper from the runs on disk (refused unless the profile is complete)
	$(PYTHON) -m deqexp.cli report --profile $(PROFILE) --out results/paper

bench: install  ## benchmarks: one table in results/bench
	$(PYTHON) scripts/bench.py

slurm-up:  ## start a one-node SLURM cluster here (root; installs slurm, munge, mariadb if missing)
	bash scripts/slurm/up.sh

slurm-down:  ## stop the cluster that slurm-up started
	bash scripts/slurm/down.sh

clean:  ## remove run outputs (not results/)
	rm -rf outputs multirun runs .pytest_cache site docs/assets
