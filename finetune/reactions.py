"""Learn the opinion of a reply to the movies just suggested (agent/reactions.py) from the seekers' own forms.

    python -m finetune.reactions --out finetune/reactions [--json]

1. Every training dialogue (3,358: train_sample + train_extra) is replayed as `convrec eval` replays it, with the
   cue rules alone; each seeker message right after a recommender message that named movies gives one row per
   suggested movie the message does not name by title: the message's MiniLM embedding, what the rules made of
   that movie, its place in the suggestion, ... (`reaction_features`). Label: the seeker's form for that movie
   (liked, disliked, else none).
2. Five folds by dialogue: a multinomial logistic regression for each C of a small grid, with and without balanced
   class weights, is fitted on four folds, and the held-out fold's dialogues are folded into a memory with its
   decisions for each pair of thresholds, the rules' liked / disliked readings kept or overridden. The setting with
   the best mean of liked F1 and disliked F1 of the final memory (as `convrec eval` scores the memory) over the
   held-out folds is kept (differences under 0.001 count as ties, broken toward keeping the rules, then the
   smaller C); the card shows the best of each variant beside it.
3. The model is refitted on every training row with that C and written as JSON (weights, thresholds, the
   cross-validated table and the validation dialogues' memory F1 with and without it).
The dev dialogues are never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import memory
from agent.reactions import FILE, LABELS, decisions, reaction_rows, with_decisions
from agent.types import SessionState, Signals
from agent.understand import understand
from eval.datasets import replay, utterances
from eval.redial_bench import memory_accuracy
from retrieval.redial import (
    SEEKER,
    VALIDATION_FILE,
    load_redial_dialogues,
    render_mentions,
    training_paths,
)

C_GRID = (0.1, 0.3, 1.0, 3.0)
WEIGHTINGS = (None, "balanced")
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
FOLDS = 5
SEED = 0


@dataclass
class Step:
    """One seeker message of a replayed dialogue: the rules' signals, and the model's rows for the movies just
    suggested that it does not name (with their labels and, once a model is fitted, their probabilities)."""

    signals: Signals
    items: list[str]
    rows: list[np.ndarray]
    labels: list[int]
    probabilities: np.ndarray | None = None


def replay_steps(dialogue, catalog, matcher, vectors: dict[str, np.ndarray]) -> list[Step]:
    """The steps of one dialogue, replayed as `convrec eval` replays it (eval.datasets.replay) with the rules alone."""
    steps: list[Step] = []

    def read(text: str, state: SessionState) -> Signals:
        signals = understand(text, state, catalog, matcher)
        rows, items = reaction_rows(signals, state, vectors[text], text)
        steps.append(Step(signals, items, rows, [form_label(dialogue.forms.get(i)) for i in items]))
        return signals

    replay(dialogue, catalog, matcher, read)
    return steps


def form_label(form) -> int:
    """The seeker's form as a class of LABELS: 0 liked, 1 disliked, 2 not said (or no form)."""
    if form is not None and form.liked == 1:
        return 0
    if form is not None and form.liked == 0:
        return 1
    return 2


def final_memory(dialogue_id: str, steps: list[Step], thresholds: dict[str, float] | None,
                 keep_rules: bool = True) -> SessionState:
    """The memory at the end of a dialogue from its steps, with the model's decisions at `thresholds` (None: the
    rules alone), exactly as `ReactionModel.read` changes the signals."""
    state = SessionState(f"reactions-{dialogue_id}")
    for step in steps:
        signals = step.signals
        if thresholds is not None and step.items:
            decided = dict(zip(step.items, decisions(step.probabilities, thresholds), strict=True))
            signals = with_decisions(signals, decided, keep_rules)
        state = memory.update(state, signals)
    return state


def folds(train) -> dict[str, int]:
    """dialogue id -> its fold (FOLDS folds, shuffled with SEED)."""
    order = list(range(len(train)))
    random.Random(SEED).shuffle(order)
    return {train[k].dialogue_id: n % FOLDS for n, k in enumerate(order)}


def embedded(texts: list[str], embedder, cache_dir: Path) -> dict[str, np.ndarray]:
    """text -> its embedding; kept in the cache folder (keyed by the texts and the embedder), so reruns skip it."""
    key = hashlib.sha256("\n".join([embedder.name, *texts]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"reaction-embeddings-{key}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        vectors = embedder.embed(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return dict(zip(texts, vectors, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("finetune/reactions"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    from agent.build import load_embedder, load_settings_catalog
    from agent.config import Settings
    from retrieval.titles import TitleMatcher

    started = time.perf_counter()
    settings = Settings.from_env()
    catalog = load_settings_catalog(settings)
    matcher = TitleMatcher(catalog)
    train = [d for path in training_paths(settings.data_dir) for d in load_redial_dialogues(path)]
    valid = load_redial_dialogues(Path(settings.data_dir) / VALIDATION_FILE)
    seeker_texts = [render_mentions(raw, d.mentions) for d in (*train, *valid)
                    for sender, raw, _ in utterances(d) if sender == SEEKER]
    vectors = embedded(list(dict.fromkeys(seeker_texts)), load_embedder(settings), settings.cache_dir)
    print(f"{len(vectors)} seeker messages embedded ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    replayed = {d.dialogue_id: replay_steps(d, catalog, matcher, vectors) for d in (*train, *valid)}
    by_id = {d.dialogue_id: d for d in (*train, *valid)}
    fold_of = folds(train)

    def rows_of(ids):
        rows = [(r, y) for i in ids for s in replayed[i] for r, y in zip(s.rows, s.labels, strict=True)]
        return np.stack([r for r, _ in rows]), np.array([y for _, y in rows])

    def memory_f1(ids, thresholds, keep_rules=True) -> dict:
        pairs = [(final_memory(i, replayed[i], thresholds, keep_rules), by_id[i]) for i in ids]
        return memory_accuracy(pairs, catalog)

    def set_probabilities(model, ids) -> None:
        for i in ids:
            for step in replayed[i]:
                step.probabilities = model.predict_proba(np.stack(step.rows)) if step.items else None

    def fit(x, y, c, weighting):
        return LogisticRegression(C=c, class_weight=weighting, max_iter=3000).fit(x, y)

    grid = [{"liked": a, "disliked": b} for a in THRESHOLDS for b in THRESHOLDS]
    table: dict[tuple, list] = {}
    for fold in range(FOLDS):
        fit_ids = [d.dialogue_id for d in train if fold_of[d.dialogue_id] != fold]
        held_ids = [d.dialogue_id for d in train if fold_of[d.dialogue_id] == fold]
        x, y = rows_of(fit_ids)
        for c in C_GRID:
            for weighting in WEIGHTINGS:
                set_probabilities(fit(x, y, c, weighting), held_ids)
                for keep_rules in (True, False):
                    for t in grid:
                        result = memory_f1(held_ids, t, keep_rules)
                        key = (c, weighting or "none", keep_rules, t["liked"], t["disliked"])
                        table.setdefault(key, []).append((result["liked"]["f1"], result["disliked"]["f1"]))
        print(f"fold {fold + 1}/{FOLDS} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    means = {key: (float(np.mean([s[0] for s in v])), float(np.mean([s[1] for s in v]))) for key, v in table.items()}
    # differences under 0.001 are ties: then the rules' readings kept, then the smaller C (the simpler model)
    best = max(means, key=lambda key: (round(sum(means[key]) / 2, 3), key[2], -key[0]))
    c, weighting, keep_rules, liked_t, disliked_t = best
    weighting = None if weighting == "none" else weighting
    x, y = rows_of([d.dialogue_id for d in train])
    model = fit(x, y, c, weighting)
    thresholds = {"liked": liked_t, "disliked": disliked_t}
    valid_ids = [d.dialogue_id for d in valid]
    set_probabilities(model, valid_ids)
    best_of = {}  # the best setting of each variant, to show what each choice is worth
    for key, value in means.items():
        variant = f"C={key[0]}, class weights {key[1]}, " + ("rules kept" if key[2] else "rules overridden")
        if variant not in best_of or sum(value) > sum(best_of[variant][1]):
            best_of[variant] = (key, value)
    rules_only = memory_f1([d.dialogue_id for d in train], None)
    card = {
        "model": "multinomial logistic regression over agent.reactions.reaction_features",
        "labels": list(LABELS), "classes": [int(k) for k in model.classes_], "C": c,
        "class_weight": weighting, "keep_rules": keep_rules, "thresholds": thresholds,
        "training": {"dialogues": len(train), "rows": int(len(y)),
                     "rows_by_label": {LABELS[k]: int((y == k).sum()) for k in range(len(LABELS))}},
        "cross_validated": {"folds": FOLDS, "seed": SEED, "chosen": {"liked_f1": round(means[best][0], 4),
                                                                    "disliked_f1": round(means[best][1], 4)},
                            "best_of_each_variant": {
                                variant: {"thresholds": list(key[3:]), "liked_f1": round(value[0], 4),
                                          "disliked_f1": round(value[1], 4)}
                                for variant, (key, value) in sorted(best_of.items())},
                            "rules_only_training_memory": rules_only},
        "validation": {"rules_only": memory_f1(valid_ids, None),
                       "with_model": memory_f1(valid_ids, thresholds, keep_rules)},
        "seconds": round(time.perf_counter() - started, 1),
        "weights": model.coef_.tolist(), "bias": model.intercept_.tolist(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / FILE).write_text(json.dumps(card) + "\n", encoding="utf-8")
    summary = {k: v for k, v in card.items() if k not in ("weights", "bias")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
