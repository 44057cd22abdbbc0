import json
import sqlite3
import threading

import pytest

from agent import memory
from agent.store import SqliteSessionStore
from agent.types import SessionState, Signals


def test_session_survives_reopening_the_file(tmp_path):
    path = tmp_path / "s.sqlite3"
    state = memory.update(SessionState("abc"), Signals(opinions=(("m1", "liked"),)))
    SqliteSessionStore(path).save(state, turn={"user": "hi", "reply": "yo", "recommended": []})
    reopened = SqliteSessionStore(path)
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


def test_unknown_session_loads_as_none(tmp_path):
    assert SqliteSessionStore(tmp_path / "s.sqlite3").load("nope") is None


def test_concurrent_updates_to_one_session_lose_nothing(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")

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


def test_a_session_is_claimed_once_and_keeps_its_owner(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    assert store.claim("s1", "owner-a") == "owner-a"
    assert store.claim("s1", "owner-b") == "owner-a"
    store.save(memory.record(store.load("s1"), "hi", "yo", ()), turn={"user": "hi", "reply": "yo"})
    assert store.owner("s1") == (True, "owner-a") and store.owner("nope") == (False, None)


def test_feedback_events_are_stored_with_the_memory_and_forgotten_with_it(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
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


def test_the_explanations_rewrite_the_last_turn_and_nothing_else(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
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
