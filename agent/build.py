"""Build a `Recommender` from `Settings`: catalog, index, collaborative signal, engine, session store.

Loading order is cheapest-first so a bad catalog or data dir fails in a second, before any model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config import DEFAULT_RANKER, DEFAULT_REACTIONS, Settings
from agent.engines import ChatEngine, TransformersEngine, pick_dtype
from agent.grounding import FactChecker
from agent.models import (
    adapter_name,
    adapter_retrieval_weight,
    loading_model,
    merged_checkpoint,
    resolve_embedder,
    resolve_llm,
)
from agent.reactions import ReactionModel, load_reactions
from agent.store import open_store
from agent.turn import Recommender
from prompts import TEMPLATE_VERSION
from retrieval.candidates import HybridRetriever
from retrieval.catalog import Catalog, load_catalog
from retrieval.collaborative import COLLABORATIVE_MODELS, Collaborative
from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.index import IndexStatus, build_index
from retrieval.online import Blended, OnlineSignal
from retrieval.ranker import LearnedRanker, load_ranker
from retrieval.redial import dialogue_items, load_training_dialogues
from retrieval.titles import TitleMatcher


def uses_redial(settings: Settings) -> bool:
    return settings.catalog in (None, "redial")


def load_settings_catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.catalog, settings.data_dir)


def load_ranker_of(settings: Settings) -> LearnedRanker | None:
    """The learned ranker `settings.ranker` names; by default the committed one, with the ReDial catalog only."""
    if settings.ranker == "none" or (settings.ranker is None and not uses_redial(settings)):
        return None
    if settings.ranker is None and not DEFAULT_RANKER.is_dir():
        return None
    return load_ranker(Path(settings.ranker or DEFAULT_RANKER), TEMPLATE_VERSION)


def load_reactions_of(settings: Settings) -> ReactionModel | None:
    """The reaction model `settings.reactions` names; by default the committed one (any catalog: it reads words)."""
    if settings.reactions == "none" or (settings.reactions is None and not DEFAULT_REACTIONS.is_dir()):
        return None
    return load_reactions(Path(settings.reactions or DEFAULT_REACTIONS))


def load_collaborative(settings: Settings, kind: str = "cooccurrence") -> Collaborative | None:
    """The collaborative model `kind` (COLLABORATIVE_MODELS) fitted on the ReDial training dialogues (ReDial only)."""
    if not uses_redial(settings):
        return None
    dialogues = load_training_dialogues(settings.data_dir)
    return COLLABORATIVE_MODELS[kind]([dialogue_items(d) for d in dialogues])


def load_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    path = resolve_embedder(settings.embedding_model, settings.cache_dir)
    with loading_model(path, "sentence embedder"):
        return SentenceTransformerEmbedder(path, name=settings.embedding_model)


def named_adapters(settings: Settings) -> dict[str, str]:
    """name -> folder of each adapter; ValueError for a folder that is not an adapter or a name given twice."""
    adapters: dict[str, str] = {}
    for path in settings.adapters:
        name = adapter_name(path)
        if name in adapters or name == settings.model:
            raise ValueError(f"two models are named {name!r} ({adapters.get(name, settings.model)} and {path})")
        adapters[name] = path
    return adapters


def calibrated_weights(adapters: dict[str, str]) -> dict[str, float]:
    """name -> the fusion weight each adapter was calibrated with (adapters without one use the default)."""
    weights = {name: adapter_retrieval_weight(path) for name, path in adapters.items()}
    return {name: weight for name, weight in weights.items() if weight is not None}


def load_engine(settings: Settings, adapters: dict[str, str]) -> ChatEngine:
    """The engine `settings.engine` names, serving the base model and `adapters`."""
    if settings.engine == "remote":
        from agent.remote_engine import RemoteEngine

        return RemoteEngine(settings.engine_url, model_name=next(iter(adapters), None))
    model_path = resolve_llm(settings.model, settings.cache_dir)
    if settings.engine == "vllm":
        from agent.vllm_engine import VLLMEngine

        # one adapter is served merged into the weights (no LoRA per token); CONVREC_MERGE_ADAPTERS=0 serves it as a
        # LoRA beside the base model, which is then served too
        merged = (merged_checkpoint(model_path, next(iter(adapters.values())), pick_dtype(settings.dtype),
                                    settings.cache_dir) if settings.merge_adapters and len(adapters) == 1 else None)
        return VLLMEngine(model_path, adapters=adapters, model_name=settings.model, dtype=settings.dtype,
                          seed=settings.seed, merged_path=merged, compiled=settings.vllm_compile)
    with loading_model(model_path, "LLM"):
        return TransformersEngine(model_path, adapters=adapters, model_name=settings.model, dtype=settings.dtype,
                                  prefix_caching=settings.prefix_cache,
                                  merge_adapters=settings.merge_adapters, prompt_lookup=settings.prompt_lookup)


def build_recommender(settings: Settings, *, progress: bool = False,
                      catalog: Catalog | None = None) -> tuple[Recommender, IndexStatus]:
    adapters = named_adapters(settings)  # a bad adapter fails before anything loads
    catalog = catalog or load_settings_catalog(settings)
    embedder = load_embedder(settings)
    # replicas read a shared server's index (`convrec index --index-url` builds it); a folder is built when needed
    index, status = build_index(catalog, embedder, settings.index_location, progress=progress,
                                build=settings.index_url is None)
    ranker = load_ranker_of(settings)
    collaborative = load_collaborative(settings, ranker.card["collaborative"] if ranker else "cooccurrence")
    sessions = open_store(settings.db, learn=settings.online_learning)
    online = None
    if settings.online_learning:  # the batch model plus what every session has liked since (retrieval/online.py)
        online = OnlineSignal(sessions.likes_since, half_life_days=settings.online_half_life_days)
        collaborative = Blended(collaborative, online)
    retriever = HybridRetriever(catalog, index, embedder, collaborative, ranker=ranker, online=online)
    engine = load_engine(settings, adapters)
    matcher = TitleMatcher(catalog)
    recommender = Recommender(settings=settings, catalog=catalog, matcher=matcher, retriever=retriever,
                              engine=engine, sessions=sessions,
                              checker=FactChecker(catalog, matcher), reactions=load_reactions_of(settings),
                              retrieval_weights=calibrated_weights(adapters))
    if status.rebuilt and progress:
        print(f"indexed {status.count} items in {status.seconds:.1f}s", file=sys.stderr)
    return recommender, status
