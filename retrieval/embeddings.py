"""Sentence embeddings (normalised, so cosine similarity is a dot product)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


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

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)
