"""Per-candidate features of a pool, the input of the learned ranker (retrieval/ranker.py).

One row per pool item, the columns of FEATURES. Everything comes from the query (the session memory and the user's
last words) and from what the retriever learned from the training dialogues; nothing from the answer. A training
turn's collaborative scores and popularity come from models fitted without its dialogue (finetune/ranker.py).
Missing values (no liked movie, no year) are NaN, which the gradient-boosted trees treat as their own branch.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retrieval.candidates import CandidateQuery, HybridRetriever, Pool

FEATURES = (
    "fused", "fused_rank",
    "dense_rank", "text_similarity", "text_has_content",
    "liked_similarity_mean", "liked_similarity_max", "disliked_similarity_max", "liked_count",
    "collaborative_score", "collaborative_rank", "collaborative_share",
    "log_popularity", "popularity_rank",
    "constraints_rank", "wanted_genres", "genre_matches", "wanted_people", "person_matches",
    "liked_genre_overlap", "liked_people_overlap", "year", "liked_year_gap", "turns",
)
"""The learned ranker's inputs, in column order. Changing them needs a rebuilt ranker (its card records them)."""


def pool_features(pool: Pool, query: CandidateQuery, retriever: HybridRetriever) -> np.ndarray:
    """A (len(pool.item_ids), len(FEATURES)) float32 matrix."""
    ids = pool.item_ids
    columns: dict[str, np.ndarray] = {}
    columns["fused"] = np.array([pool.fused[i] for i in ids])
    columns["fused_rank"] = np.arange(len(ids), dtype=np.float64)
    columns["dense_rank"] = _ranks(ids, pool.lists.get("dense", ()))
    columns |= _similarities(ids, query, pool, retriever)
    collaborative = retriever.collaborative.scores(query.liked) if retriever.collaborative and query.liked else {}
    columns["collaborative_score"] = np.array([collaborative.get(i, 0.0) for i in ids])
    columns["collaborative_rank"] = _ranks(ids, pool.lists.get("cooccurrence", ()))
    total = sum(collaborative.values()) or 1.0
    columns["collaborative_share"] = columns["collaborative_score"] / total
    popularity = retriever.popularity
    columns["log_popularity"] = np.array([math.log1p(popularity.get(i, 0.0)) for i in ids])
    columns["popularity_rank"] = _ranks(ids, pool.lists.get("popularity", ()))
    columns |= _matches(ids, query, pool, retriever)
    columns["turns"] = np.full(len(ids), float(query.turns))
    return np.column_stack([columns[name] for name in FEATURES]).astype(np.float32)


def _ranks(ids: list[str], listed) -> np.ndarray:
    """Each item's position in a generator's list; NaN when the generator did not propose it."""
    position = {item_id: k for k, item_id in enumerate(listed)}
    return np.array([position.get(i, np.nan) for i in ids], dtype=np.float64)


def _similarities(ids: list[str], query: CandidateQuery, pool: Pool, retriever: HybridRetriever) -> dict:
    nan = np.full(len(ids), np.nan)
    if retriever.index is None:
        return {"text_similarity": nan, "text_has_content": np.zeros(len(ids)), "liked_similarity_mean": nan,
                "liked_similarity_max": nan, "disliked_similarity_max": nan,
                "liked_count": np.full(len(ids), float(len(query.liked)))}
    row, vectors = retriever.index.matrix()
    items = vectors[[row[i] for i in ids]]
    out = {"text_has_content": np.full(len(ids), float(pool.dense_text is not None)),
           "liked_count": np.full(len(ids), float(len(query.liked)))}
    if pool.dense_text is not None:
        text = pool.dense_text / (np.linalg.norm(pool.dense_text) or 1.0)
        out["text_similarity"] = items @ text
    else:
        out["text_similarity"] = nan
    liked = [row[i] for i in query.liked if i in row]
    disliked = [row[i] for i in query.disliked if i in row]
    similar = items @ vectors[liked].T if liked else None
    out["liked_similarity_mean"] = similar.mean(axis=1) if liked else nan
    out["liked_similarity_max"] = similar.max(axis=1) if liked else nan
    out["disliked_similarity_max"] = (items @ vectors[disliked].T).max(axis=1) if disliked else nan
    return out


def _matches(ids: list[str], query: CandidateQuery, pool: Pool, retriever: HybridRetriever) -> dict:
    catalog, c = retriever.catalog, query.constraints
    liked_items = [catalog[i] for i in query.liked if i in catalog]
    liked_genres = Counter(g for item in liked_items for g in item.genres)
    liked_people = Counter(p for item in liked_items for p in {*item.directors, *item.cast[:4], *item.writers})
    liked_years = [item.year for item in liked_items if item.year]
    mean_year = sum(liked_years) / len(liked_years) if liked_years else None
    wanted_genres, wanted_people = set(c.genres), set(c.people)
    rows = {name: [] for name in ("genre_matches", "person_matches", "liked_genre_overlap", "liked_people_overlap",
                                  "year", "liked_year_gap")}
    for item_id in ids:
        item = catalog[item_id]
        people = {*item.directors, *item.cast, *item.writers}
        rows["genre_matches"].append(len(wanted_genres & set(item.genres)))
        rows["person_matches"].append(len(wanted_people & people))
        rows["liked_genre_overlap"].append(sum(liked_genres[g] for g in item.genres) / max(len(liked_items), 1))
        rows["liked_people_overlap"].append(sum(liked_people[p] for p in people))
        rows["year"].append(item.year or np.nan)
        rows["liked_year_gap"].append(abs(item.year - mean_year) if item.year and mean_year else np.nan)
    out = {name: np.array(values, dtype=np.float64) for name, values in rows.items()}
    out["constraints_rank"] = _ranks(ids, pool.lists.get("constraints", ()))
    out["wanted_genres"] = np.full(len(ids), float(len(wanted_genres)))
    out["wanted_people"] = np.full(len(ids), float(len(wanted_people)))
    return out
