"""Learning across sessions (retrieval/online.py over the store's `likes`): counts, decay, idempotence, forgetting,
the switch, a real server killed with -9, and one session's likes reaching another session's candidates."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3

import httpx
import pytest

from agent.store import SqliteSessionStore
from agent.types import SessionState
from deploy.servers import free_port, start_server
from retrieval.online import Blended, OnlineSignal
from tests.conftest import DATA_DIR

DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def like(store: SqliteSessionStore, session_id: str, *items: str) -> None:
    state = store.load(session_id) or SessionState(session_id)
    store.save(dataclasses.replace(state, liked=tuple(dict.fromkeys((*state.liked, *items)))),
               events=[("like", i) for i in items])


def model(store: SqliteSessionStore, clock=None) -> OnlineSignal:
    return OnlineSignal(store.likes_since, refresh_seconds=0, **({"clock": clock} if clock else {}))


def test_likes_become_popularity_and_co_occurrence(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    like(store, "a", "1", "2")
    like(store, "b", "1", "2", "3")
    like(store, "c", "1")
    online = model(store)
    assert online.popularity() == pytest.approx({"1": 3.0, "2": 2.0, "3": 1.0}, rel=1e-6)
    scores = online.scores(["1"])
    assert scores["2"] == pytest.approx(2 / (3 * 2) ** 0.5, rel=1e-6)  # together 2, popularity 3 and 2
    assert scores["3"] == pytest.approx(1 / 3**0.5, rel=1e-6)
    assert "1" not in scores


def test_a_like_fades_by_half_each_half_life(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    like(store, "a", "1")
    clock = Clock()
    online = OnlineSignal(store.likes_since, refresh_seconds=0, half_life_days=14, clock=clock)
    clock.now = store.likes_since(0)[0][0][3]
    assert online.popularity()["1"] == pytest.approx(1.0)
    clock.now += 14 * DAY
    assert online.popularity()["1"] == pytest.approx(0.5)


def test_a_repeated_like_counts_once_and_a_like_taken_back_is_gone(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    like(store, "a", "1", "2")
    online = model(store)
    assert online.popularity()["1"] == pytest.approx(1.0)
    like(store, "a", "1")  # the same event again
    assert online.popularity()["1"] == pytest.approx(1.0)
    state = store.load("a")
    store.save(dataclasses.replace(state, liked=("2",), disliked=("1",)), events=[("dislike", "1")])
    assert "1" not in online.popularity() and online.scores(["2"]) == {}


def test_forgetting_a_session_removes_what_it_taught(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    like(store, "a", "1", "2")
    like(store, "b", "1", "3")
    online = model(store)
    assert set(online.scores(["1"])) == {"2", "3"}
    store.forget("a")
    assert set(online.scores(["1"])) == {"3"} and online.popularity() == pytest.approx({"1": 1.0, "3": 1.0})


def test_the_switch_off_writes_and_learns_nothing(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3", learn=False)
    like(store, "a", "1", "2")
    assert store.likes_since(0) == ([], 0)
    assert model(store).popularity() == {}


def test_other_processes_see_a_like_within_the_refresh_interval(tmp_path):
    writer, reader = SqliteSessionStore(tmp_path / "s.sqlite3"), SqliteSessionStore(tmp_path / "s.sqlite3")
    online = OnlineSignal(reader.likes_since, refresh_seconds=3600)
    assert online.popularity() == {}
    like(writer, "a", "1")
    assert online.popularity() == {}  # not yet: it catches up every refresh_seconds
    online.refresh(force=True)
    assert online.popularity() == pytest.approx({"1": 1.0})


def test_blended_adds_the_online_scores_to_the_batch_model(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    like(store, "a", "1", "2")

    class Batch:
        name = "batch"

        def scores(self, seeds):
            return {"3": 0.5}

    blended = Blended(Batch(), model(store))
    assert blended.scores(["1"]) == pytest.approx({"3": 0.5, "2": 1.0})
    assert Blended(None, model(store)).scores(["1"]) == pytest.approx({"2": 1.0})


@pytest.mark.slow
def test_a_real_server_applies_each_event_once_and_a_kill_9_loses_no_like(tmp_path, redial_index_dir):
    db = tmp_path / "sessions.sqlite3"
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(db), "CONVREC_ONLINE": "1"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, env, "--no-llm-explanations")
    try:
        acknowledged = 0
        for k in range(6):
            session = httpx.post(f"{url}/v1/sessions", json={"session_id": f"online-{k}"}, timeout=30).json()
            assert session["created"] is True
            events = [{"type": "like", "item_id": item, "event_id": f"e{k}-{item}"} for item in ("85036", "204974")]
            first = httpx.post(f"{url}/v1/sessions/online-{k}/events", json=events, timeout=30).json()
            again = httpx.post(f"{url}/v1/sessions/online-{k}/events", json=events, timeout=30).json()
            assert (first["applied"], again["applied"], again["duplicates"]) == (2, 0, 2)
            acknowledged += 1
        assert httpx.post(f"{url}/v1/sessions", json={"session_id": "online-0"}, timeout=30).json()["created"] is False
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    online = model(SqliteSessionStore(db))
    assert online.popularity() == pytest.approx({"85036": acknowledged, "204974": acknowledged}, rel=1e-6)
    assert online.scores(["85036"]) == pytest.approx({"204974": 1.0}, rel=1e-6)


def test_what_other_sessions_liked_reaches_a_new_sessions_candidates_within_the_refresh(tmp_path):
    """Twenty sessions like two unrelated, little-mentioned movies together: a new session that likes the first gets
    the second among its candidates (collaborative list) and both climb the popularity list; with the switch off,
    neither moves."""
    from retrieval.candidates import CandidateQuery, FusionConfig, HybridRetriever
    from retrieval.catalog import load_redial_catalog

    catalog = load_redial_catalog(DATA_DIR)
    rare = sorted((i for i in catalog if catalog.popularity.get(i.item_id, 0) == 1 and i.year), key=lambda i: i.item_id)
    first, second = rare[0].item_id, rare[1].item_id
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    online = OnlineSignal(store.likes_since, refresh_seconds=0)
    learning = HybridRetriever(catalog, None, None, Blended(None, online), online=online,
                               config=FusionConfig(dense=0, constraints=0))
    frozen = HybridRetriever(catalog, None, None, None, config=FusionConfig(dense=0, constraints=0))
    query = CandidateQuery(liked=(first,), exclude=frozenset({first}))
    assert second not in [c.item_id for c in learning.candidates(query, 10)]
    for k in range(20):
        like(store, f"fan-{k}", first, second)
    assert [c.item_id for c in learning.candidates(query, 10)][0] == second
    assert learning.popularity_order().index(second) < 200 < 1000 < frozen.popularity_order().index(second)
    assert second not in [c.item_id for c in frozen.candidates(query, 10)]


def test_the_serving_commands_learn_the_offline_jobs_never_and_the_switch_turns_it_off(monkeypatch):
    from ui.cli import _parser, _settings

    parser = _parser()

    def learns(*argv: str) -> bool:
        return _settings(parser.parse_args(list(argv))).online_learning

    monkeypatch.delenv("CONVREC_ONLINE", raising=False)
    assert learns("serve") and learns("ui") and learns("ask", "--session", "s", "hi")
    assert not learns("serve", "--no-online-learning") and not learns("ui", "--no-online-learning")
    monkeypatch.setenv("CONVREC_ONLINE", "1")
    assert not learns("eval") and not learns("ranker") and not learns("finetune")
    monkeypatch.setenv("CONVREC_ONLINE", "0")
    assert not learns("serve")


@pytest.mark.slow
def test_other_sessions_likes_move_the_candidates_but_never_reach_the_explanations(tmp_path, redial_recommender):
    """Twenty sessions liked The Matrix and one rarely mentioned movie. A new session that loves The Matrix gets that
    movie among the candidates the model ranks (online co-occurrence), and its explanations cite only what this
    session said it liked: no other user's movie is named unless it is the pick itself."""
    catalog = redial_recommender.catalog
    matrix = next(i.item_id for i in catalog if i.label == "The Matrix (1999)")
    rare = sorted((i for i in catalog if catalog.popularity.get(i.item_id, 0) == 1 and i.year and i.genres),
                  key=lambda i: i.item_id)[0]
    store = SqliteSessionStore(tmp_path / "sessions.sqlite3")
    for k in range(20):
        like(store, f"fan-{k}", matrix, rare.item_id)
    online = OnlineSignal(store.likes_since, refresh_seconds=0)
    retriever = dataclasses.replace(redial_recommender.retriever, online=online,
                                    collaborative=Blended(redial_recommender.retriever.collaborative, online))
    recommender = dataclasses.replace(redial_recommender, sessions=store, retriever=retriever)
    result = recommender.run_turn("newcomer", "I loved The Matrix (1999), what else?")
    assert rare.item_id in result.trace.candidate_ids
    own = {catalog[i].label for i in result.memory.liked}
    for rec in result.recommendations:
        assert set(rec.facts.get("liked", ())) <= own
        if rec.item_id != rare.item_id:
            assert rare.title not in rec.explanation


def test_a_recount_changes_the_version_so_no_stale_popularity_order_is_kept(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    like(store, "a", "1")
    online = model(store)
    online.refresh()
    seen = {online.version}
    store.forget("a")
    like(store, "b", "2")  # one row gone, one come: the same count, another model
    online.refresh()
    assert online.version not in seen and online.popularity() == pytest.approx({"2": 1.0})


def test_likes_spread_over_many_half_lives_recount_instead_of_overflowing(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    clock = Clock(0.0)
    online = OnlineSignal(store.likes_since, refresh_seconds=0, half_life_days=1 / 86400, clock=clock)  # 1 s
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:
        db.execute("INSERT INTO sessions VALUES ('a', '{}', 0, 0, NULL)")
        db.execute("INSERT INTO sessions VALUES ('b', '{}', 0, 0, NULL)")
        db.execute("INSERT INTO likes (session_id, item_id, created_at) VALUES ('a', '1', 0), ('a', '2', 0)")
    online.refresh()
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:  # 2,000 half lives later: 2^2000 would overflow
        db.execute("INSERT INTO likes (session_id, item_id, created_at) VALUES ('b', '1', 2000), ('b', '3', 2000)")
    clock.now = 2000.0
    assert online.popularity() == pytest.approx({"1": 1.0, "2": 0.0, "3": 1.0})
    assert online.scores(["1"]) == pytest.approx({"3": 1.0})


def test_the_half_life_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="half life"):
        OnlineSignal(SqliteSessionStore(tmp_path / "s.sqlite3").likes_since, half_life_days=0)
