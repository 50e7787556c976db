# The README's two commands: `make demo` and `make test`. Every target uses the venv in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEEPSPEED := $(VENV)/bin/deepspeed
STAMP := $(VENV)/.setup-done
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
DEMO_PORT ?= 29517

.PHONY: setup demo test test-fast lint typecheck bench gpu-check clean

setup: $(STAMP)

# Idempotent: redone only when pyproject.toml changes. Without an NVIDIA GPU, install the CPU build of
# torch first (it lies on this machine's disk), so the range in pyproject.toml pulls no CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	$(PY) -m pip install -q torch==2.13.0
endif
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
ifeq ($(HAS_GPU),)
	$(DEEPSPEED) --num_gpus 2 --master_port $(DEMO_PORT) launch/train.py --deepspeed ds_configs/cpu.json \
		--model tiny --max-steps 800 --eval-every 200 --save-every 200 --run-dir runs/demo --resume auto
else
	$(DEEPSPEED) launch/train.py --deepspeed ds_configs/3090.json --max-steps 300 --eval-every 100 \
		--save-every 100 --run-dir runs/demo --resume auto
endif
	$(PY) -m llm.generate --checkpoint runs/demo --prompt "def " --max-new-tokens 120

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest -v -s --durations=20

test-fast: setup
	$(VENV)/bin/pytest -q -m "not dist"

bench: setup
	$(PY) benchmarks/trainer_vs_plain.py

# On a machine with a GPU: fp16 (3090.json) and bf16 through DeepSpeed for real, each with the default
# `3090` preset and the opt-in `1b-24gb-tight`, on one GPU whose allocator is capped at the 22.5 GiB that a
# 24 GB card leaves for tensors (docs/architecture.md); tokens/s, MFU, peak allocated and reserved memory
gpu-check: setup
	$(PY) benchmarks/run_configs.py --config ds_configs/3090.json --config ds_configs/bf16.json \
		--model 3090 --model 1b-24gb-tight --memory-cap-gib 22.5 --nproc 1 --max-steps 50 --name gpu_check

clean:
	rm -rf runs data/cache .pytest_cache .mypy_cache .ruff_cache
