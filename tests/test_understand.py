"""Understanding one user message: opinions on titles and on the last recommendations, seen, constraints."""

from __future__ import annotations

import time

import pytest

from agent.types import Constraints, SessionState, Signals, Turn
from agent.understand import understand
from retrieval.catalog import Catalog, Item
from retrieval.titles import TitleMatcher

ITEMS = [
    Item("1", "The Matrix", 1999, ("Action", "Sci-Fi"), ("Lana Wachowski",), ("Keanu Reeves",)),
    Item("2", "Toy Story", 1995, ("Animation", "Comedy", "Family"), ("John Lasseter",), ("Tom Hanks",)),
    Item("3", "It", 2017, ("Horror",), ("Andy Muschietti",), ("Bill Skarsgård",)),
    Item("4", "Up", 2009, ("Animation", "Family"), ("Pete Docter",), ("Ed Asner",)),
    Item("5", "Her", 2013, ("Drama", "Romance", "Sci-Fi"), ("Spike Jonze",), ("Joaquin Phoenix",)),
    Item("6", "Ocean's Eleven", 2001, ("Crime", "Thriller"), ("Steven Soderbergh",), ("George Clooney",)),
    Item("7", "Ocean's Eleven", 1960, ("Crime", "Comedy"), ("Lewis Milestone",), ("Frank Sinatra",)),
    Item("8", "Inception", 2010, ("Action", "Sci-Fi", "Thriller"), ("Christopher Nolan",)),
    Item("9", "Alien", 1979, ("Horror", "Sci-Fi"), ("Ridley Scott",), ("Sigourney Weaver",)),
    Item("10", "Scary Movie", 2000, ("Comedy",), ("Keenen Ivory Wayans",)),
    Item("11", "Love Actually", 2003, ("Comedy", "Romance"), ("Richard Curtis",)),
    Item("12", "Jaws", 1975, ("Thriller",), ("Steven Spielberg",)),
    Item("13", "School of Rock", 2003, ("Comedy", "Music"), ("Richard Linklater",), ("Jack Black",)),
]
CATALOG = Catalog(items={item.item_id: item for item in ITEMS}, popularity={"6": 30, "7": 4})
MATCHER = TitleMatcher(CATALOG)
AFTER_RECS = SessionState("s", last_recommended=("8", "2", "9"))
JUST_SUGGESTED = SessionState("s", last_recommended=("8", "2"), recommended=("8", "2"),
                              turns=(Turn("something smart", "Inception (2010), Toy Story (1995)", ("8", "2")),))
FRESH = SessionState("s")


def signals(text: str, state: SessionState = FRESH) -> Signals:
    return understand(text, state, CATALOG, MATCHER)


def opinions(text: str, state: SessionState = FRESH) -> dict[str, str]:
    return dict(signals(text, state).opinions)


# --- opinions on titles -------------------------------------------------------------------------------------


def test_liked_and_disliked_titles_in_one_message():
    assert opinions("I loved the matrix but hated Inception") == {"1": "liked", "8": "disliked"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I didn't love Inception", "disliked"),
        ("Inception was not bad at all", "liked"),
        ("never really liked Inception", "disliked"),
        ("I'm not a fan of Inception", "disliked"),
        ("I couldn't stand Inception", "disliked"),
        ("anything but Inception", "disliked"),
    ],
)
def test_negation_and_negative_phrases_turn_the_opinion(text, expected):
    assert opinions(text) == {"8": expected}


@pytest.mark.parametrize(
    "text", ["something like Toy Story", "in the mood for Toy Story", "similar to Toy Story", "Toy Story"]
)
def test_seeking_something_like_a_title_counts_as_liking_it(text):
    assert opinions(text) == {"2": "liked"}


@pytest.mark.parametrize(
    "text", ["Have you seen Alien?", "What's Inception about?", "Alien is on my list", "Is Alien any good?"]
)
def test_asking_about_a_title_is_neutral(text):
    assert set(opinions(text).values()) == {"neutral"}


def test_cue_words_inside_titles_say_nothing():
    assert opinions("Have you seen Love Actually?") == {"11": "neutral"}
    assert signals("I loved Scary Movie").constraints.genres == ()


def test_it_refers_to_the_title_named_earlier():
    assert opinions("Have you seen Her? I loved it") == {"5": "liked"}


def test_an_opinion_after_but_applies_to_the_title_before_it():
    assert opinions("I have seen Inception but not a fan") == {"8": "disliked"}


def test_the_version_just_recommended_wins():
    state = SessionState("s", last_recommended=("7",))
    assert opinions("I loved Ocean's Eleven", state) == {"7": "liked"}
    assert opinions("I loved Ocean's Eleven") == {"6": "liked"}


# --- references to the last recommendations -----------------------------------------------------------------


def test_i_hated_that_one_rejects_the_top_recommendation():
    assert opinions("I hated that one", AFTER_RECS) == {"8": "disliked"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("loved the first one", {"8": "liked"}),
        ("the second sounds great", {"2": "liked"}),
        ("#3 looks boring", {"9": "disliked"}),
        ("number 2 please", {"2": "neutral"}),
        ("I hated the last one", {"9": "disliked"}),
        ("loved the first one, not a fan of the last one", {"8": "liked", "9": "disliked"}),
    ],
)
def test_ordinal_references_pick_that_rank(text, expected):
    assert opinions(text, AFTER_RECS) == expected


def test_seen_the_second_one_already_marks_it_seen():
    result = signals("seen the second one already", AFTER_RECS)
    assert result.seen == ("2",)
    assert dict(result.opinions) == {"2": "neutral"}


def test_references_past_the_end_of_the_list_are_ignored():
    assert opinions("I loved the fifth one", AFTER_RECS) == {}


def test_references_need_a_last_list():
    assert opinions("I hated that one") == {}


def test_none_of_those_rejects_the_whole_list():
    assert opinions("none of those", AFTER_RECS) == {"8": "disliked", "2": "disliked", "9": "disliked"}


@pytest.mark.parametrize("text", [
    "I won't watch that. Thank you though, goodbye", "No I haven't and I don't want to.", "nah, not interested",
    "no thanks", "I would not watch that", "that doesn't sound good", "sounds boring", "I'm not into that",
])
def test_a_reply_turning_down_the_suggestion_dislikes_what_was_just_suggested(text):
    # seen in the seekers' forms (eval/memory_errors.py): refusals that name nothing were never remembered
    assert opinions(text, JUST_SUGGESTED) == {"8": "disliked", "2": "disliked"}


@pytest.mark.parametrize("text", ["I don't want to watch horror", "sounds good", "ok"])
def test_a_constraint_or_a_yes_is_not_a_refusal(text):
    assert opinions(text, JUST_SUGGESTED) == {}


def test_a_refusal_needs_a_suggestion_just_made():
    assert opinions("no thanks") == {}
    assert opinions("no thanks", AFTER_RECS) == {}  # no answer recorded: nothing was just suggested


def test_ill_pass_on_that_one():
    assert opinions("I'll pass on that one", JUST_SUGGESTED) == {"8": "disliked"}


def test_both_and_all_of_them():
    assert opinions("I loved both", AFTER_RECS) == {"8": "liked", "2": "liked"}
    assert signals("I've seen all of them", AFTER_RECS).seen == ("8", "2", "9")


def test_it_without_a_title_means_the_top_recommendation():
    assert opinions("I loved it!", AFTER_RECS) == {"8": "liked"}
    assert opinions("what is it?", AFTER_RECS) == {}


def test_a_recommended_title_gets_the_opinion():
    assert opinions("Alien was boring, Toy Story was great", AFTER_RECS) == {"9": "disliked", "2": "liked"}


# --- seen ---------------------------------------------------------------------------------------------------


def test_ive_seen_a_title_marks_it_seen_without_an_opinion():
    result = signals("I've already watched Jaws")
    assert result.seen == ("12",)
    assert dict(result.opinions) == {"12": "neutral"}


def test_seen_with_an_opinion_keeps_both():
    result = signals("I've seen Alien and it was boring")
    assert result.seen == ("9",) and dict(result.opinions) == {"9": "disliked"}


@pytest.mark.parametrize("text", ["I haven't seen Jaws", "have you seen Jaws?", "I want to see Jaws"])
def test_not_seen_and_questions_do_not_mark_seen(text):
    assert signals(text).seen == ()


# --- constraints --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "genres"),
    [
        ("a funny animated movie", ("Comedy", "Animation")),
        ("something scary", ("Horror",)),
        ("any good sci-fi or science fiction?", ("Sci-Fi",)),
        ("a rom-com please", ("Romance", "Comedy")),
        ("thrillers for the kids", ("Thriller", "Family")),
        ("a western", ()),
    ],
)
def test_genres_and_their_synonyms_map_to_catalog_genres(text, genres):
    assert signals(text).constraints.genres == genres


@pytest.mark.parametrize(
    "text",
    [
        "no horror",
        "nothing scary please",
        "I hate horror",
        "anything but horror",
        "horror is not my thing",
        "I don't want anything scary",
        "not in the mood for horror",
    ],
)
def test_negated_genres_are_excluded(text):
    assert signals(text).constraints == Constraints(excluded_genres=("Horror",))


def test_not_a_comedy_excludes_comedy_and_keeps_the_wanted_genre():
    assert signals("a thriller, but not a comedy").constraints == Constraints(
        genres=("Thriller",), excluded_genres=("Comedy",)
    )


def test_nothing_before_1990_sets_min_year():
    assert signals("nothing before 1990 please").constraints == Constraints(min_year=1990)


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("something after 1990", (1990, None)),
        ("since 1990", (1990, None)),
        ("before 2000", (None, 1999)),
        ("older than 2000", (None, 1999)),
        ("nothing after 2005", (None, 2005)),
        ("from the 90s", (1990, 1999)),
        ("90's comedies", (1990, 1999)),
        ("1980s action", (1980, 1989)),
        ("late 80s", (1986, 1989)),
        ("from 1985", (1985, 1985)),
        ("between 1995 and 2005", (1995, 2005)),
        ("2012 or later", (2012, None)),
        ("something recent", (2014, None)),
        ("old movies", (None, 1979)),
        ("a classic", (None, None)),
        ("classics please", (None, 1979)),
        ("my kids are 8 years old", (None, None)),
        ("I saw it in my 20s", (None, None)),
    ],
)
def test_year_phrases_set_inclusive_bounds(text, years):
    constraints = signals(text).constraints
    assert (constraints.min_year, constraints.max_year) == years


def test_years_inside_titles_are_not_constraints():
    catalog = Catalog(items={"1": Item("1", "2001: A Space Odyssey", 1968)})
    result = understand("I loved 2001: A Space Odyssey", FRESH, catalog, TitleMatcher(catalog))
    assert result.constraints == Constraints() and dict(result.opinions) == {"1": "liked"}


def test_people_are_full_catalog_names():
    assert signals("anything with tom hanks or Steven Spielberg's").constraints.people == (
        "Tom Hanks",
        "Steven Spielberg",
    )
    assert signals("something with Tom or Spielberg").constraints.people == ()


def test_a_name_of_common_words_must_be_capitalised():
    assert signals("anything with Jack Black").constraints.people == ("Jack Black",)
    assert signals("a jack black shirt").constraints.people == ()


@pytest.mark.parametrize(
    "text", ["anything is fine", "I have no preference", "forget the filters", "clear my constraints"]
)
def test_clearing_the_constraints(text):
    assert signals(text).clear_constraints


def test_quoted_phrases_that_match_nothing_are_reported():
    result = signals("I liked \"Up\" and 'The Godfather'")
    assert dict(result.opinions) == {"4": "liked"}
    assert result.unmatched_titles == ("The Godfather",)


# --- robustness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   ", "🎬🍿", "\x00\ud800?", "İ" * 500, "I loved it " * 10_000, "the first one. " * 5_000, None],
)
def test_any_input_is_tolerated_quickly(text):
    started = time.perf_counter()
    assert isinstance(understand(text, AFTER_RECS, CATALOG, MATCHER), Signals)
    assert time.perf_counter() - started < 2


def test_understanding_is_deterministic():
    text = "I loved the first one and Her, but no horror from the 80s with Tom Hanks"
    assert signals(text, AFTER_RECS) == signals(text, AFTER_RECS)
