"""What the user thinks of the movies just suggested, when their reply names none of them ("sounds good, I'll check
it out", "seen it, loved it", "not really my thing"): a small learned model beside the cue rules of
agent/understand.py.

For each movie of the previous answer (`state.last_recommended`) that the message does not name by title, the
model reads the message's sentence embedding and what the rules made of that movie, and says liked, disliked or
nothing. Trained on the seekers' own forms of the ReDial training dialogues (finetune/reactions.py, which also
chose its thresholds); the weights are a small JSON file committed beside it (finetune/reactions/).

    reactions = load_reactions(folder)
    signals = read_message(text, state, catalog, matcher, reactions, embedder)   # understand() + the model

Where the rules read an opinion of a movie the message names, the rules stand: the model speaks only of movies the
message refers to without naming (or not at all), which is where the rules miss most (eval/memory_errors.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.types import SessionState, Signals
from agent.understand import understand
from retrieval.catalog import Catalog
from retrieval.embeddings import Embedder
from retrieval.titles import TitleMatcher

LABELS = ("liked", "disliked", "none")
RULE_OUTCOMES = ("liked", "disliked", "neutral", "absent")
EXTRA_FEATURES = (*(f"rules: {o}" for o in RULE_OUTCOMES), "seen", "position", "first", "suggested", "only one",
                  "other titles", "question", "fresh")
"""The features after the embedding (`reaction_features`)."""
MAX_POSITION = 3
FILE = "reactions.json"


class ReactionsError(RuntimeError):
    """The reaction model's folder is missing or unreadable; the message says how to rebuild it."""


def reaction_features(vector: np.ndarray, rule: str, seen: bool, position: int, suggested: int,
                      other_titles: int, question: bool, fresh: bool) -> np.ndarray:
    """One row: the message's embedding, then what the rules said of this movie, whether the message says seen,
    the movie's place in the previous answer and that answer's length, titles of other movies named, a question,
    and whether the answer just before this message suggested it (else an earlier one did)."""
    extra = [float(rule == outcome) for outcome in RULE_OUTCOMES]
    extra += [float(seen), min(position, MAX_POSITION) / MAX_POSITION, float(position == 0),
              min(suggested, 5) / 5, float(suggested == 1), min(other_titles, 3) / 3, float(question), float(fresh)]
    return np.concatenate([np.asarray(vector, dtype=np.float64), np.asarray(extra)])


@dataclass(frozen=True)
class ReactionModel:
    """Multinomial logistic regression over `reaction_features`; `thresholds` per label (chosen on held-out folds):
    a movie gets "liked" / "disliked" only when that probability reaches its threshold."""

    weights: np.ndarray
    """(len(LABELS), features)"""
    bias: np.ndarray
    thresholds: dict[str, float]
    keep_rules: bool = True
    """Where the rules read liked or disliked, their reading stands (else the model's decision replaces it)."""

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        logits = rows @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def decide(self, rows: np.ndarray) -> list[str | None]:
        """Per row: "liked", "disliked" or None (the model says nothing; the rules' reading stays)."""
        return decisions(self.probabilities(rows), self.thresholds)

    def read(self, signals: Signals, state: SessionState, vector: np.ndarray, text: str) -> Signals:
        """`signals` with an opinion for each just-suggested movie the message refers to without naming it, where
        the model is sure enough."""
        rows, items = reaction_rows(signals, state, vector, text)
        if not items:
            return signals
        if rows[0].shape[0] != self.weights.shape[1]:
            raise ReactionsError(f"the reaction model reads {self.weights.shape[1] - len(EXTRA_FEATURES)}-dimensional "
                                 f"sentence embeddings, this embedder gives {len(vector)}: retrain it "
                                 "(python -m finetune.reactions) or set CONVREC_REACTIONS=none")
        decided = dict(zip(items, self.decide(np.stack(rows)), strict=True))
        return with_decisions(signals, decided, self.keep_rules)


def decisions(probabilities: np.ndarray, thresholds: dict[str, float]) -> list[str | None]:
    """Per row of (liked, disliked, none) probabilities: the label whose threshold it reaches (the likelier of the
    two when both do), else None."""
    out: list[str | None] = []
    for p in probabilities:
        liked, disliked = p[0] >= thresholds["liked"], p[1] >= thresholds["disliked"]
        out.append("disliked" if disliked and (not liked or p[1] > p[0]) else "liked" if liked else None)
    return out


def with_decisions(signals: Signals, decided: dict[str, str | None], keep_rules: bool = True) -> Signals:
    """The model's opinion replaces the rules' reading of a movie it decided on (only a neutral or no reading when
    `keep_rules`); the rest stays as read."""
    if keep_rules:
        read = dict(signals.opinions)
        decided = {i: o for i, o in decided.items() if read.get(i, "neutral") == "neutral"}
    opinions = [(i, o) for i, o in signals.opinions if decided.get(i) is None]
    opinions += [(i, o) for i, o in decided.items() if o is not None]
    return replace(signals, opinions=tuple(opinions))


def reaction_rows(signals: Signals, state: SessionState, vector: np.ndarray, text: str):
    """(feature rows, item ids) for the just-suggested movies the message does not name by title."""
    suggested = tuple(dict.fromkeys(state.last_recommended))
    if not suggested:
        return [], []
    rules = dict(signals.opinions)
    named = set(signals.named)
    other = len([i for i in named if i not in suggested])
    question = "?" in text
    fresh = bool(state.turns and state.turns[-1].recommended)
    rows, items = [], []
    for position, item_id in enumerate(suggested):
        if item_id in named:
            continue
        rows.append(reaction_features(vector, rules.get(item_id, "absent"), item_id in signals.seen, position,
                                      len(suggested), other, question, fresh))
        items.append(item_id)
    return rows, items


def read_message(text: str, state: SessionState, catalog: Catalog, matcher: TitleMatcher,
                 reactions: ReactionModel | None, embedder: Embedder) -> Signals:
    """What one user message says: the cue rules (agent/understand.py), then, when the previous answer suggested
    movies, the reaction model on those the message does not name. A live turn (`Recommender.read`) and
    `convrec eval`'s replays read messages with this (the committed adapter and ranker learned from replays read
    by the rules alone)."""
    signals = understand(text, state, catalog, matcher)
    if reactions is not None and state.last_recommended:
        signals = reactions.read(signals, state, embedder.embed([text])[0], text)
    return signals


def load_reactions(folder: Path) -> ReactionModel:
    try:
        card = json.loads((Path(folder) / FILE).read_text(encoding="utf-8"))
        model = ReactionModel(np.asarray(card["weights"], dtype=np.float64), np.asarray(card["bias"]),
                              dict(card["thresholds"]), bool(card.get("keep_rules", True)))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ReactionsError(f"{folder}: no readable reaction model ({error}); build one with "
                             f"`python -m finetune.reactions --out {folder}`") from None
    return model
