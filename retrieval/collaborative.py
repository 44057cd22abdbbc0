"""Collaborative models learned from the training dialogues: which movies go together.

    Cooccurrence(dialogues)        co-mention counts, normalised like cosine similarity
    EASE(dialogues, l2)            Steck's closed-form item-item regression over the dialogue x item matrix
                                   (WWW 2019): B = I - P / diag(P), P = (X'X + l2 I)^-1

Both answer `scores(seeds) -> {item_id: score}` (items other than the seeds that the model links to them).
`COLLABORATIVE_MODELS` names the candidates compared on the validation dialogues (finetune/ranker.py keeps the best).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Protocol

import numpy as np


class Collaborative(Protocol):
    name: str

    def scores(self, seeds: Iterable[str]) -> dict[str, float]: ...


class Cooccurrence:
    """Item-item co-mention counts from training dialogues, normalised like cosine similarity."""

    name = "cooccurrence"

    def __init__(self, dialogues_items: Iterable[Iterable[str]]) -> None:
        self.pairs: dict[str, Counter[str]] = defaultdict(Counter)
        self.counts: Counter[str] = Counter()
        for items in dialogues_items:
            self._add(sorted(set(items)), 1)

    @contextmanager
    def leaving_out(self, items: Iterable[str]) -> Iterator[None]:
        """Within the block, the counts are as if one dialogue mentioning `items` had not been counted."""
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


class EASE:
    """Item-item weights by ridge regression of each item's column on all the others, with a zero diagonal.
    Items seen in fewer than `min_count` dialogues are left out (their rows are mostly noise)."""

    def __init__(self, dialogues_items: Iterable[Iterable[str]], l2: float = 200.0, min_count: int = 2) -> None:
        self.name = f"ease-l2={l2:g}"
        rows = [sorted(set(items)) for items in dialogues_items]
        counts = Counter(i for row in rows for i in row)
        self.item_ids = sorted(i for i, c in counts.items() if c >= min_count)
        self.position = {item_id: k for k, item_id in enumerate(self.item_ids)}
        matrix = np.zeros((len(rows), len(self.item_ids)), dtype=np.float64)
        for r, row in enumerate(rows):
            matrix[r, [self.position[i] for i in row if i in self.position]] = 1.0
        gram = matrix.T @ matrix
        gram[np.diag_indices_from(gram)] += l2
        inverse = np.linalg.inv(gram)
        self.weights = (-inverse / np.diag(inverse)).astype(np.float32)
        np.fill_diagonal(self.weights, 0.0)

    def scores(self, seeds: Iterable[str]) -> dict[str, float]:
        rows = [self.position[s] for s in dict.fromkeys(seeds) if s in self.position]
        if not rows:
            return {}
        total = self.weights[rows].sum(axis=0)
        total[rows] = 0.0
        return {self.item_ids[k]: float(total[k]) for k in np.flatnonzero(total > 0)}


COLLABORATIVE_MODELS: dict[str, Callable[[list[list[str]]], Cooccurrence | EASE]] = {
    "cooccurrence": Cooccurrence,
    **{f"ease-l2={l2:g}": partial(EASE, l2=l2) for l2 in (50.0, 200.0, 800.0)},
}
"""The collaborative models compared on validation (name -> fit on dialogues' item lists; a model's `name` is its
key here)."""
