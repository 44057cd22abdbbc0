"""The whole-dialogue rows of the disliked-F1 ceiling study (eval/dislike_ceiling.py), on a crafted dialogue."""

from __future__ import annotations

import numpy as np

from agent.types import SessionState
from eval.dislike_ceiling import STATES, best_threshold, f1_row, movie_rows
from retrieval.redial import Dialogue, Message, MovieForm

SAID = {  # seeker messages (as rendered) -> a made-up 2-d "embedding"
    "hi, something funny?": np.array([1.0, 0.0]),
    "no thanks": np.array([0.0, 1.0]),
    "Toy Story (1995) maybe, thanks": np.array([0.5, 0.5]),
}
DIALOGUE = Dialogue(
    "d1",
    messages=(
        Message("hi, something funny?", "seeker", 1),
        Message("Try @1 or @2", "recommender", 2),
        Message("no thanks", "seeker", 3),
        Message("Then @3?", "recommender", 4),
        Message("@3 maybe, thanks", "seeker", 5),
    ),
    mentions={"1": "Scary Movie (2000)", "2": "Alien (1979)", "3": "Toy Story (1995)", "9": "Lost (2001)"},
    forms={"1": MovieForm(1, 0, 0), "2": MovieForm(1, 0, 2), "3": MovieForm(1, 0, 1), "9": MovieForm(1, 0, 0)},
)
NOTHING = np.zeros(2)


def parts(row):
    """(reply, naming, last message, the named extra features) of a row."""
    f = row.features
    extra = dict(zip((*(f"memory {s}" for s in STATES), "seeker first", "seeker namings", "recommender namings",
                      "suggested", "last suggestion", "after", "has reply", "seen"), f[6:], strict=True))
    return f[0:2], f[2:4], f[4:6], extra


def test_each_form_movie_gets_the_seekers_words_about_it_from_the_whole_dialogue():
    state = SessionState("d1", disliked=("1",), liked=("3",))
    rows = {r.item_id: r for r in movie_rows(DIALOGUE, state, SAID, catalog={"1", "2", "3"})}
    assert set(rows) == {"1", "2", "3"}  # 9 is not in the catalog
    assert {i: r.label for i, r in rows.items()} == {"1": 1, "2": 2, "3": 0}  # disliked, not said, liked

    reply, naming, last, extra = parts(rows["1"])
    assert np.array_equal(reply, SAID["no thanks"])  # the answer to its suggestion
    assert np.array_equal(naming, NOTHING) and np.array_equal(last, NOTHING)  # never named; not the last one
    assert extra["memory disliked"] == 1 and extra["suggested"] == 1 and extra["last suggestion"] == 0
    assert extra["after"] == 2 / 5  # 2 and 3 were suggested after it

    reply, naming, last, extra = parts(rows["3"])
    assert np.array_equal(reply, NOTHING)  # the answer names it: that is its naming, not a bare reply
    assert np.array_equal(naming, SAID["Toy Story (1995) maybe, thanks"])
    assert np.array_equal(last, SAID["Toy Story (1995) maybe, thanks"])  # the last suggestion sees the last message
    assert extra["memory liked"] == 1 and extra["last suggestion"] == 1 and extra["seeker namings"] == 1 / 3


def test_f1_and_the_optimistic_threshold():
    actual = np.array([True, True, False, False])
    assert f1_row(np.array([True, False, True, False]), actual) == {
        "f1": 0.5, "precision": 0.5, "recall": 0.5, "predicted": 2, "actual": 2}
    best = best_threshold(np.array([0.9, 0.6, 0.4, 0.1]), actual)
    assert best["f1"] == 1.0 and 0.4 < best["threshold"] <= 0.6
