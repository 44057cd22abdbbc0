"""The persistent Chroma collection of catalog embeddings (cosine space), built idempotently.

`build_index` embeds every item's document (label + description) and stores it with its metadata. The collection is
stamped (a JSON file beside it) with the catalog's fingerprint and the embedder's name; when both match, nothing is
rebuilt. One process writes an index directory at a time (Chroma's PersistentClient is not multi-process safe for
writers; see platform-notes.md); other processes may read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.catalog import Catalog, Item
from retrieval.embeddings import Embedder

log = logging.getLogger("convrec.index")

BATCH = 256
EXACT_SEARCH_MAX = 200_000
"""Catalogs up to this size are searched exactly: every stored vector against the query (6,924 ReDial items: about
a millisecond). Chroma's approximate HNSW search returned other neighbours for the same vector in another process
(measured: a 200-neighbour list differed from position 35 on between PYTHONHASHSEED=1 and 2), which made the
benchmark's numbers differ between runs."""


def item_document(item: Item) -> str:
    """The text embedded for an item."""
    return f"{item.label}. {item.description}".strip()


@dataclass(frozen=True)
class IndexStatus:
    collection: str
    count: int
    rebuilt: bool
    seconds: float


class ChromaIndex:
    """Nearest catalog items to a query vector."""

    def __init__(self, index_dir: Path, catalog: Catalog) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        index_dir.mkdir(parents=True, exist_ok=True)
        self.index_dir = index_dir
        self.client = chromadb.PersistentClient(path=str(index_dir),
                                                settings=ChromaSettings(anonymized_telemetry=False))
        self.name = "catalog-" + hashlib.sha1(catalog.source.encode()).hexdigest()[:10]
        self.collection = self.client.get_or_create_collection(self.name, metadata={"hnsw:space": "cosine"})
        self._matrix: tuple[dict[str, int], np.ndarray] | None = None
        self._exact_search: tuple[list[str], np.ndarray] | None = None

    @property
    def stamp_path(self) -> Path:
        """What the collection was built from, written only after a complete build."""
        return self.index_dir / f"{self.name}.json"

    def stamp(self, catalog: Catalog, embedder: Embedder) -> dict[str, object]:
        return {"fingerprint": catalog.fingerprint(), "embedder": embedder.name, "count": len(catalog)}

    def is_current(self, catalog: Catalog, embedder: Embedder) -> bool:
        try:
            recorded = json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return False
        return recorded == self.stamp(catalog, embedder) and self.collection.count() == len(catalog)

    def query(self, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        """(item_id, cosine similarity), best first; ties in id order. Up to `EXACT_SEARCH_MAX` items every stored
        vector is compared (exact and the same in every process), beyond it Chroma's HNSW graph answers."""
        count = self.collection.count()
        n = min(n, count)
        if n == 0:
            return []
        if count > EXACT_SEARCH_MAX:
            result = self.collection.query(query_embeddings=[vector.tolist()], n_results=n, include=["distances"])
            return [(i, 1.0 - d) for i, d in zip(result["ids"][0], result["distances"][0], strict=True)]
        ids, vectors = self._exact()
        unit = np.asarray(vector, dtype=np.float64)
        similarities = vectors @ (unit / (np.linalg.norm(unit) or 1.0))
        best = np.argsort(-similarities, kind="stable")[:n]  # rows are in id order: ties go to the smaller id
        return [(ids[k], float(similarities[k])) for k in best]

    def matrix(self) -> tuple[dict[str, int], np.ndarray]:
        """(item id -> row, every item's unit vector as a row, float32), rows in id order; read from the collection
        once and kept."""
        if self._matrix is None:
            got = self.collection.get(include=["embeddings"])
            order = sorted(range(len(got["ids"])), key=lambda k: got["ids"][k])
            vectors = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(got["ids"]), -1)[order]
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            self._matrix = ({got["ids"][k]: row for row, k in enumerate(order)}, vectors)
        return self._matrix

    def _exact(self) -> tuple[list[str], np.ndarray]:
        """The ids in row order and the unit vectors in float64, for exact search."""
        if self._exact_search is None:
            row, vectors = self.matrix()
            self._exact_search = (sorted(row, key=row.__getitem__), vectors.astype(np.float64))
        return self._exact_search

    def vectors(self, item_ids: list[str]) -> dict[str, np.ndarray]:
        """The unit vectors of the items the index holds, in the order asked."""
        row, vectors = self.matrix()
        return {i: vectors[row[i]] for i in item_ids if i in row}


def build_index(catalog: Catalog, embedder: Embedder, index_dir: Path, *, progress: bool = True,
                force: bool = False) -> tuple[ChromaIndex, IndexStatus]:
    """Open the index for `catalog`, (re)building it only when the catalog or the embedder changed."""
    started = time.perf_counter()
    try:
        index = ChromaIndex(index_dir, catalog)
        if not force and index.is_current(catalog, embedder):
            return index, IndexStatus(index.name, index.collection.count(), False, time.perf_counter() - started)
    except Exception as error:  # a damaged folder: Chroma's own errors, SQLite's, OSError; all mean "rebuild"
        if "locked" in str(error).lower():  # another process is writing it: not damage, nothing to set aside
            raise
        index = _reopen_damaged(index_dir, catalog, error)
    index.stamp_path.unlink(missing_ok=True)
    index.client.delete_collection(index.name)
    index.collection = index.client.create_collection(index.name, metadata={"hnsw:space": "cosine"})
    items = list(catalog)
    bar = tqdm(total=len(items), desc="indexing catalog", unit="item", disable=not progress)
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        index.collection.upsert(
            ids=[item.item_id for item in batch],
            embeddings=embedder.embed([item_document(item) for item in batch]).tolist(),
            metadatas=[_metadata(item) for item in batch],
            documents=[item_document(item) for item in batch],
        )
        bar.update(len(batch))
    bar.close()
    # Written last: an interrupted build has no stamp and is rebuilt next time.
    index.stamp_path.write_text(json.dumps(index.stamp(catalog, embedder)))
    return index, IndexStatus(index.name, index.collection.count(), True, time.perf_counter() - started)


def _reopen_damaged(index_dir: Path, catalog: Catalog, error: Exception) -> ChromaIndex:
    """Set a damaged index folder aside (`<folder>.damaged`, replacing an older one), say so, open a fresh one."""
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()  # Chroma keeps one client per path: drop the damaged one
    aside = index_dir.with_name(index_dir.name + ".damaged")
    shutil.rmtree(aside, ignore_errors=True)
    index_dir.rename(aside)
    log.warning("the index in %s could not be read (%s: %s); moved it to %s and rebuilding it", index_dir,
                type(error).__name__, str(error)[:200], aside)
    return ChromaIndex(index_dir, catalog)


def _metadata(item: Item) -> dict[str, str | int]:
    meta: dict[str, str | int] = {"title": item.title, "genres": "|".join(item.genres)}
    if item.year:
        meta["year"] = item.year
    return meta
