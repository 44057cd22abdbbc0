"""Scaled out on real parts, started the way `make cluster` starts them (python -m deploy.cluster): PostgreSQL,
Chroma's server holding the index, two `convrec serve` replicas sharing both, nginx routing by session. The load
checks are eval/failover.py's (`make failover` runs them with the adapter and the model's explanations)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deploy.servers import nginx_bin, postgres_bin, routed_requests
from eval.failover import failover, round_robin
from tests.conftest import DATA_DIR, REPO_ROOT, SMALL_CATALOG, require_servers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """The cluster's addresses and pids (its --state file); stopped with SIGTERM at the end, which must stop every
    server it started and exit 0."""
    require_servers(postgres_bin, nginx_bin)
    work = tmp_path_factory.mktemp("cluster")
    state = work / "state.json"
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR)}
    process = subprocess.Popen([sys.executable, "-m", "deploy.cluster", "--router-port", "0", "--state", str(state),
                                "--logs", str(work / "logs"), "--serve-arg=--no-llm-explanations"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 900
    while not state.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the cluster did not come up: {process.stdout.read()[-3000:]}")
        time.sleep(1)
    described = json.loads(state.read_text())
    yield described
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0, process.stdout.read()[-3000:]
    assert not state.exists()
    for pid in described["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_one_session_stays_on_one_replica_and_requests_without_one_go_round_robin(running):
    with httpx.Client(timeout=300) as client:
        for session_id in ("route-a", "route-b", "route-c"):
            for text in ("I loved Alien", "Something funnier"):
                response = client.post(f"{running['router']}/v1/chat/completions",
                                       headers={"X-Session-Id": session_id},
                                       json={"messages": [{"role": "user", "content": text}]})
                assert response.status_code == 200
            assert client.get(f"{running['router']}/v1/sessions/{session_id}").json()["turns"] == 2
        for _ in range(6):
            assert client.get(f"{running['router']}/v1/models").status_code == 200
    rows = routed_requests(running["router_access_log"])
    for session_id in ("route-a", "route-b", "route-c"):  # its chat turns and its /v1/sessions/{id} read
        assert len({upstream for _, upstream, key in rows if key == session_id}) == 1
    unkeyed = [upstream for uri, upstream, _ in rows if uri == "/v1/models"]
    replicas = {r["url"].removeprefix("http://") for r in running["replicas"]}
    assert len(unkeyed) == 6 and set(unkeyed) == replicas


def test_the_commands_read_and_forget_a_session_in_postgresql(running):
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR)}
    with httpx.Client(timeout=300) as client:
        assert client.post(f"{running['router']}/v1/chat/completions", headers={"X-Session-Id": "cli-a"},
                           json={"messages": [{"role": "user", "content": "I loved Alien"}]}).status_code == 200
        shown = subprocess.run([sys.executable, "-m", "ui.cli", "memory", "--db", running["postgres"], "--session",
                                "cli-a"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["turn_count"] == 1
        forgot = subprocess.run([sys.executable, "-m", "ui.cli", "forget", "--db", running["postgres"], "--session",
                                 "cli-a"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert forgot.returncode == 0 and "forgot session cli-a" in forgot.stdout, forgot.stderr
        assert client.get(f"{running['router']}/v1/sessions/cli-a").status_code == 404


def test_the_index_is_built_on_chromas_server_and_replicas_refuse_a_missing_or_stale_one(running, tmp_path):
    from agent.build import load_embedder
    from retrieval.catalog import load_catalog_file
    from retrieval.index import IndexUnavailable, build_index, item_document
    from tests.conftest import make_settings

    copy = tmp_path / "catalog.jsonl"
    copy.write_text(SMALL_CATALOG.read_text())
    catalog, embedder = load_catalog_file(copy), load_embedder(make_settings(tmp_path))
    with pytest.raises(IndexUnavailable, match="convrec index --index-url"):
        build_index(catalog, embedder, running["chroma"], progress=False, build=False)
    index, status = build_index(catalog, embedder, running["chroma"], progress=False)
    assert status.rebuilt and status.count == len(catalog)
    again, status = build_index(catalog, embedder, running["chroma"], progress=False, build=False)
    assert not status.rebuilt
    first = next(iter(catalog))
    vector = embedder.embed([item_document(first)])[0]
    assert again.query(vector, 1)[0][0] == first.item_id
    lines = copy.read_text().splitlines()
    copy.write_text("\n".join(lines[:-1]) + "\n")  # the catalog changed: the stored index is stale
    with pytest.raises(IndexUnavailable, match="missing or was built from another catalog"):
        build_index(load_catalog_file(copy), embedder, running["chroma"], progress=False, build=False)


def test_16_clients_x_5_turns_round_robin_over_two_replicas_store_every_turn_in_order(running):
    summary = round_robin([r["url"] for r in running["replicas"]], running["postgres"], clients=16, turns=5)
    assert summary["acknowledged"] == 80 and summary["failures"] == 0, summary
    assert summary["lost"] == 0 and summary["stored_not_acknowledged"] == 0, summary
    assert summary["sessions_out_of_order"] == 0 and summary["sessions_with_all_turns"] == 16, summary
    assert summary["picks_missing_from_memory"] == 0 and summary["picks_repeated"] == 0, summary


def test_kill_9_of_a_replica_behind_nginx_loses_no_acknowledged_turn_and_its_sessions_go_on(running):
    """Last in this file: it leaves one replica."""
    victim = running["replicas"][0]
    summary = failover(running["router"], victim["pid"], victim["url"], Path(running["router_access_log"]),
                       running["postgres"], clients=16, turns=5)
    assert summary["killed"] and summary["acknowledged"] == 80, summary
    assert summary["lost"] == 0 and summary["sessions_out_of_order"] == 0, summary
    assert summary["picks_missing_from_memory"] == 0, summary
    assert summary["sessions_on_killed_replica"] > 0, summary
    assert summary["moved_sessions_finished"] == summary["sessions_on_killed_replica"], summary
    assert summary["first_read_of_a_moved_session_seconds"] < 10, summary
    assert summary["next_turn_of_moved_sessions_seconds_max"] is not None, summary
