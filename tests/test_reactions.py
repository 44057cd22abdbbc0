"""The reaction model (agent/reactions.py): which movies it reads, how its decisions join the rules' opinions, its
file; and the committed model on replies the cue rules miss."""

import json

import numpy as np
import pytest

from agent.reactions import (
    EXTRA_FEATURES,
    FILE,
    LABELS,
    ReactionsError,
    decisions,
    load_reactions,
    reaction_features,
    reaction_rows,
    read_message,
    with_decisions,
)
from agent.types import SessionState, Signals, Turn
from retrieval.titles import TitleMatcher

VECTOR = np.zeros(4)
SUGGESTED = SessionState("s", last_recommended=("10", "20"), turns=(Turn("hi", "picks", ("10", "20")),))


def test_rows_cover_the_suggested_movies_the_message_does_not_name():
    signals = Signals(opinions=(("20", "liked"), ("10", "neutral")), named=("20",))
    rows, items = reaction_rows(signals, SUGGESTED, VECTOR, "I loved Heat, is the other one good?")
    assert items == ["10"] and len(rows) == 1
    expected = reaction_features(VECTOR, "neutral", False, 0, 2, 0, True, True)
    assert np.array_equal(rows[0], expected) and len(expected) == len(VECTOR) + len(EXTRA_FEATURES)


def test_no_suggestion_no_rows():
    assert reaction_rows(Signals(), SessionState("s"), VECTOR, "sounds good") == ([], [])


def test_a_decision_replaces_the_rules_reading_and_no_decision_keeps_it():
    signals = Signals(opinions=(("10", "neutral"), ("30", "liked")), seen=("10",))
    decided = with_decisions(signals, {"10": "liked", "20": None})
    assert set(decided.opinions) == {("10", "liked"), ("30", "liked")} and decided.seen == ("10",)
    assert with_decisions(signals, {"10": None}).opinions == signals.opinions


def test_thresholds_decide_liked_disliked_or_nothing():
    probabilities = np.array([[0.6, 0.1, 0.3], [0.3, 0.45, 0.25], [0.45, 0.35, 0.2], [0.5, 0.5, 0.0]])
    assert decisions(probabilities, {"liked": 0.5, "disliked": 0.4}) == ["liked", "disliked", None, "liked"]


def test_a_missing_or_broken_model_file_says_how_to_rebuild_it(tmp_path):
    with pytest.raises(ReactionsError, match="python -m finetune.reactions"):
        load_reactions(tmp_path)
    (tmp_path / FILE).write_text('{"weights": [[1.0]]')
    with pytest.raises(ReactionsError, match="no readable reaction model"):
        load_reactions(tmp_path)
    width = 3 + len(EXTRA_FEATURES)  # a model of 3-dimensional embeddings
    (tmp_path / FILE).write_text(json.dumps({"weights": [[0.0] * width] * 3, "bias": [0, 0, 0],
                                             "thresholds": {"liked": 0.5, "disliked": 0.5}}))
    model = load_reactions(tmp_path)
    assert model.weights.shape == (len(LABELS), width)
    with pytest.raises(ReactionsError, match="reads 3-dimensional .* gives 4"):  # another embedder's vectors
        model.read(Signals(), SUGGESTED, np.zeros(4), "sounds good")


@pytest.mark.slow
def test_the_committed_model_remembers_an_accepted_suggestion_the_rules_miss():
    """"sounds good, I'll check it out" after a suggestion: the rules leave Clue unread, the committed reaction
    model (with the real MiniLM embedder) files it as liked, as the seeker's form says."""
    from agent.build import load_embedder, load_reactions_of
    from agent.config import Settings
    from eval.memory_errors import error_classes, report
    from tests.test_memory_errors import CATALOG, accepted_suggestion

    settings = Settings.from_env()
    reactions, embedder = load_reactions_of(settings), load_embedder(settings)
    assert reactions is not None, "finetune/reactions/reactions.json is committed"
    matcher = TitleMatcher(CATALOG)

    def read(text, state):
        return read_message(text, state, CATALOG, matcher, reactions, embedder)

    rules = report(error_classes([accepted_suggestion()], CATALOG, matcher))["liked"]
    learned = report(error_classes([accepted_suggestion()], CATALOG, matcher, read))["liked"]
    assert (rules["held_right"], learned["held_right"], learned["movies"]) == (1, 2, 2)
