"""Top-n ranking metrics, each a tiny class labelled like the literature: Recall@10, NDCG@10, MRR.

    Recall(n=10).label == "Recall@10";  Recall(n=10)(ranked, relevant) -> float

`ranked` is the system's list, best first; `relevant` the ground-truth set. A turn with no relevant item has no
defined score: every metric returns None for it, and `mean` skips Nones (the count of scored turns is reported
beside each mean). Definitions follow CRSLab / He et al. (CIKM 2023): Recall@n = |top-n ∩ relevant| / |relevant|;
NDCG@n with binary gains and the ideal DCG of min(n, |relevant|) hits; MRR = 1 / rank of the first relevant item
(0 when none is ranked).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Recall:
    n: int

    @property
    def label(self) -> str:
        return f"Recall@{self.n}"

    def __call__(self, ranked: Sequence[str], relevant: Iterable[str]) -> float | None:
        relevant = set(relevant)
        if not relevant:
            return None
        return len(set(ranked[: self.n]) & relevant) / len(relevant)


@dataclass(frozen=True)
class NDCG:
    n: int

    @property
    def label(self) -> str:
        return f"NDCG@{self.n}"

    def __call__(self, ranked: Sequence[str], relevant: Iterable[str]) -> float | None:
        relevant = set(relevant)
        if not relevant:
            return None
        dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[: self.n]) if item in relevant)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(self.n, len(relevant))))
        return dcg / ideal


@dataclass(frozen=True)
class MRR:
    @property
    def label(self) -> str:
        return "MRR"

    def __call__(self, ranked: Sequence[str], relevant: Iterable[str]) -> float | None:
        relevant = set(relevant)
        if not relevant:
            return None
        return next((1.0 / (rank + 1) for rank, item in enumerate(ranked) if item in relevant), 0.0)


DEFAULT_METRICS = (Recall(1), Recall(5), Recall(10), Recall(20), Recall(50), NDCG(10), MRR())


def mean(values: Iterable[float | None]) -> tuple[float | None, int]:
    """(mean of the defined values, how many there were)."""
    defined = [v for v in values if v is not None]
    return (sum(defined) / len(defined) if defined else None, len(defined))


def remove_seen(ranked: Sequence[str], relevant: Iterable[str], seen: Iterable[str]) -> tuple[list[str], set[str]]:
    """The "seen removed" setting: items mentioned earlier in the dialogue leave both the list and the ground truth."""
    seen = set(seen)
    return [i for i in ranked if i not in seen], {i for i in relevant if i not in seen}


# Beyond accuracy, over the top-k lists a system produced.

def coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list."""
    shown = {item for ranked in lists for item in ranked}
    return len(shown) / catalog_size if catalog_size else 0.0


def intra_list_diversity(ranked: Sequence[str], vectors: dict[str, Sequence[float]]) -> float | None:
    """Mean cosine distance (1 - cosine) between every pair of items of one list that have a vector."""
    import numpy as np

    rows = [np.asarray(vectors[i], dtype=np.float64) for i in ranked if i in vectors]
    if len(rows) < 2:
        return None
    unit = np.stack([r / (np.linalg.norm(r) or 1.0) for r in rows])
    similarity = unit @ unit.T
    pairs = len(rows) * (len(rows) - 1)
    return float((pairs - (similarity.sum() - np.trace(similarity))) / pairs)


def novelty(ranked: Sequence[str], popularity: dict[str, float], catalog_size: int) -> float | None:
    """Mean self-information -log2 p(item) of a list, p = (mentions + 1) / (all mentions + catalog size): items
    nobody mentioned in training score highest."""
    if not ranked:
        return None
    total = sum(popularity.values()) + catalog_size
    return sum(-math.log2((popularity.get(i, 0.0) + 1) / total) for i in ranked) / len(ranked)
