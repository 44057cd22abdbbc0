"""The serving benchmark: the same concurrent load against `convrec serve` with each engine, in one run.

    convrec load --engines transformers,vllm --clients 8 --turns 3 --adapter finetune/adapters/convrec-redial-lora
    (make bench)

For each engine: start `convrec serve --engine <name>` on a free loopback port, wait until /health is ok (the load
time is reported), run one warm-up turn, then N clients (sessions) × M turns at once, each turn a streamed chat
completion, then stop the server. Reported per engine: turns/s (answered turns over the wall time of the load),
p50/p95 turn latency (request to `[DONE]`), p50/p95 time to the picks (request to the stream chunk that carries
them, sent before any explanation is written) and failures. Engines run one after the other, never side by side,
so each has the whole machine.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.servers import free_port, start_server
from eval.latency import cpu_description, percentile
from eval.load import MESSAGES


@dataclass
class EngineRun:
    engine: str
    clients: int
    turns_per_client: int
    load_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_recommendation: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def summary(self) -> dict:
        lat, first = self.latencies or [0.0], self.first_recommendation or [0.0]
        return {"engine": self.engine, "clients": self.clients, "turns_per_client": self.turns_per_client,
                "turns": len(self.latencies), "failures": self.failures,
                "turns_per_second": round(len(self.latencies) / max(self.wall_seconds, 1e-9), 3),
                "p50_seconds": round(statistics.median(lat), 2), "p95_seconds": round(percentile(lat, 95), 2),
                "first_recommendation_p50_seconds": round(statistics.median(first), 2),
                "first_recommendation_p95_seconds": round(percentile(first, 95), 2),
                "wall_seconds": round(self.wall_seconds, 1), "server_load_seconds": round(self.load_seconds, 1),
                "errors": self.errors[:5]}


def streamed_turn(client: httpx.Client, base_url: str, session_id: str, text: str) -> tuple[float, float]:
    """One streamed chat turn: (seconds to the first recommendation, seconds to [DONE]). Raises on any failure."""
    started = time.perf_counter()
    first = None
    body = {"messages": [{"role": "user", "content": text}], "stream": True}
    with client.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                       headers={"X-Session-Id": session_id}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            chunk = json.loads(line[len("data: "):])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if first is None and chunk.get("recommendations"):  # the picks chunk, before any explanation
                first = time.perf_counter() - started
        else:
            raise RuntimeError("the stream ended without [DONE]")
    done = time.perf_counter() - started
    if first is None:
        raise RuntimeError("no recommendation in the reply")
    return first, done


def run_engine(engine: str, env: dict[str, str], server_args: tuple[str, ...], *, clients: int, turns: int,
               log_path: Path | None = None, timeout: float = 600.0) -> EngineRun:
    run = EngineRun(engine, clients, turns)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = start_server(port, env, "--engine", engine, *server_args, log_path=log_path)
    try:
        run.load_seconds = time.perf_counter() - started
        with httpx.Client(timeout=timeout) as client:
            streamed_turn(client, base_url, f"warmup-{uuid.uuid4().hex[:6]}", MESSAGES[0])
        _load(run, base_url, timeout)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except Exception:  # noqa: BLE001 - a server that will not stop is killed
            server.kill()
    return run


def _load(run: EngineRun, base_url: str, timeout: float) -> None:
    lock = threading.Lock()
    run_id = uuid.uuid4().hex[:6]

    def client_loop(k: int) -> None:
        session_id = f"bench-{run.engine}-{run_id}-{k:02d}"
        with httpx.Client(timeout=timeout) as client:
            for turn in range(run.turns_per_client):
                try:
                    first, done = streamed_turn(client, base_url, session_id, MESSAGES[(k + turn) % len(MESSAGES)])
                except (httpx.HTTPError, RuntimeError, ValueError) as error:
                    with lock:
                        run.failures += 1
                        run.errors.append(f"{type(error).__name__}: {error}")
                    continue
                with lock:
                    run.latencies.append(done)
                    run.first_recommendation.append(first)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(run.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.wall_seconds = time.perf_counter() - started


def run_serving_bench(engines: list[str], *, clients: int, turns: int, server_args: tuple[str, ...] = (),
                      engine_url: str | None = None, env: dict[str, str] | None = None,
                      log_dir: Path | None = None) -> dict:
    """Every engine under the same load; the report has one row per engine and the speed-up over the first.
    "remote" serves through the OpenAI-compatible server at `engine_url` (e.g. a `vllm serve` on a GPU)."""
    env = dict(env or os.environ)
    rows = []
    for engine in engines:
        log_path = log_dir / f"serve-{engine}.log" if log_dir else None
        args = (*server_args, "--engine-url", engine_url) if engine == "remote" else server_args
        rows.append(run_engine(engine, env, args, clients=clients, turns=turns, log_path=log_path).summary())
    baseline = rows[0]["turns_per_second"] or 1e-9
    for row in rows:
        row["speedup"] = round(row["turns_per_second"] / baseline, 2)
    return {"clients": clients, "turns_per_client": turns, "server_args": list(server_args), "cpu": cpu_description(),
            "engines": rows}


def format_bench(report: dict) -> str:
    cpu = report.get("cpu") or {}
    lines = [f"{report['clients']} concurrent sessions x {report['turns_per_client']} turns, streamed, per engine, on "
             f"{cpu.get('model', 'an unnamed CPU')} ({cpu.get('cores')} cores, avx512_bf16 {cpu.get('avx512_bf16')}):",
             "| engine | turns/s | speed-up | p50 s | p95 s | first pick p50 s | first pick p95 s | failures | "
             "server load s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["engines"]:
        lines.append(f"| {r['engine']} | {r['turns_per_second']:.3f} | {r['speedup']:.2f}x | {r['p50_seconds']:.2f} | "
                     f"{r['p95_seconds']:.2f} | {r['first_recommendation_p50_seconds']:.2f} | "
                     f"{r['first_recommendation_p95_seconds']:.2f} | {r['failures']} | "
                     f"{r['server_load_seconds']:.1f} |")
    return "\n".join(lines)
