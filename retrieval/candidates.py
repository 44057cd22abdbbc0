"""Candidate generation: dense retrieval, a collaborative model and popularity, fused, then a learned ranker.

    HybridRetriever.candidates(query, n)
      dense         Chroma neighbours of (the user's words, when they carry content, + the items they liked)
      cooccurrence  the collaborative model's items for the liked items (retrieval/collaborative.py)
      popularity    most-mentioned items in the training dialogues (cold start)
      constraints   items matching the wanted genres / people, by popularity
      ──▶ weighted RRF ──▶ wanted genres/people boosted
      ──▶ hard filters (excluded items, excluded genres, year range) ──▶ the pool (FusionConfig.pool items)
      ──▶ the learned ranker's order of the pool (retrieval/ranker.py; without one, the fused order) ──▶ top n

Excluded items (mentioned, seen, rejected, already recommended) never come back, and items with nothing to cite
(see `explainable`) are never recommended. Duplicate catalog entries of one
movie (same title and year under two ids, which ReDial has) are kept once.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from retrieval.catalog import Catalog, Item
from retrieval.embeddings import Embedder
from retrieval.features import pool_features
from retrieval.index import ChromaIndex
from retrieval.types import Candidate, Constraints

if TYPE_CHECKING:
    from retrieval.collaborative import Collaborative
    from retrieval.online import OnlineSignal
    from retrieval.ranker import LearnedRanker


def explainable(item: Item) -> bool:
    """An item is recommended only if its explanation can cite something: a main fact (year, genre, director, cast,
    writer) or, for an item with no structured facts at all (a text-only user catalog), its own description.
    ReDial has 557 of 6,924 entries with none (often a yearless duplicate such as "Star Wars"); they stay in the
    catalog so mentions of them are understood, but are never recommended."""
    if item.year or item.genres or item.directors or item.cast or item.writers:
        return True
    return not item.facts() and bool(item.description.strip()) and item.description.strip() != item.title


@dataclass(frozen=True)
class CandidateQuery:
    """What the retriever needs from the session: words, taste and filters."""

    text: str = ""
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    exclude: frozenset[str] = frozenset()
    constraints: Constraints = Constraints()
    turns: int = 0
    """How many turns the session has had before this one."""


@dataclass(frozen=True)
class FusionConfig:
    """Weights of each generator in the reciprocal-rank fusion, and how deep each one looks."""

    dense: float = 1.0
    """Weight of dense retrieval."""
    cooccurrence: float = 1.5
    """Weight of the collaborative signal (co-mentions in training dialogues)."""
    popularity: float = 1.0
    """Weight of popularity (a cold-start prior, and a strong signal in ReDial). Chosen on the validation dialogues
    (train_sample/valid_data.jsonl, never the dev set): 0.3 -> 1.0 moved Recall@10 0.154 -> 0.170 and
    Recall@50 0.266 -> 0.301 there."""
    constraints: float = 1.0
    """Weight of the list of items matching wanted genres/people."""
    dense_min_similarity: float = 0.4
    """The user's words steer dense retrieval only when their best match is at least this similar (cosine).
    Below it the text carries no content (MiniLM: "hello" ~0.35, "a western with Clint Eastwood" ~0.62)."""
    preference_boost: float = 2.0
    """Fused score multiplier for items matching a wanted genre or person (the user asked for it)."""
    rrf_k: int = 60
    """The k of reciprocal rank fusion: score = sum(weight / (k + rank))."""
    depth: int = 200
    """How many items each generator contributes before fusion."""
    pool: int = 150
    """How many fused items (after the filters) the learned ranker re-orders."""


@dataclass(frozen=True)
class Pool:
    """Stage one of a query: each generator's list, fused by weighted reciprocal rank, filtered and deduplicated.
    The learned ranker (retrieval/ranker.py) re-orders `item_ids`; its features read the rest."""

    item_ids: list[str]
    """Allowed items in fused order, at most `FusionConfig.pool` of them."""
    fused: dict[str, float]
    lists: dict[str, list[str]]
    """Generator name -> the ids it proposed, best first (before filtering)."""
    dense_text: np.ndarray | None = None
    """The user's words as a vector, when they carry content (see `FusionConfig.dense_min_similarity`)."""


@dataclass
class HybridRetriever:
    catalog: Catalog
    index: ChromaIndex | None
    embedder: Embedder | None
    collaborative: Collaborative | None = None
    """Co-mentions learned from the training dialogues (retrieval/collaborative.py: EASE or co-occurrence counts)."""
    config: FusionConfig = field(default_factory=FusionConfig)
    ranker: LearnedRanker | None = None
    """The learned ranking stage; None orders by the fusion alone."""
    popularity: dict[str, float] | None = None
    """Mentions per item in the training dialogues; None: the catalog's (training replaces it per fold)."""
    online: OnlineSignal | None = None
    """What sessions have liked since (retrieval/online.py): its decayed likes add to `popularity` in the popularity
    list (the collaborative model, when online, is a `Blended` one already)."""

    def __post_init__(self) -> None:
        self.popularity = self.catalog.popularity if self.popularity is None else self.popularity
        self._by_popularity = _by_count(self.popularity)
        self._online_order: tuple[tuple[int, int], list[str]] = ((-1, -1), self._by_popularity)

    def popularity_order(self) -> list[str]:
        """Items by popularity: the training dialogues' mentions, plus the decayed likes learned online (the order is
        made again when the online model changes, and at least hourly as its likes fade)."""
        if self.online is None:
            return self._by_popularity
        version, online = self.online.snapshot()
        key = (version, int(time.time() // 3600))
        if self._online_order[0] != key:
            merged = Counter(self.popularity)
            merged.update(online)
            self._online_order = (key, _by_count(merged))
        return self._online_order[1]

    def candidates(self, query: CandidateQuery, n: int) -> list[Candidate]:
        """The best `n` allowed items for the query: the learned ranker's order of the pool, else the fused order."""
        pool = self.pool(query)
        scores = pool.fused
        if self.ranker is not None and pool.item_ids:
            learned = self.ranker.score(pool_features(pool, query, self))
            scores = dict(zip(pool.item_ids, (float(v) for v in learned), strict=True))
        order = sorted(pool.item_ids, key=lambda i: -scores[i])  # stable: ties keep the fused order
        proposed = {name: set(ids) for name, ids in pool.lists.items()}
        return [Candidate(i, round(scores[i], 6), tuple(name for name, ids in proposed.items() if i in ids))
                for i in order[:n]]

    def pool(self, query: CandidateQuery) -> Pool:
        dense_text = self._text_vector(query)
        generators = {"dense": lambda: self._dense(query, dense_text),
                      "cooccurrence": lambda: self._collaborative(query), "popularity": self.popularity_order,
                      "constraints": lambda: self._matching_constraints(query.constraints)}
        fused: dict[str, float] = defaultdict(float)
        lists: dict[str, list[str]] = {}
        for name, generate in generators.items():
            lists[name] = generate()[: self.config.depth]
            weight = getattr(self.config, name)
            if weight <= 0:
                continue
            for rank, item_id in enumerate(lists[name]):
                fused[item_id] += weight / (self.config.rrf_k + rank + 1)
        for item_id in fused:
            if self._matches_preferences(item_id, query.constraints):
                fused[item_id] *= self.config.preference_boost
        kept: list[str] = []
        labels_taken: set[tuple[str, int | None]] = set()
        for item_id in sorted(fused, key=lambda i: (-fused[i], i)):
            item = self.catalog.get(item_id)
            if item is None or not self._allowed(item, query):
                continue
            label = (item.title.casefold(), item.year)
            if label in labels_taken:
                continue
            labels_taken.add(label)
            kept.append(item_id)
            if len(kept) == self.config.pool:
                break
        return Pool(kept, {i: fused[i] for i in kept}, lists, dense_text)

    def _matches_preferences(self, item_id: str, c: Constraints) -> bool:
        item = self.catalog.get(item_id)
        if item is None or not (c.genres or c.people):
            return False
        return bool(set(item.genres) & set(c.genres) or {*item.directors, *item.cast, *item.writers} & set(c.people))

    def _allowed(self, item: Item, query: CandidateQuery) -> bool:
        c = query.constraints
        if not explainable(item):
            return False
        if item.item_id in query.exclude or set(item.genres) & set(c.excluded_genres):
            return False
        if c.min_year is not None and (item.year is None or item.year < c.min_year):
            return False
        return c.max_year is None or (item.year is not None and item.year <= c.max_year)

    def _text_vector(self, query: CandidateQuery) -> np.ndarray | None:
        if self.index is None or self.embedder is None or not query.text.strip():
            return None
        vector = self.embedder.embed([query.text])[0]
        best = self.index.query(vector, 1)
        return vector if best and best[0][1] >= self.config.dense_min_similarity else None

    def _dense(self, query: CandidateQuery, text_vector: np.ndarray | None) -> list[str]:
        if self.index is None:
            return []
        parts = [] if text_vector is None else [text_vector]
        liked = self.index.vectors([i for i in query.liked if i in self.catalog])
        parts.extend(liked.values())
        if not parts:
            return []
        vector = np.mean(parts, axis=0)
        vector /= np.linalg.norm(vector) or 1.0
        return [item_id for item_id, _ in self.index.query(vector, self.config.depth)]

    def _collaborative(self, query: CandidateQuery) -> list[str]:
        if self.collaborative is None or not query.liked:
            return []
        scores = self.collaborative.scores(query.liked)
        return sorted(scores, key=lambda i: (-scores[i], i))

    def _matching_constraints(self, constraints: Constraints) -> list[str]:
        if not constraints.genres and not constraints.people:
            return []
        wanted_genres, wanted_people = set(constraints.genres), set(constraints.people)

        def matches(item: Item) -> int:
            people = {*item.directors, *item.cast, *item.writers}
            return len(wanted_genres & set(item.genres)) + 2 * len(wanted_people & people)

        scored = [(matches(item), self.popularity.get(item.item_id, 0.0), item.item_id)
                  for item in self.catalog]
        return [item_id for score, pop, item_id in sorted(scored, key=lambda s: (-s[0], -s[1], s[2])) if score]

    def matching(self, query: CandidateQuery, n: int) -> list[str]:
        """Up to n allowed items (see `_allowed`) that fulfil every request in the query's constraints (see
        `fulfils_requests`), most popular first, one id per movie: what an explicit request can draw on beyond the
        fused candidates (agent/requests.py)."""
        out: list[str] = []
        labels_taken: set[tuple[str, int | None]] = set()
        popularity = self.popularity or {}
        for item in sorted(self.catalog, key=lambda i: (-popularity.get(i.item_id, 0.0), i.item_id)):
            label = (item.title.casefold(), item.year)
            if label in labels_taken or not self._allowed(item, query) or not fulfils_requests(item, query.constraints):
                continue
            labels_taken.add(label)
            out.append(item.item_id)
            if len(out) == n:
                break
        return out


def _by_count(counts: Mapping[str, float]) -> list[str]:
    """Items with a positive count, most first (ties by id)."""
    return sorted((i for i in counts if counts[i] > 0), key=lambda i: (-counts[i], i))


def fulfils_requests(item: Item, c: Constraints) -> bool:
    """Whether the item matches every kind of request: at least one wanted genre, at least one wanted person among
    its directors, cast and writers, its year within [min_year, max_year], no excluded genre. An empty kind
    matches."""
    if c.genres and not set(item.genres) & set(c.genres):
        return False
    if c.people and not {*item.directors, *item.cast, *item.writers} & set(c.people):
        return False
    if set(item.genres) & set(c.excluded_genres):
        return False
    if c.min_year is not None and (item.year is None or item.year < c.min_year):
        return False
    return c.max_year is None or (item.year is not None and item.year <= c.max_year)
