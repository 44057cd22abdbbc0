"""Session memory and turn history, in one SQLite file (WAL; the default) or in PostgreSQL (agent/store_postgres.py,
for replicas on several hosts), so sessions survive restarts and crashes.

Each `save` is one transaction: the new memory and the turn or feedback events that produced it are committed
together, or not at all. A turn is saved with its picks first; `update_last_turn` adds its explanations (a second
transaction). A feedback event may carry the client's id: stored once per session, so a retried event is
applied once. With API keys, a session has an owner (a hash of the key that created it). `forget` deletes
every row of a session. With online learning on, the store also keeps each session's liked items (`likes`: what
the memory likes now, with when it was first liked), written in the same transaction as the memory, for the model
that learns across sessions (retrieval/online.py). `locked` serialises the turns of one session (no lost updates):
within a process for SQLite, across every process and host that shares the database for PostgreSQL; different
sessions run in parallel.

`SessionStore` holds the statements, written once in the SQL both databases speak; a backend gives connections
(`_connect`), the words that open a transaction and the session lock. `open_store` picks one from `--db`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from agent.types import SessionState

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    created_at {time} NOT NULL,
    updated_at {time} NOT NULL,
    owner      TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    turn_index INTEGER NOT NULL,
    user_text  TEXT NOT NULL,
    reply      TEXT NOT NULL,
    result     TEXT NOT NULL,
    created_at {time} NOT NULL,
    PRIMARY KEY (session_id, turn_index)
);
CREATE TABLE IF NOT EXISTS events ({event_seq}
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    created_at {time} NOT NULL,
    event_id   TEXT
);
CREATE INDEX IF NOT EXISTS events_by_session ON events(session_id);
CREATE TABLE IF NOT EXISTS likes (
    id         {serial},
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    item_id    TEXT NOT NULL,
    created_at {time} NOT NULL,
    UNIQUE (session_id, item_id)
);
CREATE TABLE IF NOT EXISTS experiments (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at {time} NOT NULL
);
CREATE TABLE IF NOT EXISTS exposures (
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    experiment TEXT NOT NULL,
    arm        TEXT NOT NULL,
    turn_index INTEGER NOT NULL,
    item_id    TEXT NOT NULL,
    rank       INTEGER NOT NULL,
    created_at {time} NOT NULL,
    PRIMARY KEY (session_id, turn_index, item_id)
);
CREATE TABLE IF NOT EXISTS trials (
    session_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    arm        TEXT NOT NULL,
    turn_index INTEGER,
    seconds    {time},
    fallback   INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    created_at {time} NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures(experiment);
CREATE INDEX IF NOT EXISTS trials_by_experiment ON trials(experiment, session_id);
"""
"""Every table, in words both databases take; each backend fills in its types: {time} a timestamp in seconds,
{serial} an id that grows with every row, {event_seq} an explicit order of events where the database has no rowid."""

Exposure = tuple[str, str, str, int]
"""(experiment, arm, item id, rank): one pick shown to a session under an experiment's arm (agent/experiments.py)."""
EVENT_IDS = "CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events(session_id, event_id) WHERE event_id IS NOT NULL"
"""A client's event id is stored once per session (a retried event is recognised, `known_events`)."""


class StoreUnavailable(RuntimeError):
    """The store cannot be read or written now (disk full, read-only, unreadable, the database server gone); nothing
    was changed. The message says which store and why; the API answers 503."""


class SessionStore:
    """The store's contract and its statements; `SqliteSessionStore` and `PostgresSessionStore` give connections.

    A connection here has `execute(sql, params)` (returning a cursor) and `executemany`, with `?` placeholders."""

    BEGIN_WRITE = "BEGIN"
    """Opens a transaction that writes."""
    BEGIN_SNAPSHOT = "BEGIN"
    """Opens a transaction whose reads all see one snapshot."""
    EVENT_ORDER = "rowid"
    """The column that orders a session's events as they were stored."""

    def __init__(self, *, learn: bool = True) -> None:
        self.learn = learn
        """Keep each session's liked items in `likes` (online learning; off: the table is left as it is)."""
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def _connect(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    @contextmanager
    def locked(self, session_id: str) -> Iterator[None]:
        """Hold while loading, updating and saving one session, so concurrent turns cannot lose updates: this
        process's lock on the session, then the backend's lock that other processes honour."""
        with self._locks_guard:
            lock = self._locks[session_id]
        with lock, self._shared_lock(session_id):
            yield

    def _shared_lock(self, session_id: str) -> AbstractContextManager[None]:
        """The session's lock across processes; none by default (one process serves a SQLite file)."""
        return nullcontext()

    def load(self, session_id: str) -> SessionState | None:
        with self._connect() as db:
            row = db.execute("SELECT state FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return SessionState.from_dict(json.loads(row[0])) if row else None

    def save(self, state: SessionState, turn: dict[str, Any] | None = None,
             events: list[tuple[str, str] | tuple[str, str, str | None]] = (),
             exposures: list[Exposure] = ()) -> None:
        """Commit the memory with the turn or feedback events (kind, item_id[, client event id]) that produced it, and
        the turn's picks as an experiment's exposures, in one transaction."""
        now = time.time()
        with self._connect() as db:
            db.execute(self.BEGIN_WRITE)
            db.execute(
                "INSERT INTO sessions (session_id, state, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (state.session_id, json.dumps(state.to_dict()), now, now),
            )
            if turn is not None:
                db.execute("INSERT INTO turns (session_id, turn_index, user_text, reply, result, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (state.session_id, state.turn_count, turn["user"], turn["reply"], json.dumps(turn), now))
            if events:
                db.executemany("INSERT INTO events (session_id, kind, item_id, created_at, event_id) "
                               "VALUES (?, ?, ?, ?, ?)",
                               [(state.session_id, e[0], e[1], now, e[2] if len(e) > 2 else None) for e in events])
            if exposures:
                db.executemany("INSERT INTO exposures (session_id, experiment, arm, turn_index, item_id, rank, "
                               "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, turn_index, item_id) "
                               "DO UPDATE SET experiment = excluded.experiment, arm = excluded.arm, "
                               "rank = excluded.rank, created_at = excluded.created_at",
                               [(state.session_id, e[0], e[1], state.turn_count, e[2], e[3], now) for e in exposures])
            if self.learn:
                self._sync_likes(db, state, now)
            db.execute("COMMIT")

    @staticmethod
    def _sync_likes(db: Any, state: SessionState, now: float) -> None:
        """`likes` holds what the memory likes now: new likes added (a like kept its first time), the ones the memory
        no longer likes (disliked since, removed by the user) deleted. A set, so a repeated event changes nothing."""
        if state.liked:
            db.executemany("INSERT INTO likes (session_id, item_id, created_at) VALUES (?, ?, ?) "
                           "ON CONFLICT (session_id, item_id) DO NOTHING",
                           [(state.session_id, item_id, now) for item_id in state.liked])
            kept = ",".join("?" * len(state.liked))
            db.execute(f"DELETE FROM likes WHERE session_id = ? AND item_id NOT IN ({kept})",
                       (state.session_id, *state.liked))
        else:
            db.execute("DELETE FROM likes WHERE session_id = ?", (state.session_id,))

    def update_last_turn(self, state: SessionState, turn: dict[str, Any],
                         trial: tuple[str, str, float, bool] | None = None) -> None:
        """Rewrite the memory and the session's last stored turn (its explanations came after the picks were saved),
        with the turn's trial under an experiment (experiment, arm, seconds, fell back), in one transaction; the
        turn must be there (saved with `save`)."""
        with self._connect() as db:
            db.execute(self.BEGIN_WRITE)
            if trial is not None:
                db.execute("INSERT INTO trials (session_id, experiment, arm, turn_index, seconds, fallback, failed, "
                           "created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                           (state.session_id, trial[0], trial[1], state.turn_count, trial[2], int(trial[3]),
                            time.time()))
            db.execute("UPDATE sessions SET state = ?, updated_at = ? WHERE session_id = ?",
                       (json.dumps(state.to_dict()), time.time(), state.session_id))
            updated = db.execute("UPDATE turns SET reply = ?, result = ? WHERE session_id = ? AND turn_index = ?",
                                 (turn["reply"], json.dumps(turn), state.session_id, state.turn_count)).rowcount
            if updated != 1:
                raise KeyError(f"session {state.session_id!r} has no stored turn {state.turn_count}")
            db.execute("COMMIT")

    def claim(self, session_id: str, owner: str | None) -> str | None:
        """Create the session for `owner` if it is new; return whoever owns it (None: nobody, e.g. no API keys)."""
        now = time.time()
        empty = json.dumps(SessionState(session_id).to_dict())
        with self._connect() as db:
            db.execute("INSERT INTO sessions (session_id, state, created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (session_id) DO NOTHING", (session_id, empty, now, now, owner))
            return db.execute("SELECT owner FROM sessions WHERE session_id = ?", (session_id,)).fetchone()[0]

    def owner(self, session_id: str) -> tuple[bool, str | None]:
        """(exists, owner) of a session."""
        with self._connect() as db:
            row = db.execute("SELECT owner FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return (row is not None, row[0] if row else None)

    def events(self, session_id: str) -> list[tuple[str, str]]:
        with self._connect() as db:
            return [tuple(r) for r in db.execute(
                f"SELECT kind, item_id FROM events WHERE session_id = ? ORDER BY {self.EVENT_ORDER}",
                (session_id,)).fetchall()]

    def known_events(self, session_id: str, event_ids: list[str]) -> set[str]:
        """Which of these client event ids the session has stored already."""
        if not event_ids:
            return set()
        with self._connect() as db:
            return {r[0] for r in db.execute(
                f"SELECT event_id FROM events WHERE session_id = ? AND event_id IN ({','.join('?' * len(event_ids))})",
                (session_id, *event_ids)).fetchall()}

    def history(self, session_id: str) -> list[dict[str, Any]]:
        """Every stored turn of a session, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT result FROM turns WHERE session_id = ? ORDER BY turn_index",
                              (session_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def forget(self, session_id: str) -> bool:
        """Delete everything stored for a session, after a running turn of it (never before the turn's last write,
        which would bring the session back); False when there was nothing."""
        with self.locked(session_id), self._connect() as db:
            db.execute(self.BEGIN_WRITE)
            for table in ("turns", "events", "likes", "exposures", "trials"):
                db.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
            deleted = db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,)).rowcount
            db.execute("COMMIT")
        return deleted > 0

    def likes_since(self, after: int) -> tuple[list[tuple[int, str, str, float]], int]:
        """(rows of `likes` with id > after: (id, session_id, item_id, created_at), oldest first; how many rows the
        table holds): what the online model reads to catch up (retrieval/online.py). A like committed late with a
        smaller id shows in the count, and the model counts everything again."""
        with self._connect() as db:
            db.execute(self.BEGIN_SNAPSHOT)  # one snapshot for both reads
            rows = db.execute("SELECT id, session_id, item_id, created_at FROM likes WHERE id > ? ORDER BY id",
                              (after,)).fetchall()
            total = db.execute("SELECT count(*) FROM likes").fetchone()[0]
            db.execute("COMMIT")
        return [tuple(r) for r in rows], total

    def record_failed_trial(self, session_id: str, experiment: str, arm: str) -> None:
        """A turn under an experiment that failed (its picks and exposures may be stored, its explanations are not):
        counted by the error-rate guardrail. Nothing is recorded for a session that is gone (forgotten)."""
        with self._connect() as db:
            db.execute(self.BEGIN_WRITE)
            if db.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone():
                db.execute("INSERT INTO trials (session_id, experiment, arm, turn_index, seconds, fallback, failed, "
                           "created_at) VALUES (?, ?, ?, NULL, NULL, 0, 1, ?)",
                           (session_id, experiment, arm, time.time()))
            db.execute("COMMIT")

    def register_experiment(self, name: str, definition: dict[str, Any]) -> None:
        """Keep an experiment's definition (its latest) so its report can be made from the store alone."""
        with self._connect() as db:
            db.execute("INSERT INTO experiments (name, definition, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET definition = excluded.definition",
                       (name, json.dumps(definition), time.time()))

    def experiment_rows(self, name: str) -> dict[str, Any] | None:
        """An experiment's definition, exposures (session, arm, turn, item, rank, time), trials (session, arm,
        seconds, fallback, failed) and the outcome events of its sessions (session, kind, item, time); None when
        the store has no such experiment. One snapshot."""
        with self._connect() as db:
            db.execute(self.BEGIN_SNAPSHOT)
            row = db.execute("SELECT definition FROM experiments WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            exposures = db.execute("SELECT session_id, arm, turn_index, item_id, rank, created_at FROM exposures "
                                   "WHERE experiment = ? ORDER BY created_at", (name,)).fetchall()
            trials = db.execute("SELECT session_id, arm, seconds, fallback, failed FROM trials WHERE experiment = ?",
                                (name,)).fetchall()
            events = db.execute("SELECT session_id, kind, item_id, created_at FROM events WHERE session_id IN "
                                "(SELECT DISTINCT session_id FROM exposures WHERE experiment = ?)", (name,)).fetchall()
            db.execute("COMMIT")
        return {"definition": json.loads(row[0]), "exposures": [tuple(r) for r in exposures],
                "trials": [tuple(r) for r in trials], "events": [tuple(r) for r in events]}

    def experiment_names(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM experiments ORDER BY created_at").fetchall()]

    def session_ids(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT session_id FROM sessions ORDER BY updated_at").fetchall()]


class SqliteSessionStore(SessionStore):
    """The default: one SQLite file, WAL, a full sync per commit; one process serves its sessions."""

    BEGIN_WRITE = "BEGIN IMMEDIATE"

    def __init__(self, path: Path, *, learn: bool = True) -> None:
        super().__init__(learn=learn)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA.format(time="REAL", serial="INTEGER PRIMARY KEY AUTOINCREMENT", event_seq=""))
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            if "owner" not in columns:  # a store written before sessions had owners
                db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
            if "event_id" not in {row[1] for row in db.execute("PRAGMA table_info(events)")}:  # ... or event ids
                db.execute("ALTER TABLE events ADD COLUMN event_id TEXT")
            db.execute(EVENT_IDS)

    def __repr__(self) -> str:
        return f"SqliteSessionStore({str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; SQLite's operational failures (a full disk, a read-only file system, an unreadable file)
        come out as `StoreUnavailable`, after the transaction was rolled back: nothing half-written stays."""
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"the session store {self.path} cannot be opened: {error}") from error
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged turn survives a crash
            yield db
        except BaseException as error:  # any failure inside a transaction undoes all of it
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolls back on its own when the connection closes
            if isinstance(error, sqlite3.OperationalError):
                raise StoreUnavailable(f"the session store {self.path} cannot be used now: {error}") from error
            raise
        finally:
            db.close()


def is_database_url(location: str | Path | None) -> bool:
    """A PostgreSQL URL (postgresql://..., postgres://...) rather than a SQLite file."""
    return str(location or "").startswith(("postgresql://", "postgres://"))


def open_store(location: str | Path, *, learn: bool = True) -> SessionStore:
    """The store at `location`: a PostgreSQL URL or a SQLite file's path."""
    if is_database_url(location):
        from agent.store_postgres import PostgresSessionStore

        return PostgresSessionStore(str(location), learn=learn)
    return SqliteSessionStore(Path(location), learn=learn)
