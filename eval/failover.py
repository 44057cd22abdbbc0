"""Replicas sharing PostgreSQL, checked with real load (`make failover`; CI runs a slice in tests/test_cluster.py).

    python -m eval.failover --clients 16 --turns 6 --out docs/hardening/failover.json

Two checks on the topology of deploy/servers.py (PostgreSQL, Chroma's server, two `convrec serve`, nginx):
1. Round-robin on purpose: `clients` sessions x `turns` turns, each turn of a session sent straight to the replica
   its previous turn did not use. Every acknowledged turn must be stored, in the order it was sent, and the memory
   must hold every pick (a lost update would drop one replica's picks, and the next turn could repeat them).
2. Failover behind nginx (routing by session): the same load through the router; once a third of the turns are
   answered, one replica is killed with SIGKILL. Clients retry a failed turn (as the official OpenAI client does)
   until it is answered. Every acknowledged turn must be stored (lost = 0); the sessions that lived on the killed
   replica go on on the other one with their memory. Time to recover, two ways: from the kill to the first read of a
   moved session's memory through the router (the routing's own recovery), and to each moved session's next answered
   turn (that plus the queue on the surviving replica, whose turn latency before and after the kill is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from agent.store_postgres import PostgresSessionStore
from deploy.servers import routed_requests
from eval.load import MESSAGES, chat

RETRY_PAUSE = 0.5
"""Seconds a client waits before sending a failed turn again."""


def _on_replica(access_log: Path, replica_url: str) -> set[str]:
    """The session keys of the requests nginx passed to this replica."""
    replica = replica_url.removeprefix("http://")
    return {key for _, passed_to, key in routed_requests(access_log) if passed_to == replica and key}


def _turn(client: httpx.Client, url: str, session_id: str, text: str) -> tuple[int, list[str]]:
    """(status, picked item ids) of one chat turn; status 0 when no HTTP answer came."""
    try:
        response = chat(client, url, session_id, text, api_key=None)
    except httpx.HTTPError:
        return 0, []
    picks = [r["item_id"] for r in response.json().get("recommendations", [])] if response.status_code == 200 else []
    return response.status_code, picks


def _check_stored(store: PostgresSessionStore, sent: dict[str, list[tuple[str, list[str]]]]) -> dict:
    """Compare what each session was told (its acknowledged turns: text, picks) with what PostgreSQL holds; the
    stored memory's turn count of each session comes back under "turn_counts"."""
    lost = out_of_order = picks_missing = stored_unacknowledged = 0
    turn_counts = {}
    for session_id, acknowledged in sent.items():
        history = store.history(session_id)
        state = store.load(session_id)
        stored_texts = [t["user"] for t in history]
        acknowledged_texts = [text for text, _ in acknowledged]
        lost += max(0, len(acknowledged) - len(history))
        stored_unacknowledged += max(0, len(history) - len(acknowledged))
        kept = iter(stored_texts)  # the acknowledged turns, in order, within what is stored (retries may add some)
        out_of_order += not all(text in kept for text in acknowledged_texts)
        turn_counts[session_id] = state.turn_count if state else 0
        remembered = set(state.recommended) if state else set()
        picks_missing += sum(item not in remembered for _, picks in acknowledged for item in picks)
    return {"lost": lost, "sessions_out_of_order": out_of_order, "picks_missing_from_memory": picks_missing,
            "stored_not_acknowledged": stored_unacknowledged, "turn_counts": turn_counts}


def round_robin(replica_urls: list[str], postgres_url: str, *, clients: int = 16, turns: int = 5,
                timeout: float = 600.0) -> dict:
    """Check 1: consecutive turns of a session on different replicas (client k's turn t on replica (k + t) mod n)."""
    run = uuid.uuid4().hex[:6]
    sent: dict[str, list[tuple[str, list[str]]]] = {f"rr-{run}-{k:02d}": [] for k in range(clients)}
    failures: list[int] = []
    repeated = [0]

    def client_loop(k: int, session_id: str) -> None:
        with httpx.Client(timeout=timeout) as client:
            for t in range(turns):
                text = f"{MESSAGES[(k + t) % len(MESSAGES)]} (turn {t + 1})"
                status, picks = _turn(client, replica_urls[(k + t) % len(replica_urls)], session_id, text)
                if status != 200:
                    failures.append(status)
                    continue
                earlier = {item for _, p in sent[session_id] for item in p}
                repeated[0] += len(earlier & set(picks))  # a pick made again: the memory lost the earlier turn's
                sent[session_id].append((text, picks))

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k, s)) for k, s in enumerate(sent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = PostgresSessionStore(postgres_url, learn=False)
    try:
        stored = _check_stored(store, sent)
    finally:
        store.close()
    turn_counts = stored.pop("turn_counts")
    return {"clients": clients, "turns_per_client": turns, "replicas": len(replica_urls),
            "requests": clients * turns, "acknowledged": sum(len(a) for a in sent.values()),
            "failures": len(failures), "picks_repeated": repeated[0],
            "sessions_with_all_turns": sum(c == turns for c in turn_counts.values()), **stored,
            "wall_seconds": round(time.perf_counter() - started, 1)}


def failover(router_url: str, victim_pid: int, victim_url: str, access_log: Path, postgres_url: str, *,
             clients: int = 16, turns: int = 6, kill_at: float = 1 / 3, deadline_seconds: float = 900.0) -> dict:
    """Check 2: load through the router; kill -9 the replica at `victim_url` once `kill_at` of the turns are
    answered."""
    run = uuid.uuid4().hex[:6]
    sent: dict[str, list[tuple[str, list[str]]]] = {f"fo-{run}-{k:02d}": [] for k in range(clients)}
    requests, failed_statuses = [0], []
    answered_after_kill: dict[str, float] = {}
    killed_at: list[float] = []
    latencies: dict[str, list[float]] = {"before": [], "after": []}
    first_read: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + deadline_seconds

    def client_loop(k: int, session_id: str) -> None:
        with httpx.Client(timeout=600.0) as client:
            for t in range(turns):
                text = f"{MESSAGES[(k + t) % len(MESSAGES)]} (turn {t + 1})"
                while time.monotonic() < deadline:
                    asked = time.monotonic()
                    status, picks = _turn(client, router_url, session_id, text)
                    with lock:
                        requests[0] += 1
                        if status == 200:
                            sent[session_id].append((text, picks))
                            latencies["after" if killed_at and asked > killed_at[0] else "before"].append(
                                time.monotonic() - asked)
                            if killed_at and session_id not in answered_after_kill:
                                answered_after_kill[session_id] = time.monotonic() - killed_at[0]
                            break
                        failed_statuses.append(status)
                    time.sleep(RETRY_PAUSE)

    def killer() -> None:
        total = clients * turns
        while time.monotonic() < deadline:
            with lock:
                if sum(len(a) for a in sent.values()) >= total * kill_at:
                    os.kill(victim_pid, signal.SIGKILL)
                    killed_at.append(time.monotonic())
                    break
            time.sleep(0.05)
        on_victim = sorted(_on_replica(access_log, victim_url) & set(sent))
        with httpx.Client(timeout=30.0) as client:  # the routing's recovery: a moved session's memory, read again
            while on_victim and time.monotonic() < deadline:
                try:
                    if client.get(f"{router_url}/v1/sessions/{on_victim[0]}").status_code == 200:
                        first_read.append(time.monotonic() - killed_at[0])
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k, s)) for k, s in enumerate(sent)]
    threads.append(threading.Thread(target=killer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    moved = _on_replica(access_log, victim_url) & set(sent)  # the sessions the killed replica served before it died
    store = PostgresSessionStore(postgres_url, learn=False)
    try:
        stored = _check_stored(store, sent)
    finally:
        store.close()
    turn_counts = stored.pop("turn_counts")
    continued = sum(turn_counts[s] >= turns for s in moved)
    recovery = [answered_after_kill[s] for s in moved if s in answered_after_kill]
    return {"clients": clients, "turns_per_client": turns, "requests": requests[0],
            "acknowledged": sum(len(a) for a in sent.values()), "failed_requests": len(failed_statuses),
            "failed_statuses": {str(s): failed_statuses.count(s) for s in sorted(set(failed_statuses))},
            "killed": bool(killed_at), "sessions_on_killed_replica": len(moved),
            "moved_sessions_finished": continued, **stored,
            "first_read_of_a_moved_session_seconds": round(first_read[0], 3) if first_read else None,
            "next_turn_of_moved_sessions_seconds_median": round(statistics.median(recovery), 2) if recovery else None,
            "next_turn_of_moved_sessions_seconds_max": round(max(recovery), 2) if recovery else None,
            "turn_p50_seconds_before_kill": _median(latencies["before"]),
            "turn_p50_seconds_after_kill": _median(latencies["after"]),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    from agent.engines import pick_dtype
    from deploy.servers import cluster
    from eval.latency import cpu_description

    parser = argparse.ArgumentParser(prog="python -m eval.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="passed to each `convrec serve`, e.g. --serve-arg=--adapter=DIR")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    with cluster(replicas=2, serve_args=tuple(args.serve_arg)) as running:
        described = running.describe()
        checks = {"round_robin": round_robin([r.url for r in running.replicas], running.postgres.url,
                                             clients=args.clients, turns=args.turns)}
        victim = running.replicas[0]
        checks["failover"] = failover(running.router.url, victim.process.pid, victim.url,
                                      Path(described["router_access_log"]), running.postgres.url,
                                      clients=args.clients, turns=args.turns)
    record = {"command": "python -m eval.failover " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu_description(), "dtype": pick_dtype("auto"), **checks}
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    rr, fo = checks["round_robin"], checks["failover"]
    ok = (rr["failures"] == 0 and rr["lost"] == 0 and rr["sessions_out_of_order"] == 0
          and rr["picks_missing_from_memory"] == 0 and fo["killed"] and fo["lost"] == 0
          and fo["moved_sessions_finished"] == fo["sessions_on_killed_replica"])
    return 0 if ok else 1


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


if __name__ == "__main__":
    sys.exit(main())
