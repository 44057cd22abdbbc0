"""Where a serving process's memory goes, round after round: resident memory, glibc's heap in use, the prefix cache.

    python -m eval.native_memory --workload prompts --kernel-caches 1024:1024 64:1024 64:64
    python -m eval.native_memory --workload turns --adapter finetune/adapters/convrec-redial-lora

Each kernel-cache setting ONEDNN:IDEEP (how many compiled kernels oneDNN and ideep keep: ONEDNN_PRIMITIVE_CACHE_CAPACITY
and LRU_CACHE_CAPACITY, read once per process) runs in a process of its own, one after the other. Workloads:
- prompts: the base model alone scores 10 prompts of random lengths (50-600 words, seed 0) a round, prefix cache off;
- turns: the recommender as `convrec serve` builds it, `--sessions` sessions, one turn each a round (eval.load's
  messages).
Freed memory is handed back after each prompt or turn, as the server does. Printed per round: resident memory, the
heap in use (mallinfo2), the prefix cache's tensors, seconds so far. It explains `make load`'s memory figure in
minutes instead of half an hour.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ui.api.allocator import GLIBC


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


if GLIBC is not None and hasattr(GLIBC, "mallinfo2"):
    GLIBC.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int | None:
    """Bytes glibc's allocator has handed out and not got back (None where libc is not glibc)."""
    return GLIBC.mallinfo2().uordblks if GLIBC is not None and hasattr(GLIBC, "mallinfo2") else None


def turns_workload(adapters: list[str], sessions: int):
    """The recommender and a function that runs one round: a turn of each session."""
    from agent.build import build_recommender
    from agent.config import Settings
    from eval.load import MESSAGES
    from ui.api.allocator import give_back

    db = Path(tempfile.mkdtemp(prefix="convrec-native-")) / "sessions.sqlite3"
    recommender, _ = build_recommender(Settings.from_env(adapters=tuple(adapters), db=db))
    recommender.run_turn("warm-up", MESSAGES[0])

    def one_round(number: int) -> None:
        for k in range(sessions):
            recommender.run_turn(f"native-{k}", MESSAGES[(k + number) % len(MESSAGES)])
            give_back()

    return recommender.engine, one_round


def prompts_workload():
    """The base model and a function that runs one round: 10 prompts of random lengths scored."""
    import numpy as np
    from langchain_core.messages import HumanMessage, SystemMessage

    from agent.config import Settings
    from agent.engines import TransformersEngine
    from agent.models import resolve_llm
    from eval.load import MESSAGES
    from ui.api.allocator import give_back

    settings = Settings.from_env()
    engine = TransformersEngine(resolve_llm(settings.model, settings.cache_dir), model_name=settings.model,
                                prefix_caching=False)
    words = " ".join(MESSAGES).split()
    rng = np.random.default_rng(0)
    choices = [f'{100 + k}"' for k in range(8)]

    def one_round(number: int) -> None:
        for _ in range(10):
            text = " ".join(rng.choice(words, int(rng.integers(50, 600))))
            engine.score_choices([SystemMessage("You rank movies."), HumanMessage(text)], '{"ranking": ["', choices)
            give_back()

    return engine, one_round


def run_one(workload: str, adapters: list[str], sessions: int, rounds_wanted: int, kernel_caches: str) -> dict:
    onednn, ideep = kernel_caches.split(":")
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], os.environ["LRU_CACHE_CAPACITY"] = onednn, ideep
    import psutil

    from ui.api.allocator import limit_native_caches

    limit_native_caches()
    engine, one_round = turns_workload(adapters, sessions) if workload == "turns" else prompts_workload()
    process, rounds, started = psutil.Process(), [], time.perf_counter()
    for number in range(rounds_wanted):
        one_round(number)
        prefixes = getattr(engine, "_prefixes", None)
        rounds.append({"round": number + 1, "rss_mb": round(process.memory_info().rss / 1e6, 1),
                       "heap_in_use_mb": round((heap_in_use() or 0) / 1e6, 1),
                       "prefix_cache_mb": round(prefixes.nbytes() / 1e6, 1) if prefixes else None,
                       "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    first, last = rounds[0], rounds[-1]
    return {"kernel_caches": kernel_caches, "workload": workload, "rounds": rounds,
            "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
            "heap_growth_mb": round(last["heap_in_use_mb"] - first["heap_in_use_mb"], 1),
            "seconds_after_first_round": round(last["seconds"] - first["seconds"], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", default=[])
    parser.add_argument("--workload", choices=("prompts", "turns"), default="prompts")
    parser.add_argument("--sessions", type=int, default=3, help="turns workload: sessions (one turn each a round)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--kernel-caches", nargs="+", default=["1024:1024", "64:1024", "64:64"],
                        help="ONEDNN:IDEEP kernel-cache sizes, one process each")
    parser.add_argument("--one", action="store_true", help="run the first kernel-cache size in this process")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.workload, args.adapter, args.sessions, args.rounds, args.kernel_caches[0])))
        return 0
    from eval.latency import cpu_description

    results = []
    for size in args.kernel_caches:
        command = [sys.executable, "-m", "eval.native_memory", "--one", "--workload", args.workload,
                   "--sessions", str(args.sessions), "--rounds", str(args.rounds), "--kernel-caches", size,
                   *(f"--adapter={a}" for a in args.adapter)]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'kernels kept':>12} {'resident +MB':>12} {'heap +MB':>9} {'seconds':>8}  (rounds 1 -> {args.rounds})")
    for r in results:
        print(f"{r['kernel_caches']:>12} {r['rss_growth_mb']:>12} {r['heap_growth_mb']:>9} "
              f"{r['seconds_after_first_round']:>8}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpu": cpu_description(), "adapters": args.adapter, "results": results},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
