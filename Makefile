# The README's two commands: `make demo` and `make test`. Every target uses the venv in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEEPSPEED := $(VENV)/bin/deepspeed
STAMP := $(VENV)/.setup-done
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_CPU ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# `make demo` for a short run elsewhere: `make demo DEMO_STEPS=8 DEMO_RUN_DIR=/tmp/demo`; HAS_GPU= on the
# command line takes the CPU path on any machine (DEMO_ENV hides CUDA from the launcher and llm.generate).
DEMO_PORT ?= 29517
DEMO_STEPS ?= $(if $(HAS_GPU),300,800)
# evaluate and save four times (a quarter of the steps, rounded up)
DEMO_EVERY ?= $(shell echo $$(( ($(DEMO_STEPS) + 3) / 4 )))
DEMO_RUN_DIR ?= runs/demo
DEMO_ENV = $(if $(HAS_GPU),,CUDA_VISIBLE_DEVICES= DS_ACCELERATOR=cpu)

.PHONY: setup demo test test-fast test-fake-cuda lint typecheck bench bench-full bench-parts gpu-check clean dashboard browser

setup: $(STAMP)

# Idempotent: redone only when pyproject.toml changes. Without an NVIDIA GPU, install the CPU build of
# torch first, so the range in pyproject.toml pulls no CUDA build: a wheel pip already has locally
# (find-links, as on our CI machines), else PyTorch's CPU wheel index. torch's own dependencies then
# come from PyPI with the rest.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	$(PY) -m pip install -q --no-index --no-deps torch==$(TORCH_CPU) 2>/dev/null \
		|| $(PY) -m pip install -q --no-deps --index-url $(TORCH_CPU_INDEX) torch==$(TORCH_CPU)
endif
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The demo starts the dashboard first (its URL is the first thing printed; it stays up afterwards), then
# trains with --dashboard auto: watch the run live in a browser. DEMO_DASHBOARD=URL reports to another
# sidecar (token in LLM_DASHBOARD_TOKEN); DEMO_DASHBOARD= trains without one.
DEMO_DASHBOARD ?= auto
DEMO_RUNS := $(patsubst %/,%,$(dir $(DEMO_RUN_DIR)))
demo: setup $(if $(DEMO_DASHBOARD),dashboard)
ifeq ($(DEMO_DASHBOARD),auto)
	$(PY) -m llm.telemetry.dashboard_link --runs-dir $(DEMO_RUNS)
endif
ifeq ($(HAS_GPU),)
	$(DEMO_ENV) $(DEEPSPEED) --num_gpus 2 --master_port $(DEMO_PORT) launch/train.py \
		--deepspeed ds_configs/cpu.json --model tiny --max-steps $(DEMO_STEPS) --eval-every $(DEMO_EVERY) \
		--save-every $(DEMO_EVERY) --run-dir $(DEMO_RUN_DIR) --resume auto \
		$(if $(DEMO_DASHBOARD),--dashboard $(DEMO_DASHBOARD))
else
	$(DEEPSPEED) launch/train.py --deepspeed ds_configs/3090.json --max-steps $(DEMO_STEPS) \
		--eval-every $(DEMO_EVERY) --save-every $(DEMO_EVERY) --run-dir $(DEMO_RUN_DIR) --resume auto \
		$(if $(DEMO_DASHBOARD),--dashboard $(DEMO_DASHBOARD))
endif
	$(DEMO_ENV) $(PY) -m llm.generate --checkpoint $(DEMO_RUN_DIR) --prompt "def " --max-new-tokens 120

lint: setup dashboard/node_modules/.package-lock.json
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd dashboard && npm run lint

typecheck: setup
	$(VENV)/bin/mypy

# the browser tests drive Debian's Chromium through Playwright (never `playwright install`)
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# the radosgw tests (tests/test_s3_radosgw.py) run Ceph's Debian packages, installed once (~40-80 s);
# where apt cannot install them, `make test` goes on and those tests are skipped with the reason
.PHONY: s3-servers
s3-servers:
	@command -v radosgw >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends \
		radosgw ceph-mon ceph-osd ceph-mgr >/dev/null) \
		|| echo "s3-servers: Ceph's packages could not be installed: the radosgw tests will be skipped"

# the multi-node tests (tests/multinode/) run simulated nodes (network namespaces, each with its own sshd)
# and launch through pdsh, OpenMPI, SLURM and rsync as a cluster would (~35 s of apt once); where apt
# cannot install them, those tests are skipped with the reason
MULTINODE_PACKAGES := pdsh openssh-server openssh-client openmpi-bin rsync slurm-wlm munge
.PHONY: multinode-tools
multinode-tools:
	@command -v pdsh >/dev/null && command -v sshd >/dev/null && command -v mpirun >/dev/null \
		&& command -v rsync >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(MULTINODE_PACKAGES) >/dev/null) \
		|| echo "multinode-tools: $(MULTINODE_PACKAGES) could not be installed: tests/multinode will be skipped"

test: lint typecheck dashboard browser s3-servers multinode-tools
	cd dashboard && npm test
	$(VENV)/bin/pytest -v -s --durations=20

test-fast: setup
	$(VENV)/bin/pytest -q -m "not dist"

# the fast tests as a machine with a GPU runs them (a fake CUDA device in the test process; tests/conftest.py)
test-fake-cuda: setup
	TEST_FAKE_CUDA=1 $(VENV)/bin/pytest -q -rs -m "not dist and not slow"

# The benchmark (docs/benchmarks.md), short: the tiny model on one rank, two ranks and two simulated nodes
# (root: network namespaces), one rank compiled, ZeRO 0-3 for memory, baselines in the same run. Writes
# benchmarks/results/<date>-<host>-<commit>.{json,md} with its plots and a row in benchmarks/README.md.
# BENCH_SCENARIOS=single,multi-rank where simulated nodes cannot run; bench-full is the committed CPU result.
BENCH_SCENARIOS ?= single,multi-rank,multi-node
bench: setup $(if $(findstring multi-node,$(BENCH_SCENARIOS)),multinode-tools)
	$(PY) -m benchmarks.run --scenarios $(BENCH_SCENARIOS) --model tiny --steps 20 --warmup 10 --log-every 5 \
		--zero-stages 0,2,3 --compile --overlap-comm

bench-full: setup multinode-tools
	$(PY) -m benchmarks.run --scenarios single,multi-rank,multi-node --model gpt2-small --micro-batch 1 \
		--steps 8 --warmup 2 --log-every 2 --zero-stages 0,2,3 --compile --overlap-comm

# Parts measured on their own: data preparation against the tokenizer alone, the trainer in one
# process against a plain loop and nanoGPT's recipe with a torch.profiler breakdown of each step, and
# how long a checkpoint save blocks the loop against writing its bytes
bench-parts: setup
	$(PY) benchmarks/data_prep.py
	$(PY) benchmarks/trainer_vs_plain.py --profile --for-loop-variants
	$(PY) benchmarks/checkpoint_stall.py

# On a machine with a GPU: fp16 (3090.json) and bf16 through DeepSpeed for real, each with the default
# `3090` preset and the opt-in `1b-24gb-tight`, on one GPU whose allocator is capped at the 22.5 GiB that a
# 24 GB card leaves for tensors (docs/architecture.md); tokens/s, MFU, peak allocated and reserved memory
gpu-check: setup
	$(PY) benchmarks/run_configs.py --config ds_configs/3090.json --config ds_configs/bf16.json \
		--model 3090 --model 1b-24gb-tight --memory-cap-gib 22.5 --nproc 1 --max-steps 50 --name gpu_check

clean:
	rm -rf runs data/cache .pytest_cache .mypy_cache .ruff_cache

# The dashboard the sidecar serves (dashboard/dist): `npm ci` when the lock file changed, `npm run build`
# (tsc -b && vite build) when a source did; nothing when dist is newer than both.
DASHBOARD_SRC := $(shell find dashboard/src dashboard/public dashboard/scripts -type f 2>/dev/null) \
	$(wildcard dashboard/index.html dashboard/vite.config.ts dashboard/tsconfig*.json)
dashboard: dashboard/dist/index.html

dashboard/node_modules/.package-lock.json: dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci
	touch $@

dashboard/dist/index.html: dashboard/node_modules/.package-lock.json $(DASHBOARD_SRC)
	cd dashboard && npm run build
	touch $@
