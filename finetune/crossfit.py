"""k-fold cross-fitting: features of a training turn never come from a model that saw its dialogue.

    fold_retrievers(retriever, dialogues, folds, seed) -> (fold_of, retrievers)
      every training dialogue gets a seeded fold; retrievers[f] has popularity and the collaborative model (the
      kind `retriever.collaborative` is) fitted on the dialogues of the other folds only.

    split_b(dialogues, extra_ids, share, seed) -> ids
      the disjoint split for everything that learns from the adapter's score: a seeded share of train_extra's
      dialogues, held out of the ranker's stage one and of the adapter's examples ("split A" is the rest).

Used for the learned ranker's training turns (finetune/ranker.py) and the adapter's examples (finetune/examples.py).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence

from retrieval.candidates import HybridRetriever
from retrieval.collaborative import COLLABORATIVE_MODELS
from retrieval.redial import Dialogue, dialogue_items


def assign_folds(dialogue_ids: Sequence[str], folds: int, seed: int = 0) -> dict[str, int]:
    """A seeded, balanced fold number per dialogue."""
    order = list(dialogue_ids)
    random.Random(seed).shuffle(order)
    return {dialogue_id: k % folds for k, dialogue_id in enumerate(order)}


SPLIT_B_SHARE = 0.3
"""Share of train_extra's dialogues in split B (the ranker's stage two learns there; the adapter never sees them)."""


def split_b(dialogues: Sequence[Dialogue], extra_ids: set[str], share: float = SPLIT_B_SHARE,
            seed: int = 0) -> set[str]:
    """Split B's dialogue ids: each train_extra dialogue, in file order, with seeded probability `share`."""
    rng = random.Random(seed)
    return {d.dialogue_id for d in dialogues if d.dialogue_id in extra_ids and rng.random() < share}


def fold_retrievers(retriever: HybridRetriever, dialogues: Sequence[Dialogue], folds: int = 5,
                    seed: int = 0) -> tuple[dict[str, int], list[HybridRetriever]]:
    """(dialogue id -> fold, one retriever per fold fitted without that fold's dialogues)."""
    fold_of = assign_folds([d.dialogue_id for d in dialogues], folds, seed)
    kind = retriever.collaborative.name if retriever.collaborative is not None else None
    out = []
    for fold in range(folds):
        others = [d for d in dialogues if fold_of[d.dialogue_id] != fold]
        counts = Counter(item_id for d in others for item_id in d.mentions)  # as the catalog counts popularity
        popularity = {item_id: float(counts[item_id]) for item_id in retriever.catalog.items}
        model = COLLABORATIVE_MODELS[kind]([dialogue_items(d) for d in others]) if kind else None
        out.append(dataclasses.replace(retriever, collaborative=model, popularity=popularity))
    return fold_of, out
