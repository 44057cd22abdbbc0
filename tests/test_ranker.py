"""The learned ranker: its committed artifact matches the code, it only re-orders candidates, bad folders fail
clearly, and stage two uses the model's scores only for the adapter it was trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.config import DEFAULT_RANKER
from agent.engines import ScoringEngine
from agent.ranking import rank_candidates
from prompts import TEMPLATE_VERSION
from retrieval.features import FEATURES
from retrieval.ranker import MODEL_WEIGHTS, RANKER_FILE, LearnedRanker, RankerError, features_version, load_ranker


def test_the_committed_ranker_was_built_for_these_features_and_prompt_templates() -> None:
    card = json.loads((DEFAULT_RANKER / RANKER_FILE).read_text())
    assert card["features"] == list(FEATURES), "features changed: rebuild with `convrec ranker`"
    assert card["features_version"] == features_version(), "features changed: rebuild with `convrec ranker`"
    assert card["template_version"] == TEMPLATE_VERSION, "prompt templates changed: rebuild with `convrec ranker`"
    ranker = load_ranker(DEFAULT_RANKER, TEMPLATE_VERSION)
    assert ranker.stage_one.num_feature() == len(FEATURES)


def test_the_committed_ranker_card_says_what_it_learned_from() -> None:
    card = json.loads((DEFAULT_RANKER / RANKER_FILE).read_text())
    assert card["data"]["training_dialogues"] == 3358
    assert card["data"]["validation_file"].endswith("valid_data.jsonl")
    assert card["collaborative"] in card["collaborative_comparison"]
    assert (DEFAULT_RANKER / "README.md").read_text().startswith("# convrec learned ranker")


def test_a_ranker_built_for_other_features_or_templates_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ranker"
    shutil.copytree(DEFAULT_RANKER, folder)
    card = json.loads((folder / RANKER_FILE).read_text())
    (folder / RANKER_FILE).write_text(json.dumps(card | {"features_version": "old"}))
    with pytest.raises(RankerError, match="rebuild"):
        load_ranker(folder, TEMPLATE_VERSION)
    (folder / RANKER_FILE).write_text(json.dumps(card))
    if card.get("adapter"):  # stage two learned the adapter's score of prompts made with these templates
        with pytest.raises(RankerError, match="prompt templates"):
            load_ranker(folder, "another-version")


def test_a_missing_or_broken_ranker_folder_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(RankerError, match="convrec ranker"):
        load_ranker(tmp_path / "nothing", TEMPLATE_VERSION)
    folder = tmp_path / "broken"
    shutil.copytree(DEFAULT_RANKER, folder)
    (folder / "retrieval.txt").write_text("not a model")
    with pytest.raises(RankerError, match="unreadable"):
        load_ranker(folder, TEMPLATE_VERSION)


def test_stage_two_adds_the_weighted_model_score_to_stage_one_and_only_reorders() -> None:
    ranker = LearnedRanker(stage_one=None, model_weight=0.5, card={"adapter": "adapter-a"})
    # stage one 3, 2, 1; + 0.5 x (-5, -1, -3) = 0.5, 1.5, -0.5
    assert ranker.rerank([3.0, 2.0, 1.0], [-5.0, -1.0, -3.0]) == [1, 0, 2]
    assert LearnedRanker(None, 0.0, {"adapter": "a"}).rerank([3.0, 2.0, 1.0], [-5.0, -1.0, -3.0]) == [0, 1, 2]
    assert ranker.adapter == "adapter-a"
    assert LearnedRanker(None, None, {"adapter": "adapter-a"}).adapter is None  # built without the model


def test_the_committed_stage_two_says_how_its_weight_was_chosen() -> None:
    card = json.loads((DEFAULT_RANKER / RANKER_FILE).read_text())
    two = card["stage_two"]
    assert two["weight"] in MODEL_WEIGHTS
    assert set(two["split_b_by_weight"]) == {str(w) for w in MODEL_WEIGHTS}
    best = max(q["ndcg@10"] for q in two["split_b_by_weight"].values())
    assert two["split_b_by_weight"][str(two["weight"])]["ndcg@10"] == best
    assert two["split_b_cross_validated"]["ndcg@10_gain"]["interval"] is not None
    assert load_ranker(DEFAULT_RANKER, TEMPLATE_VERSION).model_weight == two["weight"]


class _Engine:
    """A scoring engine with canned log-probabilities (the real one is tested in tests/test_engines.py)."""

    name, model_name, base_name, model_names = "fake", "adapter-a", "base", ("adapter-a", "base")

    def __init__(self, scores):
        self.scores = scores

    def using(self, model_name):
        return self

    def generate(self, conversations, max_new_tokens, stop=()):
        return [""] * len(conversations)

    def score_choices(self, messages, prefix, choices):
        return self.scores[: len(choices)]


class _Reranker:
    adapter = "adapter-a"

    def rerank(self, stage_one_scores, model_logprobs):
        return sorted(range(len(model_logprobs)), key=lambda k: -model_logprobs[k])


def test_stage_two_orders_only_the_candidates_and_only_for_its_own_adapter() -> None:
    engine = _Engine([-3.0, -1.0, -2.0])
    assert isinstance(engine, ScoringEngine)
    ids = ["x", "y", "z"]
    outcome = rank_candidates(engine, [], ids, 2, reranker=_Reranker(), stage_one_scores=[3, 2, 1])
    assert outcome.item_ids == ("y", "z", "x") and outcome.notes == ("reranked",)
    other = _Reranker()
    other.adapter = "adapter-b"
    fused = rank_candidates(engine, [], ids, 2, 1.0, reranker=other, stage_one_scores=[3, 2, 1])
    assert fused.notes == ("scored",)
    assert set(fused.item_ids) == set(ids)


@pytest.mark.slow
def test_stage_one_scores_every_pool_row(redial_recommender) -> None:
    from agent.turn import query_from
    from agent.types import SessionState
    from retrieval.features import pool_features

    retriever = redial_recommender.retriever
    assert retriever.ranker is not None
    query = query_from(SessionState("s"), "a funny 90s comedy")
    pool = retriever.pool(query)
    features = pool_features(pool, query, retriever)
    assert features.shape == (len(pool.item_ids), len(FEATURES))
    assert np.isfinite(retriever.ranker.score(features)).all()
    picked = [c.item_id for c in retriever.candidates(query, 10)]
    assert set(picked) <= set(pool.item_ids)
