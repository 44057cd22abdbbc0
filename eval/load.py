"""Load on a running `convrec serve`: N concurrent clients × M turns each, plain HTTP on loopback.

    convrec load --url http://127.0.0.1:8000 --clients 16 --turns 5

Each client is one session; its turns are sequential (a person waits for the answer), clients run in parallel.
The report counts requests, failures and per-session acknowledged turns, and gives p50/p95 latency.
Bounded by design: clients × turns requests, each with a timeout.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx

from eval.latency import percentile

MESSAGES = (
    "I loved The Matrix, what else?",
    "Something funnier please, nothing before 1990.",
    "I didn't like the first one.",
    "Anything with Tom Hanks?",
    "An animated movie for kids?",
    "More like Toy Story please.",
)


@dataclass
class LoadReport:
    clients: int
    turns_per_client: int
    requests: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)
    """session id -> turns answered with 200."""
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def summary(self) -> dict:
        lat = self.latencies or [0.0]
        return {"clients": self.clients, "turns_per_client": self.turns_per_client, "requests": self.requests,
                "failures": self.failures, "acknowledged_turns": sum(self.acknowledged.values()),
                "p50_seconds": round(statistics.median(lat), 2), "p95_seconds": round(percentile(lat, 95), 2),
                "turns_per_second": round(len(self.latencies) / max(self.wall_seconds, 1e-9), 3),
                "wall_seconds": round(self.wall_seconds, 1), "errors": self.errors[:5]}


def chat(client: httpx.Client, base_url: str, session_id: str, text: str, api_key: str | None) -> httpx.Response:
    headers = {"X-Session-Id": session_id}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return client.post(f"{base_url}/v1/chat/completions", headers=headers,
                       json={"messages": [{"role": "user", "content": text}]})


def run_load(base_url: str, *, clients: int = 16, turns: int = 5, api_key: str | None = None,
             timeout: float = 600.0, stop: threading.Event | None = None, prefix: str = "load") -> LoadReport:
    """Run the load; `stop` (set by another thread) ends it early, e.g. when the server is killed."""
    report = LoadReport(clients, turns)
    lock = threading.Lock()
    run_id = uuid.uuid4().hex[:6]

    def client_loop(k: int) -> None:
        session_id = f"{prefix}-{run_id}-{k:02d}"
        with httpx.Client(timeout=timeout) as client:
            for turn in range(turns):
                if stop is not None and stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    response = chat(client, base_url, session_id, MESSAGES[(k + turn) % len(MESSAGES)], api_key)
                    ok, error = response.status_code == 200, f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                with lock:
                    report.requests += 1
                    if ok:
                        report.latencies.append(time.perf_counter() - started)
                        report.acknowledged[session_id] = report.acknowledged.get(session_id, 0) + 1
                    else:
                        report.failures += 1
                        report.errors.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.wall_seconds = time.perf_counter() - started
    return report
