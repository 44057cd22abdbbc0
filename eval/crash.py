"""Crash durability: load a real `convrec serve`, kill -9 it mid-load, restart it, compare acknowledged with stored.

    convrec crashtest --clients 8 --turns 6 --kill-after 20

Three kinds of writes are in flight when the kill comes:
- chat turns from `clients` sessions: a turn answered with 200 must be in SQLite after the restart: lost = sum over
  sessions of max(0, acknowledged turns - stored turns);
- a streaming client: a streamed turn counts as acknowledged once its picks arrived (they are committed before
  they are sent), so it must be stored even when the kill cut the stream in the middle of its explanations;
- batches of 20 feedback events with client ids, posted one after another: every event of a batch answered with
  200 must be stored (read back by its id), none of a batch that was not (a batch is one transaction).
Writes stored but never acknowledged (the kill came between commit and response) are counted separately; they are
not losses.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from agent.store import SqliteSessionStore
from deploy.servers import free_port, start_server
from eval.load import run_load


def stored_turns(base_url: str, session_ids: list[str]) -> dict[str, int]:
    stored = {}
    for session_id in session_ids:
        response = httpx.get(f"{base_url}/v1/sessions/{session_id}", timeout=30)
        stored[session_id] = response.json()["turns"] if response.status_code == 200 else 0
    return stored


def run_crash_check(env: dict[str, str], *, clients: int = 8, turns: int = 6, kill_after: float = 20.0,
                    server_args: tuple[str, ...] = (), log_path: Path | None = None) -> dict:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(port, env, *server_args, log_path=log_path)
    item_ids = [r["item_id"] for r in httpx.post(f"{base_url}/v1/chat/completions", timeout=120, headers={
        "X-Session-Id": "crash-events"}, json={"messages": [{"role": "user", "content": "I loved Alien"}]}).json()[
        "recommendations"]]
    stop = threading.Event()
    result: dict = {}
    workers = [threading.Thread(target=lambda: result.setdefault("load", run_load(
                   base_url, clients=clients, turns=turns, timeout=120, stop=stop, prefix="crash"))),
               threading.Thread(target=lambda: result.setdefault("stream", _stream_turns(base_url, stop))),
               threading.Thread(target=lambda: result.setdefault("events", _event_batches(base_url, item_ids, stop)))]
    for worker in workers:
        worker.start()
    time.sleep(kill_after)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    for worker in workers:
        worker.join()
    report, streamed, (acked_events, unacked_events) = result["load"], result["stream"], result["events"]
    restarted = start_server(port, env, *server_args, log_path=log_path)
    try:
        stored = stored_turns(base_url, [*report.acknowledged, "crash-stream"])
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    store = SqliteSessionStore(Path(env["CONVREC_DB"]))
    events_stored = store.known_events("crash-events", acked_events + unacked_events)
    lost = sum(max(0, acked - stored[s]) for s, acked in report.acknowledged.items())
    extra = sum(max(0, stored[s] - acked) for s, acked in report.acknowledged.items())
    return {"requests": report.requests, "acknowledged": sum(report.acknowledged.values()),
            "failed_by_the_kill": report.failures, "stored_after_restart": sum(stored.values()),
            "lost": lost, "stored_but_unacknowledged": extra, "sessions": len(report.acknowledged),
            "streamed_turns_acknowledged": streamed, "streamed_turns_stored": stored["crash-stream"],
            "streamed_turns_lost": max(0, streamed - stored["crash-stream"]),
            "events_acknowledged": len(acked_events), "events_lost": len(set(acked_events) - events_stored),
            "events_stored_but_unacknowledged": len(events_stored & set(unacked_events))}


def _stream_turns(base_url: str, stop: threading.Event) -> int:
    """Streamed turns of one session until stopped; how many got their picks (acknowledged)."""
    acknowledged = 0
    while not stop.is_set():
        try:
            with httpx.stream("POST", f"{base_url}/v1/chat/completions", timeout=120,
                              headers={"X-Session-Id": "crash-stream"},
                              json={"messages": [{"role": "user", "content": "something like Alien"}],
                                    "stream": True}) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {") and '"recommendations"' in line:
                        acknowledged += 1
        except httpx.HTTPError:
            time.sleep(0.2)
    return acknowledged


def _event_batches(base_url: str, item_ids: list[str], stop: threading.Event) -> tuple[list[str], list[str]]:
    """Batches of 20 events with ids, one after another, until stopped: (acknowledged ids, ids of failed batches)."""
    acknowledged, failed, batch = [], [], 0
    while not stop.is_set():
        ids = [f"b{batch}-e{k}" for k in range(20)]
        events = [{"type": ("like", "seen")[k % 2], "item_id": item_ids[k % len(item_ids)], "event_id": i}
                  for k, i in enumerate(ids)]
        try:
            response = httpx.post(f"{base_url}/v1/sessions/crash-events/events", json=events, timeout=60)
            (acknowledged if response.status_code == 200 else failed).extend(ids)
        except httpx.HTTPError:
            failed.extend(ids)
            time.sleep(0.2)
        batch += 1
    return acknowledged, failed
