"""A/B experiments: the file, sticky assignment, exposures in the turn's transaction, forgetting, the report's
statistics, and a real server running one with simulated users."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter

import httpx
import numpy as np
import pytest

from agent.experiments import ExperimentError, load_experiment, parse_experiment
from agent.store import SqliteSessionStore
from agent.types import SessionState
from deploy.servers import REPO, free_port, start_server
from eval.experiments import experiment_report, format_report, html_report
from tests.conftest import DATA_DIR

EXPERIMENT = {"name": "t", "split": {"a": 0.5, "b": 0.5}, "arms": {"a": {}, "b": {"ranking": "popularity"}}}


def test_the_committed_experiment_files_parse():
    assert load_experiment(REPO / "experiments" / "pipeline-vs-popularity.toml").arms["popularity"] == {
        "ranking": "popularity"}
    assert list(load_experiment(REPO / "experiments" / "a-a.toml").split) == ["a", "b"]


@pytest.mark.parametrize("change, message", [
    ({"name": ""}, "name"),
    ({"split": {"a": 0.5}}, "split"),
    ({"split": {"a": 0.7, "b": 0.7}}, "sum to 1"),
    ({"arms": {"a": {}, "b": {"colour": "red"}}}, "unknown setting 'colour'"),
    ({"arms": {"a": {}, "b": {"ranking": "dice"}}}, "ranking"),
    ({"primary_metric": "revenue"}, "primary_metric"),
    ({"arms": {"a": {}, "b": {"retrieval_weight": "high"}}}, "retrieval_weight"),
    ({"arms": {"a": {}, "b": {"retrieval": {"dense": "x"}}}}, "fusion settings"),
    ({"guardrails": 3}, "guardrails"),
    ({"guardrails": {"error_rate": "low"}}, "guardrails"),
])
def test_a_malformed_experiment_is_refused_with_the_reason(change, message):
    with pytest.raises(ExperimentError, match=message):
        parse_experiment({**EXPERIMENT, **change})


def test_the_control_is_the_splits_first_arm_whatever_order_the_arms_come_in():
    experiment = parse_experiment({**EXPERIMENT, "split": {"b": 0.5, "a": 0.5}})
    assert list(experiment.split) == list(experiment.arms) == ["b", "a"]


def test_a_failed_turn_of_a_forgotten_session_leaves_no_trial(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    store.register_experiment("t", parse_experiment(EXPERIMENT).definition())
    store.claim("x", None)
    store.record_failed_trial("x", "t", "a")
    store.forget("x")
    store.record_failed_trial("x", "t", "a")  # a turn that failed after its session was forgotten
    assert store.experiment_rows("t")["trials"] == []


def test_assignment_is_sticky_deterministic_and_follows_the_split():
    experiment = parse_experiment({**EXPERIMENT, "split": {"a": 0.2, "b": 0.8}})
    again = parse_experiment({**EXPERIMENT, "split": {"a": 0.2, "b": 0.8}})
    arms = [experiment.arm_of(f"s{k}") for k in range(20000)]
    assert arms == [again.arm_of(f"s{k}") for k in range(20000)]  # another process, the same answer
    share = Counter(arms)["a"] / len(arms)
    assert 0.19 < share < 0.21
    other = parse_experiment({**EXPERIMENT, "name": "u", "split": {"a": 0.2, "b": 0.8}})
    assert sum(other.arm_of(f"s{k}") != arms[k] for k in range(20000)) > 4000  # independent across experiments


def turn_state(session_id: str, turns: int) -> SessionState:
    return dataclasses.replace(SessionState(session_id), turn_count=turns)


def test_exposures_are_stored_with_their_turn_or_not_at_all(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    turn = {"user": "hi", "reply": "yo", "recommended": ["1", "2"]}
    store.save(turn_state("x", 1), turn=turn, exposures=[("t", "a", "1", 1), ("t", "a", "2", 2)])
    store.register_experiment("t", parse_experiment(EXPERIMENT).definition())
    with pytest.raises(Exception):  # noqa: B017 - the same turn index again: the transaction fails
        store.save(turn_state("x", 1), turn=turn, exposures=[("t", "a", "3", 1)])
    rows = store.experiment_rows("t")
    assert [r[3] for r in rows["exposures"]] == ["1", "2"]


def test_a_failure_while_writing_an_exposure_keeps_neither_the_turn_nor_the_memory(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    store.register_experiment("t", parse_experiment(EXPERIMENT).definition())
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:  # the second exposure's insert fails
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON exposures WHEN NEW.item_id = 'boom' "
                   "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError):
        store.save(dataclasses.replace(turn_state("x", 1), liked=("9",)),
                   turn={"user": "a", "reply": "b", "recommended": ["1", "boom"]},
                   exposures=[("t", "a", "1", 1), ("t", "a", "boom", 2)])
    assert store.experiment_rows("t")["exposures"] == [] and store.history("x") == [] and store.load("x") is None


def test_forget_removes_the_sessions_exposures_and_trials(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    store.register_experiment("t", parse_experiment(EXPERIMENT).definition())
    turn = {"user": "hi", "reply": "yo", "recommended": ["1"]}
    for session_id in ("x", "y"):
        store.save(turn_state(session_id, 1), turn=turn, exposures=[("t", "a", "1", 1)])
        store.update_last_turn(turn_state(session_id, 1), turn, trial=("t", "a", 1.5, False))
    store.record_failed_trial("x", "t", "a")
    store.forget("x")
    rows = store.experiment_rows("t")
    assert {r[0] for r in rows["exposures"]} == {"y"} and {r[0] for r in rows["trials"]} == {"y"}


def synthetic_rows(rates: dict[str, float], sessions: int, seed: int) -> dict:
    """Sessions of 15 exposures each; each exposure liked with its arm's probability."""
    rng = np.random.default_rng(seed)
    exposures, events, trials = [], [], []
    for arm, rate in rates.items():
        for s in range(sessions):
            session_id = f"{arm}-{s}"
            for k in range(15):
                exposures.append((session_id, arm, k // 5 + 1, f"i{k}", k % 5 + 1, 100.0 + k))
                if rng.random() < rate:
                    events.append((session_id, "like", f"i{k}", 200.0 + k))
                else:
                    events.append((session_id, "dislike", f"i{k}", 200.0 + k))
            trials += [(session_id, arm, 2.0, 0, 0)] * 3
    definition = parse_experiment({**EXPERIMENT, "split": {a: 1 / len(rates) for a in rates},
                                   "arms": {a: {} for a in rates}}).definition()
    return {"definition": definition, "exposures": exposures, "trials": trials, "events": events}


def test_the_report_finds_a_real_difference_and_none_between_identical_arms():
    different = experiment_report(synthetic_rows({"a": 0.05, "b": 0.12}, 100, seed=1))
    assert different["comparisons"][0]["significant"] and different["comparisons"][0]["difference"] > 0.04
    a = different["arms"]["a"]
    assert a["exposures"] == 1500 and a["ci95"][0] < a["like_rate"] < a["ci95"][1]
    assert a["guardrails"] == {"latency_p95_seconds": 2.0, "fallback_rate": 0.0, "error_rate": 0.0}
    same = experiment_report(synthetic_rows({"a": 0.08, "b": 0.08}, 100, seed=2))
    assert not same["comparisons"][0]["significant"]
    assert "not significant" in format_report(same)


def test_a_like_before_the_pick_was_shown_is_no_outcome_and_names_are_escaped():
    rows = synthetic_rows({"a": 1.0, "<b>": 1.0}, 3, seed=0)
    rows["events"] = [(s, kind, i, t - 1000.0) for s, kind, i, t in rows["events"]]
    report = experiment_report(rows)
    assert all(arm["likes"] == 0 for arm in report["arms"].values())
    page = html_report(report, rows)
    assert "<b>" not in page and "&lt;b&gt;" in page


@pytest.mark.slow
def test_a_server_runs_an_experiment_with_simulated_users(tmp_path, redial_index_dir):
    """Pipeline against popularity on a real `convrec serve`: sessions keep their arm, every pick is an exposure,
    `GET /v1/experiments` and `convrec experiments report` agree, forgetting a session removes its exposures."""
    db = tmp_path / "sessions.sqlite3"
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(db)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    experiment = REPO / "experiments" / "pipeline-vs-popularity.toml"
    server = start_server(port, env, "--no-llm-explanations", "--candidates", "6", "--experiment", str(experiment),
                          log_path=tmp_path / "server.log")
    try:
        simulated = subprocess.run([sys.executable, "-m", "ui.cli", "simulate", "--url", url, "--users", "6",
                                    "--turns", "2", "--clients", "2", "--json"], cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=900)
        assert simulated.returncode == 0, simulated.stderr
        out = json.loads(simulated.stdout)
        assert out["simulation"]["turns"] == 12 and out["simulation"]["failed_turns"] == 0
        report = out["experiments"][0]
        arms = report["arms"]
        assert sum(a["sessions"] for a in arms.values()) == 6 and sum(a["turns"] for a in arms.values()) == 12
        assert sum(a["exposures"] for a in arms.values()) == out["simulation"]["picks"]
        assert sum(a["likes"] for a in arms.values()) == out["simulation"]["likes"]
        store = SqliteSessionStore(db, learn=False)
        rows = store.experiment_rows("pipeline-vs-popularity")
        by_session = {}
        for session_id, arm, *_ in rows["trials"]:
            by_session.setdefault(session_id, set()).add(arm)
        assert all(len(arms_seen) == 1 for arms_seen in by_session.values())  # sticky
        printed = subprocess.run([sys.executable, "-m", "ui.cli", "experiments", "report", "pipeline-vs-popularity",
                                  "--json", "--db", str(db)], cwd=REPO, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert json.loads(printed.stdout)["arms"] == arms
        forgotten = next(iter(by_session))
        assert httpx.delete(f"{url}/v1/sessions/{forgotten}", timeout=30).status_code == 200
        rows = store.experiment_rows("pipeline-vs-popularity")
        assert forgotten not in {r[0] for r in rows["exposures"]} | {r[0] for r in rows["trials"]}
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_bad_experiment_file_stops_the_server_before_the_model_loads(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[split]\na = 1.0\n[arms.a]\n')
    for argv, message in ((["serve", "--experiment", str(bad)], "at least two"),
                          (["serve", "--experiment", str(tmp_path / "none.toml")], "cannot read"),
                          (["experiments", "report", "x", "--db", str(tmp_path / "none.sqlite3")], "no session store")):
        done = subprocess.run([sys.executable, "-m", "ui.cli", *argv], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
