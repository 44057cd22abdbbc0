"""The persistent Chroma collection of catalog embeddings (cosine space), built idempotently.

`build_index` embeds every item's document (label + description) and stores it with its metadata. The collection is
stamped (a JSON file beside it) with the catalog's fingerprint and the embedder's name; when both match, nothing is
rebuilt. One process writes an index directory at a time (Chroma's PersistentClient is not multi-process safe for
writers; see platform-notes.md); other processes may read it. With an address instead of a folder (`--index-url
http://host:port`), the index lives in Chroma's server (`chroma run`), shared by every replica; its stamp is kept
there too, in a small collection of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from retrieval.catalog import Catalog, Item
from retrieval.embeddings import Embedder

log = logging.getLogger("convrec.index")

BATCH = 256
STAMPS = "convrec-stamps"
"""On Chroma's server: the collection holding each catalog collection's stamp (its metadata)."""
EXACT_SEARCH_MAX = 200_000
"""Catalogs up to this size are searched exactly: every stored vector against the query (6,924 ReDial items: about
a millisecond). Chroma's approximate HNSW search returned other neighbours for the same vector in another process
(measured: a 200-neighbour list differed from position 35 on between PYTHONHASHSEED=1 and 2), which made the
benchmark's numbers differ between runs."""


def is_server(location: Path | str) -> bool:
    """An index location that is Chroma's server (http://host:port) rather than a folder."""
    return str(location).startswith(("http://", "https://"))


def item_document(item: Item) -> str:
    """The text embedded for an item."""
    return f"{item.label}. {item.description}".strip()


class IndexUnavailable(RuntimeError):
    """Chroma's server is not there or refused the index (the message names its address)."""


@dataclass(frozen=True)
class IndexStatus:
    collection: str
    count: int
    rebuilt: bool
    seconds: float


class ChromaIndex:
    """Nearest catalog items to a query vector."""

    def __init__(self, location: Path | str, catalog: Catalog) -> None:
        """`location`: a folder (an embedded Chroma) or the address of Chroma's server."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self.location = location
        if is_server(location):
            address = urlsplit(str(location))
            self.client = chromadb.HttpClient(host=address.hostname or "127.0.0.1", port=address.port or 8000,
                                              ssl=address.scheme == "https",
                                              settings=ChromaSettings(anonymized_telemetry=False))
        else:
            Path(location).mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(location),
                                                    settings=ChromaSettings(anonymized_telemetry=False))
        self.name = "catalog-" + hashlib.sha1(catalog.source.encode()).hexdigest()[:10]
        self.collection = self.client.get_or_create_collection(self.name, metadata={"hnsw:space": "cosine"})
        self._matrix: tuple[dict[str, int], np.ndarray] | None = None
        self._exact_search: tuple[list[str], np.ndarray] | None = None

    @property
    def stamp_path(self) -> Path:
        """What the collection was built from, written only after a complete build (a folder's index)."""
        return Path(self.location) / f"{self.name}.json"

    def stamp(self, catalog: Catalog, embedder: Embedder) -> dict[str, object]:
        return {"fingerprint": catalog.fingerprint(), "embedder": embedder.name, "count": len(catalog)}

    def recorded_stamp(self) -> dict[str, object] | None:
        try:
            if is_server(self.location):
                got = self._stamps().get(ids=[self.name], include=["metadatas"])
                return json.loads(got["metadatas"][0]["stamp"]) if got["ids"] else None
            return json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return None

    def record_stamp(self, stamp: dict[str, object] | None) -> None:
        """Write the stamp (None: remove it, before a rebuild)."""
        server = is_server(self.location)
        if stamp is None and server:
            self._stamps().delete(ids=[self.name])
        elif stamp is None:
            self.stamp_path.unlink(missing_ok=True)
        elif server:
            self._stamps().upsert(ids=[self.name], embeddings=[[0.0]], metadatas=[{"stamp": json.dumps(stamp)}])
        else:
            self.stamp_path.write_text(json.dumps(stamp))

    def _stamps(self):
        return self.client.get_or_create_collection(STAMPS, embedding_function=None)

    def is_current(self, catalog: Catalog, embedder: Embedder) -> bool:
        return (self.recorded_stamp() == self.stamp(catalog, embedder)
                and self.collection.count() == len(catalog))

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


def build_index(catalog: Catalog, embedder: Embedder, location: Path | str, *, progress: bool = True,
                force: bool = False, build: bool = True) -> tuple[ChromaIndex, IndexStatus]:
    """Open the index for `catalog` in a folder or on Chroma's server, (re)building it only when the catalog or the
    embedder changed. `build=False` (replicas reading a shared server) refuses a missing or stale index instead."""
    started = time.perf_counter()
    try:
        index = ChromaIndex(location, catalog)
        if not force and index.is_current(catalog, embedder):
            return index, IndexStatus(index.name, index.collection.count(), False, time.perf_counter() - started)
        if not build:
            raise IndexUnavailable(f"the index at {location} is missing or was built from another catalog or "
                                   f"embedder; build it once with `convrec index --index-url {location}`")
    except IndexUnavailable:
        raise
    except Exception as error:  # a damaged folder: Chroma's own errors, SQLite's, OSError; all mean "rebuild"
        if is_server(location):
            raise IndexUnavailable(f"Chroma's server at {location} cannot be used: {error}") from error
        if "locked" in str(error).lower():  # another process is writing it: not damage, nothing to set aside
            raise
        index = _reopen_damaged(Path(location), catalog, error)
    index.record_stamp(None)
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
    index.record_stamp(index.stamp(catalog, embedder))
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
