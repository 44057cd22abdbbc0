"""Crash durability: load a real `convrec serve`, kill -9 it mid-load, restart it, compare acknowledged with stored.

    convrec crashtest --clients 8 --turns 6 --kill-after 20

A turn answered with 200 must be in SQLite after the restart: lost = sum over sessions of
max(0, acknowledged turns - stored turns). Turns stored but never acknowledged (the kill came between commit and
response) are counted separately; they are not losses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from eval.load import run_load

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, env: dict[str, str], *extra: str, log_path: Path | None = None) -> subprocess.Popen:
    """`convrec serve` as a subprocess on loopback; waits until /health says ok (raises after 300 s)."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    process = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--port", str(port), *extra],
                               cwd=REPO, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"convrec serve exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("convrec serve did not become healthy in 300 s")


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
    stop = threading.Event()
    result: dict = {}
    load = threading.Thread(target=lambda: result.setdefault(
        "load", run_load(base_url, clients=clients, turns=turns, timeout=120, stop=stop, prefix="crash")))
    load.start()
    time.sleep(kill_after)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    load.join()
    report = result["load"]
    restarted = start_server(port, env, *server_args, log_path=log_path)
    try:
        stored = stored_turns(base_url, list(report.acknowledged))
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    lost = sum(max(0, acked - stored[s]) for s, acked in report.acknowledged.items())
    extra = sum(max(0, stored[s] - acked) for s, acked in report.acknowledged.items())
    return {"requests": report.requests, "acknowledged": sum(report.acknowledged.values()),
            "failed_by_the_kill": report.failures, "stored_after_restart": sum(stored.values()),
            "lost": lost, "stored_but_unacknowledged": extra, "sessions": len(report.acknowledged)}
