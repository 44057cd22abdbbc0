"""Collaborative models and cross-fitting, on hand-made dialogues."""

from __future__ import annotations

import numpy as np

from finetune.crossfit import assign_folds, fold_retrievers
from retrieval.candidates import HybridRetriever
from retrieval.catalog import Catalog, Item
from retrieval.collaborative import COLLABORATIVE_MODELS, EASE, Cooccurrence
from retrieval.redial import Dialogue

ROWS = [["a", "b"], ["a", "b"], ["a", "b", "c"], ["c", "d"], ["c", "d"], ["b", "e"]]


def test_ease_weights_are_the_closed_form_ridge_solution() -> None:
    model = EASE(ROWS, l2=1.0, min_count=1)
    x = np.array([[item in row for item in model.item_ids] for row in ROWS], dtype=float)
    gram = x.T @ x + np.eye(len(model.item_ids))
    inverse = np.linalg.inv(gram)
    expected = np.eye(len(model.item_ids)) - inverse / np.diag(inverse)
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(model.weights, expected, atol=1e-5)


def test_ease_ranks_the_item_most_often_mentioned_with_the_seed_first() -> None:
    scores = EASE(ROWS, l2=1.0, min_count=1).scores(["a"])
    assert max(scores, key=scores.get) == "b"
    assert "a" not in scores


def test_ease_drops_rare_items_and_knows_nothing_of_unknown_seeds() -> None:
    model = EASE(ROWS, l2=1.0, min_count=2)
    assert "e" not in model.item_ids
    assert model.scores(["zzz"]) == {}


def test_every_registered_model_carries_its_registry_name() -> None:
    for name, make in COLLABORATIVE_MODELS.items():
        assert make(ROWS).name == name


def test_folds_are_balanced_and_seeded() -> None:
    ids = [str(i) for i in range(10)]
    folds = assign_folds(ids, 5, seed=3)
    assert folds == assign_folds(ids, 5, seed=3)
    assert sorted(np.bincount(list(folds.values()))) == [2] * 5


def test_a_fold_retriever_never_learned_from_its_own_dialogues() -> None:
    items = {i: Item(i, f"Movie {i}", 2000 + k, genres=("Drama",)) for k, i in enumerate("abcdef")}
    catalog = Catalog(items, popularity={})
    dialogues = [Dialogue(str(k), (), {i: i for i in row}, {}) for k, row in enumerate(ROWS)]
    retriever = HybridRetriever(catalog, None, None, Cooccurrence([]))
    fold_of, retrievers = fold_retrievers(retriever, dialogues, folds=3, seed=0)
    for dialogue in dialogues:
        own = retrievers[fold_of[dialogue.dialogue_id]]
        others = [d for d in dialogues if fold_of[d.dialogue_id] != fold_of[dialogue.dialogue_id]]
        for item_id in items:
            assert own.popularity[item_id] == sum(item_id in d.mentions for d in others)
        expected = Cooccurrence([list(d.mentions) for d in others]).scores(["a"])
        assert own.collaborative.scores(["a"]) == expected
