"""Top-n ranking metrics, each a tiny class labelled like the literature: Recall@10, NDCG@10, MRR.

    Recall(n=10).label == "Recall@10";  Recall(n=10)(ranked, relevant) -> float

`ranked` is the system's list, best first; `relevant` the ground-truth set. A turn with no relevant item has no
defined score: every metric returns None for it, and `mean` skips Nones (the count of scored turns is reported
beside each mean). Definitions follow CRSLab / He et al. (CIKM 2023): Recall@n = |top-n ∩ relevant| / |relevant|;
NDCG@n with binary gains and the ideal DCG of min(n, |relevant|) hits; MRR = 1 / rank of the first relevant item
(0 when none is ranked).

Uncertainty is drawn by resampling dialogues, not turns (the turns of one dialogue are not independent):

    bootstrap_interval([[0.0, 1.0], [1.0], [0.0]]) -> (low, high)     95% interval of the turn-weighted mean
    paired_difference(a_by_group, b_by_group) -> {"difference", "interval", "a_better", "b_better", "turns", ...}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


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


def bootstrap_interval(values_by_group: Sequence[Sequence[float | None]], *, samples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of the turn-weighted mean (the mean the report prints), resampling whole groups
    (dialogues) with replacement. Nones are skipped as in `mean`; a group with no defined value takes no part.
    None when no value is defined at all."""
    if not 0 < level < 1 or samples < 1:
        raise ValueError(f"level must lie between 0 and 1 and samples be at least 1, not {level} and {samples}")
    sums, counts = _group_sums(values_by_group)
    if not counts.size:
        return None
    draws = _resample(sums, counts, samples, seed)
    low, high = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_difference(a_by_group: Sequence[Sequence[float | None]], b_by_group: Sequence[Sequence[float | None]], *,
                      samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Turn-weighted mean of a - b over the turns both score, with its bootstrap interval: each resample draws the
    same dialogues for both systems (paired). Also the turns where a scores higher, where b does, and how many
    turns both score; `significant` is whether the interval excludes 0."""
    if len(a_by_group) != len(b_by_group):
        raise ValueError(f"{len(a_by_group)} groups of a against {len(b_by_group)} of b")
    differences, a_better, b_better = [], 0, 0
    for a_group, b_group in zip(a_by_group, b_by_group, strict=True):
        if len(a_group) != len(b_group):
            raise ValueError(f"a group of {len(a_group)} turns against one of {len(b_group)}")
        pairs = [(a, b) for a, b in zip(a_group, b_group, strict=True) if a is not None and b is not None]
        differences.append([a - b for a, b in pairs])
        a_better += sum(a > b for a, b in pairs)
        b_better += sum(b > a for a, b in pairs)
    difference, turns = mean(d for group in differences for d in group)
    interval = bootstrap_interval(differences, samples=samples, seed=seed, level=level)
    return {"difference": difference, "interval": interval, "a_better": a_better, "b_better": b_better, "turns": turns,
            "significant": interval is not None and (interval[0] > 0 or interval[1] < 0)}


def _group_sums(values_by_group: Sequence[Sequence[float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the sum and the count of its defined values (groups with none left out)."""
    sums, counts = [], []
    for group in values_by_group:
        defined = [v for v in group if v is not None]
        if defined:
            sums.append(math.fsum(defined))
            counts.append(len(defined))
    return np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)


def _resample(sums: np.ndarray, counts: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """`samples` turn-weighted means, each over len(sums) groups drawn with replacement."""
    picks = np.random.default_rng(seed).integers(0, len(sums), size=(samples, len(sums)))
    return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)


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
