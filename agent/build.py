"""Build a `Recommender` from `Settings`: catalog, index, collaborative signal, engine, session store.

Loading order is cheapest-first so a bad catalog or data dir fails in a second, before any model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config import Settings
from agent.engines import TransformersEngine
from agent.grounding import FactChecker
from agent.models import adapter_name, resolve_embedder, resolve_llm
from agent.store import SqliteSessionStore
from agent.turn import Recommender
from retrieval.candidates import Cooccurrence, HybridRetriever
from retrieval.catalog import Catalog, load_catalog
from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.index import IndexStatus, build_index
from retrieval.redial import load_redial_dialogues, mentioned_ids
from retrieval.titles import TitleMatcher


def uses_redial(settings: Settings) -> bool:
    return settings.catalog in (None, "redial")


def load_settings_catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.catalog, settings.data_dir)


def cooccurrence_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "redial" / "train_sample" / "train_data.jsonl"


def load_cooccurrence(settings: Settings) -> Cooccurrence | None:
    """Co-mentions in the ReDial training dialogues (only for the ReDial catalog)."""
    path = cooccurrence_file(settings)
    if not uses_redial(settings) or not path.exists():
        return None
    dialogues = load_redial_dialogues(path)
    return Cooccurrence(list(d.mentions) + [i for m in d.messages for i in mentioned_ids(m.text)] for d in dialogues)


def load_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(resolve_embedder(settings.embedding_model, settings.cache_dir),
                                       name=settings.embedding_model)


def build_recommender(settings: Settings, *, progress: bool = False, adapter: str | None = None,
                      catalog: Catalog | None = None) -> tuple[Recommender, IndexStatus]:
    adapter = adapter or settings.adapter
    model_name = adapter_name(adapter) if adapter else settings.model  # a bad adapter fails before anything loads
    catalog = catalog or load_settings_catalog(settings)
    embedder = load_embedder(settings)
    index, status = build_index(catalog, embedder, settings.index_dir, progress=progress)
    retriever = HybridRetriever(catalog, index, embedder, load_cooccurrence(settings))
    engine = TransformersEngine(resolve_llm(settings.model, settings.cache_dir), adapter=adapter,
                                model_name=model_name, dtype=settings.dtype)
    matcher = TitleMatcher(catalog)
    recommender = Recommender(settings=settings, catalog=catalog, matcher=matcher, retriever=retriever,
                              engine=engine, sessions=SqliteSessionStore(settings.db_path),
                              checker=FactChecker(catalog, matcher))
    if status.rebuilt and progress:
        print(f"indexed {status.count} items in {status.seconds:.1f}s", file=sys.stderr)
    return recommender, status
