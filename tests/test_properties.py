"""Properties (Hypothesis) of the memory and the store, over generated sequences of turns, events and removals:

- a disliked, seen or already-recommended item never comes back, unless the user removed it from the memory
  (real turns: the ReDial catalog, the real model ranking, through the API's `ChatService`);
- `forget` leaves no row of the session in any table of the SQLite file, and every other session's rows intact;
- an event with a client `event_id` sent twice (again in a later batch, or twice in one) is acknowledged and
  applied once.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import memory
from agent.store import SqliteSessionStore
from agent.types import SessionState
from ui.api.metrics import Metrics
from ui.api.protocol import FeedbackEvent
from ui.api.serving import ChatService

KINDS = memory.FEEDBACK_KINDS
MESSAGES = ("I loved The Matrix, what else?", "something funnier", "more like that", "I hated Titanic",
            "any 90s comedy?", "I've seen Alien already", "what else do you have?", "no horror please")
FIXED = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


# -- forget ------------------------------------------------------------------------------------------------------

def rows_of(path, session_id: str) -> dict[str, int]:
    """Rows that mention `session_id`, per table (every table of the file with a session_id column)."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f"SELECT COUNT(*) FROM {t} WHERE session_id = ?", (session_id,)).fetchone()[0]
                for t in tables if "session_id" in {c[1] for c in db.execute(f"PRAGMA table_info({t})")}}


writes = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["turn", "events", "claim"]),
                            st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["m1", "m2", "m3"])),
                                     max_size=3)),
                  min_size=1, max_size=12)


@FIXED
@given(writes)
def test_forget_leaves_no_row_and_keeps_other_sessions(tmp_path, steps):
    store = SqliteSessionStore(tmp_path / f"{uuid.uuid4().hex}.sqlite3")
    prefix = uuid.uuid4().hex[:8]
    states = {}
    for name, kind, events in steps:
        sid = f"{prefix}-{name}"
        state = states.get(sid) or SessionState(sid)
        if kind == "claim":
            store.claim(sid, owner=None)
            continue
        state = dataclasses.replace(state, turn_count=state.turn_count + (kind == "turn"))
        store.save(state, turn={"user": "hi", "reply": "ok"} if kind == "turn" else None,
                   events=[(k, item, uuid.uuid4().hex) for k, item in events] if kind == "events" else ())
        states[sid] = state
    before_b = rows_of(store.path, f"{prefix}-b")
    store.forget(f"{prefix}-a")
    assert not any(rows_of(store.path, f"{prefix}-a").values())
    assert rows_of(store.path, f"{prefix}-b") == before_b


# -- event ids ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_service(small_recommender) -> ChatService:
    return ChatService(small_recommender, Metrics())


event = st.tuples(st.sampled_from(KINDS), st.integers(0, 4), st.none() | st.sampled_from(["x", "y", "z"]))


@FIXED
@given(st.lists(st.lists(event, min_size=1, max_size=4), min_size=1, max_size=5))
def test_an_event_id_sent_twice_is_applied_once(small_service, batches):
    items = [item.item_id for item in small_service.recommender.catalog][:5]
    sid = f"events-{uuid.uuid4().hex[:10]}"
    small_service.claim(sid, None)
    expected, seen_ids, acknowledged = SessionState(sid), set(), 0
    for batch in batches:
        events = [FeedbackEvent(type=kind, item_id=items[k], event_id=eid) for kind, k, eid in batch]
        answer = small_service.apply_events(sid, events, None)
        acknowledged += answer["applied"] + answer["duplicates"]
        for e in events:
            if e.event_id is None or e.event_id not in seen_ids:
                expected = memory.apply_feedback(expected, e.type, e.item_id)
                seen_ids.add(e.event_id)
        assert answer["memory"] == expected.to_dict()
    stored = small_service.recommender.sessions.events(sid)
    assert acknowledged == sum(len(b) for b in batches)
    assert len(stored) == sum(1 for b in batches for e in b if e[2] is None) + len(seen_ids - {None})


# -- what never comes back ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redial_service(redial_recommender) -> ChatService:
    fast = dataclasses.replace(redial_recommender.settings, explain_with_llm=False)  # explanations are not the point
    return ChatService(dataclasses.replace(redial_recommender, settings=fast), Metrics())


step = st.one_of(st.tuples(st.just("turn"), st.sampled_from(MESSAGES)),
                 st.tuples(st.just("event"), st.sampled_from(KINDS), st.integers(0, 4)),
                 st.tuples(st.just("remove"), st.integers(0, 20)))


@pytest.mark.slow
@settings(FIXED, max_examples=8)
@given(st.lists(step, min_size=2, max_size=5))
def test_disliked_seen_and_recommended_items_never_return_unless_removed(redial_service, steps):
    svc = redial_service
    sid = f"never-{uuid.uuid4().hex[:10]}"
    svc.claim(sid, None)
    shown: list[str] = []
    for action, *args in [("turn", MESSAGES[0]), *steps]:
        state = svc.recommender.sessions.load(sid)
        if action == "turn":
            result = svc.run_turn(sid, args[0])
            blocked = {*state.disliked, *state.seen, *state.recommended, *result.memory.disliked,
                       *result.memory.seen}
            picks = [r.item_id for r in result.recommendations]
            assert not blocked & set(picks), (args[0], blocked & set(picks))
            assert len(set(picks)) == len(picks)
            shown = picks
        elif action == "event" and shown:
            kind, k = args
            svc.apply_events(sid, [FeedbackEvent(type=kind, item_id=shown[k % len(shown)])], None)
        elif action == "remove":
            entries = memory.entries(state)
            if entries:
                svc.remove_entry(sid, entries[args[0] % len(entries)], None)
