"""The session store on PostgreSQL (psycopg 3), for replicas of `convrec serve` on several hosts: `--db
postgresql://user@host:port/db`. The schema, the statements and their transactions are agent/store.py's; here are
PostgreSQL's column types, a pool of connections, and the session lock that holds across processes: an advisory
lock on the session id, taken on a connection of its own for as long as the turn runs. When a replica dies, its
connections close and PostgreSQL releases its locks; nothing it had not committed is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from agent.store import EVENT_IDS, SCHEMA, SessionStore, StoreUnavailable

SCHEMA_LOCK = 0x636F6E76726563  # "convrec": replicas starting together create the tables one at a time
POOL_SIZE = 16
"""Connections a replica keeps for reads and writes; each running turn holds one more for its session's lock."""
WAIT_SECONDS = 30.0
"""How long a read or write waits for a connection (or a server that is starting) before the store is unavailable."""


class _Connection:
    """A psycopg connection that takes the store's `?` placeholders."""

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.raw.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresSessionStore(SessionStore):
    """Sessions in a PostgreSQL database shared by every replica."""

    BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ"
    EVENT_ORDER = "seq"

    def __init__(self, url: str, *, learn: bool = True, pool_size: int = POOL_SIZE,
                 wait_seconds: float = WAIT_SECONDS) -> None:
        super().__init__(learn=learn)
        self.url = url
        self.wait_seconds = wait_seconds
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
                                    check=ConnectionPool.check_connection, timeout=wait_seconds, open=False,
                                    name="convrec-sessions")
        try:
            self._pool.open(wait=True, timeout=wait_seconds)
        except psycopg.Error as error:
            self._pool.close()
            raise StoreUnavailable(f"the session store {self} cannot be opened: {error}") from error
        with self._connect() as db:
            db.execute("BEGIN")
            db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            db.raw.execute(SCHEMA.format(time="DOUBLE PRECISION", serial="BIGSERIAL PRIMARY KEY",
                                         event_seq="\n    seq BIGSERIAL PRIMARY KEY,"))
            db.execute(EVENT_IDS)
            db.execute("COMMIT")

    def __repr__(self) -> str:
        """The URL without its password."""
        parts = urlsplit(self.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        user = parts.username
        return f"PostgresSessionStore({urlunsplit(parts._replace(netloc=f'{user}@{host}' if user else host))!r})"

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connect(self) -> Iterator[_Connection]:
        """A pooled connection; a server that is gone or unreachable comes out as `StoreUnavailable`, after the
        transaction was rolled back: nothing half-written stays."""
        try:
            with self._pool.connection() as raw:  # the pool rolls back a connection returned inside a transaction
                yield _Connection(raw)
        except psycopg.OperationalError as error:  # the pool's timeout is one too
            raise StoreUnavailable(f"the session store {self} cannot be used now: {error}") from error

    @contextmanager
    def _shared_lock(self, session_id: str) -> Iterator[None]:
        """PostgreSQL's advisory lock on the session, on a connection held until the turn ends: a turn of the same
        session on another replica waits for this one."""
        raw = None
        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.wait_seconds)))
            raw.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (session_id,))
        except psycopg.OperationalError as error:
            if raw is not None:
                raw.close()
            raise StoreUnavailable(f"the session store {self} cannot be used now: {error}") from error
        with raw:
            try:
                yield
            finally:
                try:
                    raw.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (session_id,))
                except psycopg.Error:
                    pass  # the connection is gone, and its locks with it
