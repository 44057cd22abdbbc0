"""Learning across sessions as feedback arrives: popularity and co-occurrence of liked items, with a time decay.

Every session's liked items (a like or click event, a title the user says they loved, a suggestion they accept) are
rows of the session store's `likes` table, written in the same transaction as the memory (agent/store.py). This
model reads that table and keeps, for items a and b:

    popularity(a)  = sum over sessions liking a of             2^-(age of the like / half life)
    together(a, b) = sum over sessions liking both of          2^-(age of the later like / half life)
    scores(seeds)  = for each other item b: sum over seeds a of together(a, b) / sqrt(popularity(a) popularity(b))

(the co-occurrence of retrieval/collaborative.py, counted over sessions instead of training dialogues). It catches
up at most every `refresh_seconds`, reading only the rows added since; a deleted row (a forgotten session, a like
taken back) makes it rebuild from the table. So every session of every process on the same store sees a like within
`refresh_seconds` (5 by default), a restart rebuilds the same model, and a repeated event changes nothing (a like
is a row per session and item). Scores and popularity come from other sessions' likes only as numbers: no text of
theirs reaches a prompt or an explanation.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

Rows = tuple[list[tuple[int, str, str, float]], int]
"""What the store gives: rows (id, session_id, item_id, created_at) after an id, and the table's row count."""

HALF_LIFE_DAYS = 14.0
REFRESH_SECONDS = 5.0
MAX_EXPONENT = 500.0
"""Weights are 2^((t - anchor) / half life); when a new like would pass this exponent the model recounts with the
newest like as the anchor (older likes then weigh 2^-(their age in half lives): tiny, and zero past ~1,000)."""


class OnlineSignal:
    """Popularity and co-occurrence learned from the store's `likes`, decayed with a half life."""

    name = "online"

    def __init__(self, read: Callable[[int], Rows], *, half_life_days: float = HALF_LIFE_DAYS,
                 refresh_seconds: float = REFRESH_SECONDS, clock: Callable[[], float] = time.time) -> None:
        if not half_life_days > 0:
            raise ValueError(f"the half life must be a positive number of days, not {half_life_days!r}")
        self._read = read
        self.half_life = half_life_days * 86400.0
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self.version = 0
        """Grows whenever the model changes, a recount included (callers cache what they derive from it)."""
        self._reset()
        self._checked = -math.inf

    def _reset(self) -> None:
        self._last_id = 0
        self._rows = 0
        self._anchor: float | None = None
        self._sessions: dict[str, dict[str, float]] = defaultdict(dict)
        """session -> item -> when it was liked."""
        self._counts: Counter[str] = Counter()
        self._pairs: dict[str, Counter[str]] = defaultdict(Counter)

    def refresh(self, force: bool = False) -> None:
        """Catch up with the store (at most every `refresh_seconds` unless forced)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < self.refresh_seconds:
                return
            self._checked = now
            rows, total = self._read(self._last_id)
            deleted = self._rows + len(rows) != total
            overflowing = bool(rows) and self._anchor is not None and (
                (rows[-1][3] - self._anchor) / self.half_life > MAX_EXPONENT)
            recount = deleted or overflowing  # count everything again (around the newest like: no overflow)
            if recount:
                self._reset()
                rows, total = self._read(0)
                self._anchor = max((row[3] for row in rows), default=None)
            for row_id, session_id, item_id, created_at in rows:
                self._add(session_id, item_id, created_at)
                self._last_id = row_id
            self._rows = total
            if rows or recount:
                self.version += 1

    def _weight(self, when: float) -> float:
        """2^((when - anchor) / half life); the anchor is the first like counted, or the newest at a recount."""
        if self._anchor is None:
            self._anchor = when
        return 2.0 ** ((when - self._anchor) / self.half_life)

    def _add(self, session_id: str, item_id: str, when: float) -> None:
        liked = self._sessions[session_id]
        self._counts[item_id] += self._weight(when)
        for other, other_when in liked.items():
            together = self._weight(max(when, other_when))
            self._pairs[item_id][other] += together
            self._pairs[other][item_id] += together
        liked[item_id] = when

    def popularity(self) -> dict[str, float]:
        """Decayed likes per item, in likes of now (a like a half life old counts 0.5)."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, dict[str, float]]:
        """(version, popularity) read together, after catching up."""
        self.refresh()
        with self._lock:
            if self._anchor is None:
                return self.version, {}
            scale = 2.0 ** max((self._anchor - self._clock()) / self.half_life, -MAX_EXPONENT)
            return self.version, {item_id: count * scale for item_id, count in self._counts.items()}

    def scores(self, seeds: Iterable[str]) -> dict[str, float]:
        self.refresh()
        total: Counter[str] = Counter()
        with self._lock:
            for seed in seeds:
                for other, together in self._pairs.get(seed, {}).items():
                    norm = math.sqrt(self._counts[seed] * self._counts[other])
                    if norm > 0:  # zero only for likes so old their weight underflowed
                        total[other] += together / norm
        return dict(total)


class Blended:
    """A batch-trained collaborative model plus the online one: their scores added (each is normalised like a
    cosine). With no batch model, the online model alone (starting from nothing)."""

    def __init__(self, batch, online: OnlineSignal) -> None:
        self.batch = batch
        self.online = online
        self.name = f"{batch.name}+online" if batch is not None else "online"

    def scores(self, seeds: Iterable[str]) -> dict[str, float]:
        seeds = list(seeds)
        total = Counter(self.batch.scores(seeds)) if self.batch is not None else Counter()
        total.update(self.online.scores(seeds))
        return dict(total)
