"""Candidate generation: dense retrieval, item co-occurrence and popularity, fused by weighted reciprocal rank.

    HybridRetriever.candidates(query, n)
      dense         Chroma neighbours of (the user's words, when they carry content, + the items they liked)
      cooccurrence  items mentioned in the same training dialogues as the liked items
      popularity    most-mentioned items in the training dialogues (cold start)
      constraints   items matching the wanted genres / people, by popularity
      ──▶ weighted RRF ──▶ wanted genres/people boosted
      ──▶ hard filters (excluded items, excluded genres, year range) ──▶ top n

Excluded items (mentioned, seen, rejected, already recommended) never come back, and items with nothing to cite
(see `explainable`) are never recommended. Duplicate catalog entries of one
movie (same title and year under two ids, which ReDial has) are kept once.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from agent.types import Candidate, Constraints
from retrieval.catalog import Catalog, Item
from retrieval.embeddings import Embedder
from retrieval.index import ChromaIndex


def explainable(item: Item) -> bool:
    """An item is recommended only if its explanation can cite something: a main fact (year, genre, director, cast,
    writer) or, for an item with no structured facts at all (a text-only user catalog), its own description.
    ReDial has 548 of 6,924 entries with none (often a yearless duplicate such as "Star Wars"); they stay in the
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


class Cooccurrence:
    """Item-item co-mention counts from training dialogues, normalised like cosine similarity."""

    def __init__(self, dialogues_items: Iterable[Iterable[str]]) -> None:
        self.pairs: dict[str, Counter[str]] = defaultdict(Counter)
        self.counts: Counter[str] = Counter()
        for items in dialogues_items:
            self._add(sorted(set(items)), 1)

    @contextmanager
    def leaving_out(self, items: Iterable[str]) -> Iterator[None]:
        """Within the block, the counts are as if one dialogue mentioning `items` had not been counted (for training
        examples built from the same dialogues the counts came from: no answer leaks into the candidates)."""
        unique = sorted(set(items))
        self._add(unique, -1)
        try:
            yield
        finally:
            self._add(unique, 1)

    def _add(self, unique: list[str], sign: int) -> None:
        for a in unique:
            self.counts[a] += sign
            for b in unique:
                if a != b:
                    self.pairs[a][b] += sign

    def scores(self, seeds: Iterable[str]) -> dict[str, float]:
        total: Counter[str] = Counter()
        for seed in seeds:
            for other, together in self.pairs.get(seed, {}).items():
                if together > 0:
                    total[other] += together / math.sqrt(self.counts[seed] * self.counts[other])
        return dict(total)


@dataclass
class HybridRetriever:
    catalog: Catalog
    index: ChromaIndex | None
    embedder: Embedder | None
    cooccurrence: Cooccurrence | None = None
    config: FusionConfig = field(default_factory=FusionConfig)

    def candidates(self, query: CandidateQuery, n: int) -> list[Candidate]:
        generators = {"dense": lambda: self._dense(query), "cooccurrence": lambda: self._cooccurrence(query),
                      "popularity": self._popular, "constraints": lambda: self._matching_constraints(query.constraints)}
        fused: dict[str, float] = defaultdict(float)
        sources: dict[str, list[str]] = defaultdict(list)
        for name, generate in generators.items():
            weight = getattr(self.config, name)
            if weight <= 0:
                continue
            item_ids = generate()
            for rank, item_id in enumerate(item_ids[: self.config.depth]):
                fused[item_id] += weight / (self.config.rrf_k + rank + 1)
                sources[item_id].append(name)
        for item_id in fused:
            if self._matches_preferences(item_id, query.constraints):
                fused[item_id] *= self.config.preference_boost
        out: list[Candidate] = []
        labels_taken: set[tuple[str, int | None]] = set()
        for item_id in sorted(fused, key=lambda i: (-fused[i], i)):
            item = self.catalog.get(item_id)
            if item is None or not self._allowed(item, query):
                continue
            label = (item.title.casefold(), item.year)
            if label in labels_taken:
                continue
            labels_taken.add(label)
            out.append(Candidate(item_id, round(fused[item_id], 6), tuple(sources[item_id])))
            if len(out) == n:
                break
        return out

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

    def _dense(self, query: CandidateQuery) -> list[str]:
        if self.index is None or self.embedder is None:
            return []
        parts = []
        if query.text.strip():
            text_vector = self.embedder.embed([query.text])[0]
            best = self.index.query(text_vector, 1)
            if best and best[0][1] >= self.config.dense_min_similarity:
                parts.append(text_vector)
        liked = self.index.vectors([i for i in query.liked if i in self.catalog])
        parts.extend(liked.values())
        if not parts:
            return []
        vector = np.mean(parts, axis=0)
        vector /= np.linalg.norm(vector) or 1.0
        return [item_id for item_id, _ in self.index.query(vector, self.config.depth)]

    def _cooccurrence(self, query: CandidateQuery) -> list[str]:
        if self.cooccurrence is None or not query.liked:
            return []
        scores = self.cooccurrence.scores(query.liked)
        return sorted(scores, key=lambda i: (-scores[i], i))

    def _popular(self) -> list[str]:
        popularity = self.catalog.popularity
        return sorted((i for i in popularity if popularity[i] > 0), key=lambda i: (-popularity[i], i))

    def _matching_constraints(self, constraints: Constraints) -> list[str]:
        if not constraints.genres and not constraints.people:
            return []
        wanted_genres, wanted_people = set(constraints.genres), set(constraints.people)

        def matches(item: Item) -> int:
            people = {*item.directors, *item.cast, *item.writers}
            return len(wanted_genres & set(item.genres)) + 2 * len(wanted_people & people)

        scored = [(matches(item), self.catalog.popularity.get(item.item_id, 0.0), item.item_id)
                  for item in self.catalog]
        return [item_id for score, pop, item_id in sorted(scored, key=lambda s: (-s[0], -s[1], s[2])) if score]
