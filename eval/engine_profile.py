"""Where a transformers-engine turn spends its time on this CPU: one prefill of a rank-sized prompt and one decode step
of a five-row explanation batch, for the base model, the base model with the LoRA adapter beside the weights
(`--no-merge`) and the adapter merged into a copy of them (as served by default).

    python -m eval.engine_profile [--adapter finetune/adapters/convrec-redial-lora] [--dtype auto] [--json]

Random token ids (seeded): the cost of a forward pass does not depend on which tokens they are. Each figure is the
best of 3 prefills / the median of 10 decode steps, after one unmeasured pass.
`batch_prefill_seconds` is the best of 3 as well.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

from agent.config import Settings
from agent.engines import TransformersEngine, merged_model
from agent.models import resolve_llm
from eval.latency import cpu_description

PROMPT_TOKENS = 734
"""The rank prompt of `convrec bench`'s first turn (20 candidates)."""
BATCH, EXPLAIN_TOKENS, ROW_TOKENS = 5, 250, 65
"""Five explanation prompts of about 250 tokens each; in a turn they share their first ~250 and differ in ~65 each.
`batch_prefill_seconds` times those five rests after the shared start, asking for the last position's logits
with the integer `logits_to_keep=1` and with an index (agent/decoding.last_position)."""


def profile(model, torch) -> dict:
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 40_000, (1, PROMPT_TOKENS), generator=generator)
    with torch.inference_mode():
        model(prompt, logits_to_keep=1)
        prefill = []
        for _ in range(3):
            started = time.perf_counter()
            model(prompt, logits_to_keep=1)
            prefill.append(time.perf_counter() - started)
        cache = model(prompt[:, :EXPLAIN_TOKENS].repeat(BATCH, 1), use_cache=True, logits_to_keep=1).past_key_values
        token = torch.randint(100, 40_000, (BATCH, 1), generator=generator)
        steps = []
        for _ in range(10):
            started = time.perf_counter()
            model(token, past_key_values=cache, use_cache=True)
            steps.append(time.perf_counter() - started)
        rests = torch.randint(100, 40_000, (BATCH, ROW_TOKENS), generator=generator)
        shared = model(prompt[:, :EXPLAIN_TOKENS], use_cache=True).past_key_values
        batched = {}
        for name, keep in (("integer", 1), ("index", torch.tensor([ROW_TOKENS - 1]))):
            times = []
            for _ in range(4):  # the first is not counted
                cache = copy.deepcopy(shared)
                cache.batch_repeat_interleave(BATCH)
                started = time.perf_counter()
                model(rests, past_key_values=cache, use_cache=True, logits_to_keep=keep)
                times.append(time.perf_counter() - started)
            batched[name] = round(min(times[1:]), 3)
    return {"prefill_seconds": round(min(prefill), 3), "decode_step_ms": round(statistics.median(steps) * 1000, 1),
            "batch_prefill_seconds": batched}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="finetune/adapters/convrec-redial-lora")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    model_path = resolve_llm(settings.model, settings.cache_dir)
    engine = TransformersEngine(model_path, adapters={"lora": args.adapter}, dtype=args.dtype,
                                merge_adapters=False)  # the adapter beside the weights, as `--no-merge` serves it
    report = {"cpu": cpu_description(), "dtype": engine.dtype, "threads": torch.get_num_threads(),
              "prompt_tokens": PROMPT_TOKENS, "decode_batch": BATCH}
    with engine.model.disable_adapter():
        report["base"] = profile(engine.model, torch)
    report["lora"] = profile(engine.model, torch)
    report["merged"] = profile(merged_model(model_path, args.adapter, engine.dtype).eval(), torch)  # as served
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['dtype']} on {report['cpu']['model']}, {report['threads']} threads")
    for name in ("base", "lora", "merged"):
        batched = report[name]["batch_prefill_seconds"]
        print(f"{name:<8} prefill of {PROMPT_TOKENS} tokens {report[name]['prefill_seconds']:.3f} s, "
              f"decode step of {BATCH} rows {report[name]['decode_step_ms']:.1f} ms, "
              f"{BATCH} x {ROW_TOKENS} after a shared start: {batched['integer']:.3f} s (integer logits_to_keep), "
              f"{batched['index']:.3f} s (index)")


if __name__ == "__main__":
    main()
