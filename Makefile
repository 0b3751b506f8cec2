# Every target creates .venv when missing. torch is installed first, pinned to the CPU build,
# so that resolving the other dependencies does not pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test test-slow bench lint zoo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[dev,ray]"
	touch $@

demo: setup
	$(VENV)/bin/sim2real demo

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	$(PY) scripts/bench.py

# Retrain the shipped policies (about 45 minutes on 2 cores), every step (no early stop); each card lists
# 100-episode results.
zoo: setup
	$(VENV)/bin/sim2real train driving --force --all-steps --out policies/driving-ppo-nominal
	$(VENV)/bin/sim2real train driving --randomize --force --all-steps --out policies/driving-ppo-dr
	$(VENV)/bin/sim2real train grasping --force --all-steps --out policies/grasping-ppo-nominal
	$(VENV)/bin/sim2real train grasping --randomize --force --all-steps --out policies/grasping-ppo-dr
	$(VENV)/bin/sim2real train driving --algo sac --force --all-steps --out policies/driving-sac-nominal
	$(VENV)/bin/sim2real train driving --algo sac --randomize --force --all-steps --out policies/driving-sac-dr
	$(VENV)/bin/sim2real train grasping --algo sac --force --all-steps --out policies/grasping-sac-nominal
	$(VENV)/bin/sim2real train grasping --algo sac --randomize --force --all-steps --out policies/grasping-sac-dr

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
