"""Sentence embeddings (normalised, so cosine similarity is a dot product)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

import numpy as np

RECENT_TEXTS = 256
"""Single texts whose embedding is kept (the messages of the turns in flight)."""


class Embedder(Protocol):
    name: str
    dimension: int

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder (see agent.models.resolve_embedder) or a hub id."""

    def __init__(self, path: str, *, name: str | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device="cpu")
        self.name = name or path
        self.dimension = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        # a turn embeds its message twice (the reaction model reads it, retrieval searches with it): once suffices
        self._one = functools.lru_cache(maxsize=RECENT_TEXTS)(lambda text: self._encode([text])[0])

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if len(texts) == 1:
            return self._one(texts[0])[None, :].copy()
        return self._encode(texts, progress)

    def _encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingCache:
    """An embedder that embeds a known set of texts once, in batches, and answers those from memory (training and
    evaluation embed thousands of turns; one batched pass is ~30x faster than one call per turn on a CPU)."""

    def __init__(self, embedder: Embedder, texts: Sequence[str]) -> None:
        self.embedder, self.name, self.dimension = embedder, embedder.name, embedder.dimension
        unique = list(dict.fromkeys(texts))
        self.vectors = dict(zip(unique, embedder.embed(unique), strict=True)) if unique else {}

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if all(text in self.vectors for text in texts):
            return np.stack([self.vectors[text] for text in texts]) if texts else np.zeros((0, self.dimension))
        return self.embedder.embed(texts, progress=progress)
