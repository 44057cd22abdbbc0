"""A soak under load: N clients x M turns against a real `convrec serve`, with its memory watched.

    python -m eval.soak --clients 32 --turns 20 --adapter finetune/adapters/convrec-redial-lora --out load-out
                                                                      # make load (about 25 minutes on 2 cores)
    python -m eval.soak --clients 32 --turns 2 --serve-arg=--no-llm-explanations      # CI's slice (tests/test_soak.py)

The server starts on loopback with a fresh SQLite file and warms up at the same concurrency (N sessions x 1 turn,
not counted: the first turns of N parallel sessions grow the process to its working size); then the clients run
(`eval.load.run_load`: one session each, turns in sequence) while the server's resident memory (its process and
any children, e.g. vLLM's engine) is sampled every half second. After the load, each session's stored turns are
read back through the API. Passes when: no request failed (no 5xx, no timeout), no acknowledged turn is missing
from the store (lost = 0), and the mean resident memory of the last quarter of the run is within 10% of the first
quarter's (no growth that would end in an out-of-memory kill).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from deploy.servers import free_port, start_server
from eval.crash import stored_turns
from eval.latency import cpu_description
from eval.load import run_load

MAX_GROWTH = 0.10


def resident_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_soak(env: dict[str, str], *, clients: int, turns: int, server_args: tuple[str, ...] = (),
             log_path: Path | None = None) -> dict:
    env = dict(env)
    env.setdefault("CONVREC_DB", str(Path(tempfile.mkdtemp(prefix="convrec-soak-")) / "sessions.sqlite3"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(port, env, *server_args, log_path=log_path)
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), resident_bytes(server.pid)))
            done.wait(0.5)

    try:
        run_load(base_url, clients=clients, turns=1, timeout=600, prefix="warmup")  # at full concurrency
        watcher = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        watcher.start()
        report = run_load(base_url, clients=clients, turns=turns, timeout=600, prefix="soak")
        ended = time.perf_counter()
        done.set()
        watcher.join()
        stored = stored_turns(base_url, list(report.acknowledged))
    finally:
        done.set()
        server.terminate()
        server.wait(timeout=60)
    quarter = (ended - started) / 4
    first = [rss for t, rss in samples if t <= started + quarter]
    last = [rss for t, rss in samples if t >= ended - quarter]
    first_mb, last_mb = statistics.mean(first) / 2**20, statistics.mean(last) / 2**20
    lost = sum(max(0, acked - stored.get(s, 0)) for s, acked in report.acknowledged.items())
    summary = report.summary()
    summary.update(server_errors=sum(e.startswith("HTTP 5") for e in report.errors), lost_turns=lost,
                   stored_turns=sum(stored.values()), rss_first_quarter_mb=round(first_mb, 1),
                   rss_last_quarter_mb=round(last_mb, 1), rss_growth=round(last_mb / first_mb - 1, 4),
                   rss_peak_mb=round(max(rss for _, rss in samples) / 2**20, 1), rss_samples=len(samples),
                   rss_mb_by_tenth=_by_tenth(samples, started, ended),
                   server_args=list(server_args), cpu=cpu_description())
    return summary


def _by_tenth(samples: list[tuple[float, int]], started: float, ended: float) -> list[float]:
    """Mean resident memory (MB) in each tenth of the run: the shape of the curve, not only its two ends."""
    tenth = (ended - started) / 10
    parts = [[rss for t, rss in samples if started + k * tenth <= t < started + (k + 1) * tenth] for k in range(10)]
    return [round(statistics.mean(p) / 2**20, 1) if p else 0.0 for p in parts]


def passed(summary: dict) -> bool:
    return summary["failures"] == 0 and summary["lost_turns"] == 0 and summary["rss_growth"] <= MAX_GROWTH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--adapter", action="append", default=[], help="served by the server (repeatable)")
    parser.add_argument("--serve-arg", action="append", default=[], help="one more `convrec serve` argument")
    parser.add_argument("--out", type=Path, help="folder for summary.json and the server's log")
    args = parser.parse_args()
    server_args = (*(a for adapter in args.adapter for a in ("--adapter", adapter)), *args.serve_arg)
    log_path = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        log_path = args.out / "server.log"
    summary = run_soak(dict(os.environ), clients=args.clients, turns=args.turns, server_args=server_args,
                       log_path=log_path)
    print(json.dumps(summary, indent=2))
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not passed(summary):
        print(f"the soak failed: failures {summary['failures']}, lost {summary['lost_turns']}, resident memory "
              f"{summary['rss_growth']:+.1%} (at most {MAX_GROWTH:+.0%})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
