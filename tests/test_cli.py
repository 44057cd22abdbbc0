"""The `convrec` command as a user runs it: a real subprocess, real models, a temporary index and database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, FIXTURES, needs_data


def convrec(args: list, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        cwd=Path(__file__).parent.parent,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cli")
    return {
        **os.environ,
        "CONVREC_DATA_DIR": str(DATA_DIR),
        "CONVREC_INDEX_DIR": str(tmp / "index"),
        "CONVREC_DB": str(tmp / "sessions.sqlite3"),
    }


@pytest.fixture
def redial_env(env, redial_index_dir) -> dict:
    return {**env, "CONVREC_INDEX_DIR": str(redial_index_dir)}


@pytest.mark.slow
@needs_data
def test_three_turn_conversation_through_ask_json(redial_env):
    env = redial_env
    turns = [
        "Hi! I loved The Matrix and Inception.",
        "Something funnier please, nothing before 1990.",
        "I didn't like the first one. What else?",
    ]
    previous_turns = 0
    seen_ids: set[str] = set()
    from retrieval.catalog import load_redial_catalog

    catalog = load_redial_catalog(DATA_DIR)
    for text in turns:
        done = convrec(["ask", "--session", "cli-three", "--json", text], env)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        result = json.loads(done.stdout)
        recs = result["recommendations"]
        assert len(recs) >= 3
        for rec in recs:
            assert rec["item_id"] in catalog
            assert rec["explanation"].strip() and rec["facts"]
            assert rec["item_id"] not in seen_ids
        seen_ids |= {rec["item_id"] for rec in recs}
        assert result["memory"]["turn_count"] == previous_turns + 1
        previous_turns += 1
    memory = result["memory"]
    assert memory["constraints"]["min_year"] == 1990 and "Comedy" in memory["constraints"]["genres"]
    assert len(memory["liked"]) >= 2 and memory["disliked"]
    shown = convrec(["memory", "--session", "cli-three"], env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["turn_count"] == 3


@pytest.mark.slow
@needs_data
def test_ask_prints_the_picks_then_the_explanations(redial_env):
    done = convrec(["ask", "--session", "cli-order", "I loved The Matrix, what else?"], redial_env)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = done.stdout.decode().splitlines()
    why = lines.index("Why:")
    picks = [line for line in lines[:why] if line[:2] in {f"{k}." for k in range(1, 10)}]
    explained = lines[why + 1:]
    assert len(picks) >= 3 and len(explained) == len(picks)
    for pick, explanation in zip(picks, explained, strict=True):  # the list alone first, then each explanation
        rank, label = pick.split(". ", 1)
        assert explanation.startswith(f"{rank}. {label.rsplit(' (', 1)[0]}: ")


@pytest.mark.slow
@needs_data
def test_bench_json_is_one_object_with_the_turn_and_first_pick_percentiles(redial_env):
    done = convrec(["bench", "--json", "--sessions", "2", "--turns", "1", "--warmup", "0"], redial_env, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)
    assert report["turns"] == 2 and report["engine"] == "transformers" and report["dtype"] in ("bfloat16", "float32")
    assert 0 < report["first_pick_p50"] <= report["turn_p50"] <= report["turn_p95"]
    assert report["first_pick_p50"] <= report["first_pick_p95"] and report["prefix_cache"] is True
    assert {"understand", "retrieve", "rank", "explain", "save"} <= set(report["stages"])
    assert set(report["cpu"]) >= {"model", "avx512_bf16", "amx"}


def test_memory_of_an_unknown_session_is_a_clear_error(env):
    done = convrec(["memory", "--session", "never-used"], env)
    assert (
        done.returncode == 2 and b"no session 'never-used'" in done.stderr and b"Traceback" not in done.stderr
    )


def test_forget_removes_every_row(env, tmp_path):
    from agent.store import SqliteSessionStore
    from agent.types import SessionState

    SqliteSessionStore(Path(env["CONVREC_DB"])).save(
        SessionState("to-forget"), turn={"user": "a", "reply": "b"}
    )
    done = convrec(["forget", "--session", "to-forget"], env)
    assert done.returncode == 0
    db = sqlite3.connect(env["CONVREC_DB"])
    assert db.execute("SELECT count(*) FROM turns WHERE session_id = 'to-forget'").fetchone()[0] == 0
    assert convrec(["forget", "--session", "to-forget"], env).returncode == 2


@pytest.mark.parametrize(
    "text, message", [(b"", b"empty"), (b"x" * 100_000, b"limit"), (b"caf\xff\xfe", b"UTF-8")]
)
def test_bad_text_is_refused_before_loading_anything(env, text, message):
    done = convrec([b"ask", b"--session", b"bad-input", text], env, timeout=60)
    assert done.returncode == 2 and message in done.stderr and b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "fixture, message", [("catalog_duplicate_id.jsonl", b"duplicate"), ("catalog_missing_id.csv", b"id")]
)
def test_a_broken_catalog_is_reported_and_the_store_is_untouched(env, fixture, message):
    from agent.store import SqliteSessionStore
    from agent.types import SessionState

    store = SqliteSessionStore(Path(env["CONVREC_DB"]))
    store.save(SessionState("precious", liked=("1",)))
    done = convrec(
        ["ask", "--catalog", str(FIXTURES / fixture), "--session", "precious", "hello"], env, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr.lower() and b"Traceback" not in done.stderr
    assert store.load("precious") == SessionState("precious", liked=("1",))
