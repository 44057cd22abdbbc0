"""How high can the memory's disliked F1 go on what a ReDial dialogue says? (issue 17's goal: 0.60)

    python -m eval.dislike_ceiling [--json]    # about 4 minutes on 2 cores; training dialogues only, never dev

Four readers of the 3,358 training dialogues, each scored as `convrec eval` scores the memory (the seeker's form,
catalog movies only, micro-averaged over dialogues):

1. the memory as convrec keeps it: cue rules + the committed reaction model (which learned from these very
   dialogues, so its figure here is optimistic);
2. a classifier that reads the whole dialogue for each movie of the form (`movie_rows`): what the memory made of
   it, who named it first and how often, its place among the recommender's suggestions and how many came after,
   and the MiniLM embeddings of the seeker's reply to its first suggestion, of the seeker's own messages naming it
   and (when it was the last suggestion) of the seeker's last message. Multinomial logistic regression, five folds
   by dialogue (the reaction model's folds, finetune.reactions.folds);
3. the same classifier also told the seeker's own form answers to "suggested?" and "seen?" - which no system has:
   an oracle for two of the form's three questions;
4. the recommender's form: a second person who read the whole dialogue (eval.form_agreement).

Each classifier's liked and disliked thresholds are the best on its own held-out predictions (optimistic, the same
for both), so 2 and 3 are upper figures for what these signals can give.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from agent.reactions import LABELS, ReactionModel, read_message
from agent.types import SessionState
from eval.datasets import replay, utterances
from eval.form_agreement import agreement, read_records
from eval.memory_errors import memory_state
from eval.redial_bench import precision_recall_f1
from finetune.reactions import form_label
from retrieval.redial import RECOMMENDER, SEEKER, Dialogue, MovieForm, render_mentions

STATES = ("liked", "disliked", "neutral", "absent")
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.9, 0.05))
C = 0.3


@dataclass(frozen=True)
class MovieRow:
    dialogue_id: str
    item_id: str
    memory: str
    """What convrec's memory holds of the movie at the dialogue's end (one of STATES)."""
    features: np.ndarray
    label: int
    """0 liked, 1 disliked, 2 not said (the seeker's form)."""


def movie_rows(dialogue: Dialogue, state: SessionState, vectors: Mapping[str, np.ndarray],
               catalog) -> list[MovieRow]:
    """One row per catalog movie of the dialogue's form, from the whole dialogue and the final memory `state`."""
    said = [(sender, render_mentions(raw, dialogue.mentions), ids) for sender, raw, ids in utterances(dialogue)]
    width = len(next(iter(vectors.values())))
    nothing = np.zeros(width)
    seeker_texts = [text for sender, text, _ in said if sender == SEEKER]
    last_seeker = vectors[seeker_texts[-1]] if seeker_texts else nothing
    suggestions = list(dict.fromkeys(i for sender, _, ids in said if sender == RECOMMENDER for i in ids))
    rows = []
    for item_id, form in dialogue.forms.items():
        if item_id not in catalog:
            continue
        first = next((sender for sender, _, ids in said if item_id in ids), None)
        naming = [vectors[text] for sender, text, ids in said if sender == SEEKER and item_id in ids]
        by_recommender = sum(1 for sender, _, ids in said if sender == RECOMMENDER and item_id in ids)
        reply = nothing
        for k, (sender, _, ids) in enumerate(said):
            if sender == RECOMMENDER and item_id in ids:
                answer = next((u for u in said[k + 1:] if u[0] == SEEKER), None)
                if answer is not None and item_id not in answer[2]:
                    reply = vectors[answer[1]]
                break
        place = suggestions.index(item_id) if item_id in suggestions else -1
        after = len(suggestions) - place - 1 if place >= 0 else 0
        last_suggestion = place >= 0 and after == 0
        memory = memory_state(state, item_id)
        extra = [float(memory == s) for s in STATES] + [
            float(first == SEEKER), min(len(naming), 3) / 3, min(by_recommender, 3) / 3, float(place >= 0),
            float(last_suggestion), min(after, 5) / 5, float(reply is not nothing), float(item_id in state.seen)]
        features = np.concatenate([reply, np.mean(naming, axis=0) if naming else nothing,
                                   last_seeker if last_suggestion else nothing, extra])
        rows.append(MovieRow(dialogue.dialogue_id, item_id, memory, features, form_label(form)))
    return rows


def oracle_columns(rows: list[MovieRow], forms: Mapping[tuple[str, str], MovieForm]) -> np.ndarray:
    """The seeker's own answers to "suggested?" and "seen?" (0 / 1 / 2), one-hot: what no system is told."""
    return np.array([[float(getattr(forms[r.dialogue_id, r.item_id], q) == v) for q in ("suggested", "seen")
                      for v in (0, 1, 2)] for r in rows])


def f1_row(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """`precision_recall_f1` of boolean predictions against boolean truth."""
    return precision_recall_f1(int((predicted & actual).sum()), int(predicted.sum()), int(actual.sum()))


def best_threshold(probabilities: np.ndarray, actual: np.ndarray) -> dict:
    """The threshold on `probabilities` with the best F1 against `actual` (the optimistic choice)."""
    scored = [(f1_row(probabilities >= t, actual), t) for t in THRESHOLDS]
    row, threshold = max(scored, key=lambda s: s[0]["f1"])
    return {**row, "threshold": threshold}


def cross_validated(x: np.ndarray, y: np.ndarray, fold: np.ndarray, fit: Callable) -> np.ndarray:
    """Held-out class probabilities for every row: each fold predicted by a model fitted on the others."""
    probabilities = np.zeros((len(y), len(LABELS)))
    for k in sorted(set(fold.tolist())):
        model = fit(x[fold != k], y[fold != k])
        probabilities[fold == k] = model.predict_proba(x[fold == k])
    return probabilities


def ceiling(train: list[Dialogue], catalog, matcher, reactions: ReactionModel | None,
            vectors: Mapping[str, np.ndarray], fold_of: Mapping[str, int], records: list[dict]) -> dict:
    from sklearn.linear_model import LogisticRegression

    embedder = _Lookup(vectors)

    def read(text, state):
        return read_message(text, state, catalog, matcher, reactions, embedder)

    rows = [row for d in train for row in movie_rows(d, replay(d, catalog, matcher, read)[1], vectors, catalog)]
    y = np.array([r.label for r in rows])
    fold = np.array([fold_of[r.dialogue_id] for r in rows])
    x = np.stack([r.features for r in rows])
    forms = {(d.dialogue_id, i): f for d in train for i, f in d.forms.items()}

    def fit(a, b):
        return LogisticRegression(C=C, max_iter=3000).fit(a, b)

    report = {"dialogues": len(train), "form_movies": len(rows),
              "memory (rules + reaction model)": {kind: f1_row(np.array([r.memory == kind for r in rows]), y == k)
                                                  for k, kind in enumerate(LABELS[:2])}}
    for name, features in (("whole-dialogue classifier", x),
                           ("whole-dialogue classifier + the seeker's suggested/seen answers (oracle)",
                            np.hstack([x, oracle_columns(rows, forms)]))):
        probabilities = cross_validated(features, y, fold, fit)
        report[name] = {kind: best_threshold(probabilities[:, k], y == k) for k, kind in enumerate(LABELS[:2])}
    human = agreement(records, catalog)
    report["recommender's form (a second person)"] = {kind: human[kind] for kind in LABELS[:2]}
    return report


class _Lookup:
    """An embedder over embeddings already made (the reaction model's cache)."""

    def __init__(self, vectors: Mapping[str, np.ndarray]):
        self.vectors = vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def main() -> None:
    from agent.build import load_embedder, load_reactions_of, load_settings_catalog
    from agent.config import Settings
    from finetune.reactions import embedded, folds
    from retrieval.redial import load_redial_dialogues, training_paths
    from retrieval.titles import TitleMatcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = Settings.from_env()
    catalog = load_settings_catalog(settings)
    train = [d for path in training_paths(settings.data_dir) for d in load_redial_dialogues(path)]
    texts = [render_mentions(raw, d.mentions) for d in train for sender, raw, _ in utterances(d) if sender == SEEKER]
    vectors = embedded(list(dict.fromkeys(texts)), load_embedder(settings), settings.cache_dir)
    report = ceiling(train, catalog, TitleMatcher(catalog), load_reactions_of(settings), vectors, folds(train),
                     read_records(training_paths(settings.data_dir)))
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['dialogues']} training dialogues, {report['form_movies']} form movies in the catalog")
    for name, value in report.items():
        if isinstance(value, dict):
            print(f"  {name}: " + "; ".join(f"{kind} F1 {value[kind]['f1']:.3f} (P {value[kind]['precision']:.3f}"
                                            f", R {value[kind]['recall']:.3f})" for kind in LABELS[:2]))


if __name__ == "__main__":
    main()
