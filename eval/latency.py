"""Turn latency on this machine: scripted sessions through `Recommender.run_turn`, p50/p95 per stage.

    convrec bench --sessions 3        (in-process, the default engine; after warm-up turns that are not counted)
    convrec bench --json              one JSON object: turn_p50/p95, first_pick_p50/p95, stages, cpu, dtype, engine

The script is fixed and decoding is greedy, so reruns do the same work; the times are what varies.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import uuid
from collections import defaultdict
from pathlib import Path

from agent.turn import Recommender

SCRIPT = (
    "Hi! I loved The Matrix and Inception, what should I watch?",
    "Something funnier please, nothing before 1990.",
    "I didn't like the first one. What else?",
    "Do you have anything with Tom Hanks?",
    "An animated movie for the kids would be great.",
    "I've seen the second one already. More like Toy Story?",
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def measure_turn_latency(recommender: Recommender, *, sessions: int = 3, warmup: int = 2,
                         turns: int = len(SCRIPT)) -> dict:
    """Run `sessions` scripted sessions of the script's first `turns` messages; the first `warmup` turns overall are
    run but not counted.

    `turn_*` is a whole turn (request to the last explanation stored), `first_pick_*` the time until the picks are
    committed and handed to the caller (what the API streams and the web chat shows first)."""
    for k in range(warmup):
        recommender.run_turn(f"bench-warmup-{uuid.uuid4().hex[:6]}", SCRIPT[k % len(SCRIPT)])
    stages: dict[str, list[float]] = defaultdict(list)
    recommendations, composed, fallbacks = 0, 0, 0
    started = time.perf_counter()
    for _ in range(sessions):
        session_id = f"bench-{uuid.uuid4().hex[:8]}"
        for text in SCRIPT[:turns]:
            result = recommender.run_turn(session_id, text)
            for stage, seconds in result.trace.timings.items():
                stages[stage].append(seconds)
            recommendations += len(result.recommendations)
            composed += sum(_composed_count(note) for note in result.trace.fallbacks)
            fallbacks += any(note.startswith("fallback") for note in result.trace.fallbacks)
        recommender.sessions.forget(session_id)
    totals, firsts = stages.pop("total"), stages.pop("first_pick")
    engine = recommender.engine
    return {
        "turn_p50": round(statistics.median(totals), 3), "turn_p95": round(percentile(totals, 95), 3),
        "first_pick_p50": round(statistics.median(firsts), 3), "first_pick_p95": round(percentile(firsts, 95), 3),
        "stages": {stage: round(statistics.median(v), 3) for stage, v in stages.items()},
        "stages_p95": {stage: round(percentile(v, 95), 3) for stage, v in stages.items()},
        "cpu": cpu_description(), "dtype": getattr(engine, "dtype", None), "engine": engine.name,
        "model": engine.model_name, "turns": len(totals), "wall_seconds": round(time.perf_counter() - started, 2),
        "explanations_generated_and_kept": round(1 - composed / max(recommendations, 1), 3),
        "ranking_fallback_turns": fallbacks,
    }


def cpu_description() -> dict:
    """The CPU's model name and whether it computes bfloat16 natively (AVX512-BF16, AMX): timings depend on both."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "cores": os.cpu_count(), "avx512_bf16": None,
                "amx": None}
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool({"amx_bf16", "amx_tile"} & flags)}


def _composed_count(note: str) -> int:
    if not note.startswith("explanations composed from facts for "):
        return 0
    return int(note.split("for ", 1)[1].split(" ", 1)[0])


def format_report(report: dict) -> str:
    cpu = report["cpu"]
    lines = [f"engine {report['engine']} · model {report['model']} · {report['dtype']} on {cpu['model']} "
             f"(avx512_bf16 {cpu['avx512_bf16']}, amx {cpu['amx']}) · {report['turns']} turns in "
             f"{report['wall_seconds']}s (after warm-up)",
             f"{'':<12}{'p50 s':>10}{'p95 s':>10}",
             f"{'turn':<12}{report['turn_p50']:>10.3f}{report['turn_p95']:>10.3f}",
             f"{'first pick':<12}{report['first_pick_p50']:>10.3f}{report['first_pick_p95']:>10.3f}"]
    lines += [f"{stage:<12}{p50:>10.3f}{report['stages_p95'][stage]:>10.3f}" for stage, p50 in report["stages"].items()]
    lines.append(f"LLM explanations kept (every claim true): {report['explanations_generated_and_kept']:.1%}; "
                 f"turns whose ranking fell back: {report['ranking_fallback_turns']}")
    return "\n".join(lines)


def measure_ui_latency(url: str, *, sessions: int = 2, warmup: int = 1, ready_timeout: float = 600) -> dict:
    """The same script through a running web chat (`convrec ui`), as a browser tab sends it: the Gradio chat endpoint,
    timed from request to the first streamed update that shows the cards (`first_pick`) and to the last one (`turn`).
    Each session is a fresh tab (empty session state)."""
    from gradio_client import Client

    client = Client(url, verbose=False)

    def turn(text: str, history: list) -> tuple[list, float, float]:
        started = time.perf_counter()
        job = client.submit(text, history, api_name="/chat")
        first = None
        for update in job:  # every streamed update, as it arrives; the last output is the status line
            # the first update still shows the previous turn's cards ("Thinking…"): this turn's are on screen
            # from the update that says "Picked in" (or, when no update came between, "Answering…"/"Answered")
            if first is None and str(update[-1]).startswith(("Picked in", "Answering", "Answered")):
                first = time.perf_counter() - started
        outputs = job.result()
        done = time.perf_counter() - started
        return outputs[0], done if first is None else first, done

    deadline = time.monotonic() + ready_timeout
    while "Loading" in str(client.predict("hello", [], api_name="/chat")[0]):  # wait for the model
        if time.monotonic() > deadline:
            raise TimeoutError("the web chat did not finish loading the model")
        time.sleep(3)
    for k in range(warmup):
        turn(SCRIPT[k % len(SCRIPT)], [])
    firsts: list[float] = []
    seconds: list[float] = []
    for _ in range(sessions):
        client.reset_session()  # a new tab: a new convrec session
        history: list = []
        for text in SCRIPT:
            history, first, elapsed = turn(text, history)
            firsts.append(first)
            seconds.append(elapsed)
    return {"url": url, "turns": len(seconds), "turn_p50": round(statistics.median(seconds), 3),
            "turn_p95": round(percentile(seconds, 95), 3), "first_pick_p50": round(statistics.median(firsts), 3),
            "first_pick_p95": round(percentile(firsts, 95), 3), "max": round(max(seconds), 3)}
