"""The session store's contract, on SQLite and on a real PostgreSQL (the `open_store` fixture runs each test on both),
then what is particular to each: SQLite's file format and upgrades, PostgreSQL's lock across processes."""

import json
import sqlite3
import threading
import time

import psycopg
import pytest

from agent import memory
from agent.store import SqliteSessionStore, StoreUnavailable
from agent.types import SessionState, Signals


def test_session_survives_reopening_the_store(open_store):
    state = memory.update(SessionState("abc"), Signals(opinions=(("m1", "liked"),)))
    open_store().save(state, turn={"user": "hi", "reply": "yo", "recommended": []})
    reopened = open_store()
    assert reopened.load("abc") == state
    assert reopened.history("abc")[0]["user"] == "hi"


def test_database_uses_wal(tmp_path):
    SqliteSessionStore(tmp_path / "s.sqlite3")
    mode = sqlite3.connect(tmp_path / "s.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_forget_leaves_no_row_behind(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = SqliteSessionStore(path)
    store.save(SessionState("gone"), turn={"user": "a", "reply": "b"})
    store.save(SessionState("kept"), turn={"user": "c", "reply": "d"})
    assert store.forget("gone") is True
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM sessions WHERE session_id='gone'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM turns WHERE session_id='gone'").fetchone()[0] == 0
    assert store.load("kept") is not None
    assert store.forget("gone") is False


def test_forget_removes_the_session_from_every_table_and_keeps_the_others(open_store):
    store = open_store()
    for session_id in ("gone", "kept"):
        state = memory.apply_feedback(memory.record(SessionState(session_id), "a", "b", ("m1",)), "like", "m2")
        store.save(state, turn={"user": "a", "reply": "b"}, events=[("like", "m2", "e-1")],
                   exposures=[("exp", "arm", "m1", 1)])
        store.update_last_turn(state, turn={"user": "a", "reply": "b, explained"}, trial=("exp", "arm", 0.5, False))
    assert store.forget("gone") is True and store.forget("gone") is False
    assert store.load("gone") is None and store.history("gone") == [] and store.events("gone") == []
    assert store.known_events("gone", ["e-1"]) == set() and store.owner("gone") == (False, None)
    store.register_experiment("exp", {"arms": ["arm"]})
    rows = store.experiment_rows("exp")
    assert {r[0] for r in rows["exposures"]} == {"kept"} and {r[0] for r in rows["trials"]} == {"kept"}
    assert [r[1:3] for r in store.likes_since(0)[0]] == [("kept", "m2")]
    assert store.history("kept")[0]["reply"] == "b, explained" and store.session_ids() == ["kept"]


def test_unknown_session_loads_as_none(open_store):
    assert open_store().load("nope") is None


def test_concurrent_updates_to_one_session_lose_nothing(open_store):
    store = open_store()

    def worker(k: int) -> None:
        with store.locked("shared"):
            state = store.load("shared") or SessionState("shared")
            store.save(memory.record(state, f"u{k}", "r", (f"item{k}",)), turn={"user": f"u{k}", "reply": "r"})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.load("shared")
    assert final.turn_count == 16 and len(final.recommended) == 16 and len(store.history("shared")) == 16


def test_a_session_is_claimed_once_and_keeps_its_owner(open_store):
    store = open_store()
    assert store.claim("s1", "owner-a") == "owner-a"
    assert store.claim("s1", "owner-b") == "owner-a"
    store.save(memory.record(store.load("s1"), "hi", "yo", ()), turn={"user": "hi", "reply": "yo"})
    assert store.owner("s1") == (True, "owner-a") and store.owner("nope") == (False, None)


def test_feedback_events_are_stored_with_the_memory_and_forgotten_with_it(open_store):
    store = open_store()
    state = memory.apply_feedback(SessionState("s"), "dislike", "m1")
    store.save(state, events=[("dislike", "m1")])
    assert store.events("s") == [("dislike", "m1")] and store.load("s").disliked == ("m1",)
    store.forget("s")
    assert store.events("s") == []


def test_a_store_from_before_owners_and_event_ids_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sessions (session_id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL,"
               " updated_at REAL NOT NULL)")
    db.execute("CREATE TABLE events (session_id TEXT NOT NULL, kind TEXT NOT NULL, item_id TEXT NOT NULL,"
               " created_at REAL NOT NULL)")
    db.execute("INSERT INTO sessions VALUES ('old', ?, 0, 0)", (json.dumps(SessionState("old").to_dict()),))
    db.execute("INSERT INTO events VALUES ('old', 'like', 'm1', 0)")
    db.commit()
    db.close()
    store = SqliteSessionStore(path)
    assert store.load("old") == SessionState("old") and store.owner("old") == (True, None)
    store.save(SessionState("old"), events=[("dislike", "m2", "e-1")])
    assert store.events("old") == [("like", "m1"), ("dislike", "m2")] and store.known_events("old", ["e-1"]) == {"e-1"}
    with pytest.raises(sqlite3.IntegrityError):  # an event id is stored once per session
        store.save(SessionState("old"), events=[("like", "m2", "e-1")])


def test_the_explanations_rewrite_the_last_turn_and_nothing_else(open_store):
    store = open_store()
    picks = memory.record(SessionState("s"), "hello", "1. Alien (1979)", ("a",))
    store.save(picks, turn={"user": "hello", "reply": "1. Alien (1979)", "recommended": ["a"]})
    explained = memory.record(SessionState("s"), "hello", "1. Alien (1979): a horror film.", ("a",))
    store.update_last_turn(explained, turn={"user": "hello", "reply": "1. Alien (1979): a horror film.",
                                            "recommended": ["a"]})
    assert [t["reply"] for t in store.history("s")] == ["1. Alien (1979): a horror film."]
    assert store.load("s").turns[-1].reply == "1. Alien (1979): a horror film."
    ahead = memory.record(explained, "more", "2", ("b",))  # a turn that was never saved: refused, nothing changes
    with pytest.raises(KeyError, match="no stored turn 2"):
        store.update_last_turn(ahead, turn={"user": "more", "reply": "2", "recommended": ["b"]})
    assert store.load("s").turn_count == 1 and len(store.history("s")) == 1


def test_an_event_id_is_stored_once_per_session_and_a_refused_batch_keeps_nothing(open_store):
    store = open_store()
    store.save(memory.apply_feedback(SessionState("s"), "like", "m1"), events=[("like", "m1", "e-1")])
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.save(memory.apply_feedback(store.load("s"), "like", "m2"), events=[("like", "m2", "e-2"),
                                                                             ("like", "m3", "e-1")])
    assert store.events("s") == [("like", "m1")] and store.load("s").liked == ("m1",)
    store.save(SessionState("other"), events=[("like", "m1", "e-1")])  # another session may use the same id
    assert store.known_events("other", ["e-1", "e-9"]) == {"e-1"}


def test_turns_of_one_session_through_two_stores_are_serialised_on_postgresql(postgres_url):
    """Two stores on one database stand for two replicas: each has its own process lock, so only PostgreSQL's
    advisory lock keeps their turns of one session apart."""
    from agent.store_postgres import PostgresSessionStore

    replicas = [PostgresSessionStore(postgres_url), PostgresSessionStore(postgres_url)]
    inside, most_inside = [0], [0]
    guard = threading.Lock()

    def turn(k: int) -> None:
        store = replicas[k % 2]
        with store.locked("shared"):
            with guard:
                inside[0] += 1
                most_inside[0] = max(most_inside[0], inside[0])
            state = store.load("shared") or SessionState("shared")
            store.save(memory.record(state, f"u{k}", "r", (f"item{k}",)), turn={"user": f"u{k}", "reply": "r"})
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=turn, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = replicas[0].load("shared")
    assert most_inside[0] == 1
    assert final.turn_count == 24 and len(set(final.recommended)) == 24 and len(replicas[1].history("shared")) == 24
    for store in replicas:
        store.close()


def test_a_lock_held_by_a_replica_that_dies_is_released(postgres_url):
    """The advisory lock lives on the replica's connection: when that connection dies (the process is killed),
    PostgreSQL ends its session and another replica takes the lock at once."""
    from agent.store_postgres import PostgresSessionStore

    first, second = PostgresSessionStore(postgres_url), PostgresSessionStore(postgres_url)
    taken = threading.Event()
    release = threading.Event()

    def hold() -> None:
        try:
            with first.locked("s"):
                taken.set()
                release.wait(30)
        except Exception:  # its connection is killed below  # noqa: BLE001
            pass

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(30)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND granted").fetchall()
    assert killed == [(True,)]
    with second.locked("s"):
        second.save(SessionState("s"))
    release.set()
    holder.join(30)
    assert second.load("s") == SessionState("s")
    first.close()
    second.close()


def test_a_database_server_that_is_gone_is_a_clear_message(postgres_url):
    from agent.store_postgres import PostgresSessionStore

    unreachable = postgres_url.rsplit("@", 1)[0] + "@127.0.0.1:1/nowhere"
    with pytest.raises(StoreUnavailable, match=r"PostgresSessionStore\('postgresql://convrec@127.0.0.1:1/nowhere'\)"):
        PostgresSessionStore(unreachable, wait_seconds=2)


def test_a_database_server_that_stops_and_returns_loses_nothing_committed(tmp_path):
    """Its own server, stopped under a live store: every call is a clear `StoreUnavailable` (the API's 503), nothing
    half-written is kept; once PostgreSQL is back on the same data, the same store works again with all it had."""
    from agent.store_postgres import PostgresSessionStore
    from deploy.servers import start_postgres

    server = start_postgres()
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    store = PostgresSessionStore(server.url, wait_seconds=2)
    state = memory.record(SessionState("s"), "hi", "yo", ("m1",))
    store.save(state, turn={"user": "hi", "reply": "yo"})
    try:
        assert server.stop(keep=True) == 0
        with pytest.raises(StoreUnavailable, match="cannot be used now"):
            store.save(memory.record(state, "more", "yo", ("m2",)), turn={"user": "more", "reply": "yo"})
        with pytest.raises(StoreUnavailable):
            store.load("s")
        with pytest.raises(StoreUnavailable), store.locked("s"):
            pass
        server = start_postgres(port, folder=server.folder)
        deadline = time.monotonic() + 60  # the pool reconnects with a backoff: 503s until then, as a client sees
        while True:
            try:
                assert store.load("s") == state
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back within 60 s of the server"
                time.sleep(0.5)
        assert len(store.history("s")) == 1
        store.save(memory.record(state, "more", "yo", ("m2",)), turn={"user": "more", "reply": "yo"})
        assert [t["user"] for t in store.history("s")] == ["hi", "more"]
    finally:
        store.close()
        server.stop()


def test_forget_waits_for_a_running_turn_of_the_session(open_store):
    """A turn holds the session's lock until its last write; forget comes after it, so the turn cannot bring a
    forgotten session back (the API's DELETE, the web chat's "Forget me" and `convrec forget` all go through it)."""
    store = open_store()
    store.save(SessionState("s"), turn={"user": "a", "reply": "b"})
    in_turn, finished = threading.Event(), threading.Event()

    def turn() -> None:
        with store.locked("s"):
            in_turn.set()
            time.sleep(0.5)
            store.save(memory.record(store.load("s"), "c", "d", ("m1",)), turn={"user": "c", "reply": "d"})
            finished.set()

    runner = threading.Thread(target=turn)
    runner.start()
    assert in_turn.wait(10)
    assert store.forget("s") is True and finished.is_set()
    runner.join()
    assert store.load("s") is None and store.history("s") == []
