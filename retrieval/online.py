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


class OnlineSignal:
    """Popularity and co-occurrence learned from the store's `likes`, decayed with a half life."""

    name = "online"

    def __init__(self, read: Callable[[int], Rows], *, half_life_days: float = HALF_LIFE_DAYS,
                 refresh_seconds: float = REFRESH_SECONDS, clock: Callable[[], float] = time.time) -> None:
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
            recount = self._rows + len(rows) != total  # rows were deleted: count everything again
            if recount:
                self._reset()
                rows, total = self._read(0)
            for row_id, session_id, item_id, created_at in rows:
                self._add(session_id, item_id, created_at)
                self._last_id = row_id
            self._rows = total
            if rows or recount:
                self.version += 1

    def _weight(self, when: float) -> float:
        """2^((when - the first like's time) / half life): finite for 39 years of likes at a 14-day half life."""
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
        self.refresh()
        with self._lock:
            if self._anchor is None:
                return {}
            scale = 2.0 ** ((self._anchor - self._clock()) / self.half_life)
            return {item_id: count * scale for item_id, count in self._counts.items()}

    def scores(self, seeds: Iterable[str]) -> dict[str, float]:
        self.refresh()
        total: Counter[str] = Counter()
        with self._lock:
            for seed in seeds:
                for other, together in self._pairs.get(seed, {}).items():
                    if other not in self._counts:
                        continue
                    total[other] += together / math.sqrt(self._counts[seed] * self._counts[other])
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
