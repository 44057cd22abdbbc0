"""The memory's error classes (eval/memory_errors.py) on a crafted dialogue."""

from __future__ import annotations

from eval.memory_errors import error_classes, report
from retrieval.catalog import Catalog, Item
from retrieval.redial import Dialogue, Message, MovieForm
from retrieval.titles import TitleMatcher

CATALOG = Catalog(items={i.item_id: i for i in (Item("1", "Alien", 1979), Item("2", "Heat", 1995),
                                                 Item("3", "Clue", 1985))})


def accepted_suggestion() -> Dialogue:
    """The seeker names a liked and a disliked movie, then accepts a suggestion without writing its title."""
    messages = (Message("I loved @1 but I hated @2", "seeker", 1), Message("Try @3", "recommender", 2),
                Message("sounds good, I'll check it out", "seeker", 3))
    forms = {"1": MovieForm(0, 1, 1), "2": MovieForm(0, 1, 0), "3": MovieForm(1, 0, 1)}
    return Dialogue("d1", messages, {"1": "Alien (1979)", "2": "Heat (1995)", "3": "Clue (1985)"}, forms)


def test_an_accepted_suggestion_the_seeker_never_named_is_a_miss_of_its_class():
    result = report(error_classes([accepted_suggestion()], CATALOG, TitleMatcher(CATALOG)))  # the rules alone
    assert result["disliked"] == {"movies": 1, "held_right": 1, "recall": 1.0, "misses": []}
    liked = result["liked"]
    assert (liked["movies"], liked["held_right"]) == (2, 1)
    (miss,) = liked["misses"]
    assert miss["memory"] in ("absent", "neutral") and miss["count"] == 1
    assert (miss["suggested"], miss["seen"], miss["named"]) == ("suggested", "not seen",
                                                                "only the recommender named it")
