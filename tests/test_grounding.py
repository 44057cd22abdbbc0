"""The fact checker on crafted true and false explanations, and explanations composed from facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.grounding import (
    Claim,
    FactChecker,
    answers_the_person,
    asked_people,
    compose_explanation,
    could_be_personal,
    names_everyone,
)
from agent.types import Constraints, SessionState
from retrieval.catalog import Catalog, Item, load_catalog_file
from retrieval.titles import TitleMatcher

CATALOG = load_catalog_file(Path(__file__).parent / "fixtures" / "small_catalog.jsonl")
MATRIX, INCEPTION, TOY_STORY, TITANIC = "tt0133093", "tt1375666", "tt0114709", "tt0120338"


@pytest.fixture(scope="module")
def checker() -> FactChecker:
    return FactChecker(CATALOG, TitleMatcher(CATALOG))


def liked(*ids: str) -> SessionState:
    return SessionState("s", liked=ids)


@pytest.mark.parametrize("text", [
    "Inception is a 2010 Sci-Fi thriller directed by Christopher Nolan, starring Leonardo DiCaprio.",
    "Like The Matrix, which you liked, Inception is an action and sci-fi film.",
    "A Christopher Nolan film from 2010 with Tom Hardy.",
    "Directed by Christopher Nolan, starring Leonardo DiCaprio, Elliot Page and Tom Hardy, written by Nolan.",
    "An English-language film from the United States, from the 2010s.",
])
def test_true_explanations_are_grounded(checker, text):
    check = checker.check(text, CATALOG[INCEPTION], liked(MATRIX))
    assert check.grounded, check.unsupported


@pytest.mark.parametrize("text, bad", [
    ("Inception is a 2010 film directed by James Cameron.", Claim("director", "James Cameron")),
    ("Inception, written by Tom Hardy.", Claim("writer", "Tom Hardy")),
    ("Inception, by Christopher Nolan and starring Christopher Nolan.", Claim("starring", "Christopher Nolan")),
    ("Inception is a romantic comedy from 2010.", Claim("genre", "Romance")),
    ("Inception, a 1999 classic by Christopher Nolan.", Claim("year", "1999")),
    ("A Christopher Nolan film from the 90s.", Claim("decade", "90s")),
    ("Like Titanic, which you liked, it stars Leonardo DiCaprio.", Claim("movie", TITANIC)),
    # seen through make cluster: the model compared the pick with itself and said the person liked it
    ("Like Inception (2010), which you liked, which you liked, is a Sci-Fi film.", Claim("movie", INCEPTION)),
    ("Inception, which you loved, is a Sci-Fi film directed by Christopher Nolan.", Claim("movie", INCEPTION)),
    ("Inception has captivated audiences worldwide.", Claim("unverified", "captivated")),
    ("The user enjoyed Inception (2010).", Claim("unverified", "user")),
    ("A French film from 2010.", Claim("unverified", "french")),
])
def test_false_or_unverifiable_claims_are_caught(checker, text, bad):
    check = checker.check(text, CATALOG[INCEPTION], liked(MATRIX))
    assert bad in check.unsupported and not check.grounded


@pytest.mark.parametrize("text", ["You will like this one.", "Movie: Inception.", "Inception (2010)."])
def test_an_explanation_citing_no_fact_is_not_grounded(checker, text):
    check = checker.check(text, CATALOG[INCEPTION], liked())
    assert not check.grounded and not [c for c in check.supported if c.kind != "year"]


def test_a_liked_movie_is_a_fact_only_when_it_shares_something(checker):
    # Toy Story shares nothing with Inception: "like Toy Story" is not supported even though it was liked.
    check = checker.check("Like Toy Story, which you liked.", CATALOG[INCEPTION], liked(TOY_STORY))
    assert Claim("movie", TOY_STORY) in check.unsupported


def test_composed_explanation_names_what_the_item_shares_with_a_liked_movie(checker):
    text, facts = compose_explanation(CATALOG[INCEPTION], liked(MATRIX), CATALOG)
    assert "The Matrix" in text and facts["liked"] == ("The Matrix (1999)",)
    assert set(facts["genre"]) <= set(CATALOG[INCEPTION].genres)
    assert checker.check(text, CATALOG[INCEPTION], liked(MATRIX)).grounded


def test_composed_explanation_uses_the_asked_constraints_then_headline_facts(checker):
    asked = SessionState("s", constraints=Constraints(genres=("Thriller",), min_year=2000))
    text, facts = compose_explanation(CATALOG[INCEPTION], asked, CATALOG)
    assert facts == {"genre": ("Thriller",), "year": ("2010",)}
    text, facts = compose_explanation(CATALOG[TITANIC], SessionState("s"), CATALOG)
    assert "James Cameron" in text and facts["director"] == ("James Cameron",)


def test_a_person_asked_for_leads_the_composed_explanation_even_over_a_liked_movie(checker):
    state = SessionState("s", liked=(MATRIX,), constraints=Constraints(people=("Tom Hardy",), genres=("Thriller",)))
    text, facts = compose_explanation(CATALOG[INCEPTION], state, CATALOG)
    assert "Tom Hardy" in text and facts == {"genre": ("Thriller",), "starring": ("Tom Hardy",)}
    assert checker.check(text, CATALOG[INCEPTION], state).grounded
    assert asked_people(CATALOG[INCEPTION], state) == ("Tom Hardy",)
    assert asked_people(CATALOG[TITANIC], state) == ()  # he is not in Titanic: nothing to name
    assert names_everyone("Inception stars TOM HARDY.", ("Tom Hardy",))
    assert not names_everyone("Inception stars Hardy.", ("Tom Hardy",))


def test_a_true_sentence_is_shown_only_when_it_answers_this_person(checker):
    """True is not enough: the model's sentence must cite what was asked for when the pick has it, and tie the pick
    to a liked movie when it shares facts with one; a pick with nothing personal keeps any true sentence."""
    inception = CATALOG[INCEPTION]

    def shown(text: str, state: SessionState) -> bool:
        check = checker.check(text, inception, state)
        return check.grounded and answers_the_person(text, check, inception, state, CATALOG)

    plain = "Inception (2010) is directed by Christopher Nolan."
    fan = liked(MATRIX)  # Inception shares Action and Sci-Fi with The Matrix
    assert could_be_personal(inception, fan, CATALOG)
    assert not shown(plain, fan)
    assert shown("Like The Matrix, which you liked, Inception is a Sci-Fi film.", fan)
    thriller = SessionState("s", constraints=Constraints(genres=("Thriller",)))
    assert not shown(plain, thriller)
    assert shown("Inception is a Thriller directed by Christopher Nolan.", thriller)
    stranger = liked(TOY_STORY)  # shares nothing with Inception, asked for nothing
    assert not could_be_personal(inception, stranger, CATALOG)
    assert shown(plain, stranger)
    for state in (fan, thriller):  # what is composed instead always answers the person
        text, _ = compose_explanation(inception, state, CATALOG)
        assert shown(text, state), text


@pytest.mark.parametrize("item_id", [i.item_id for i in CATALOG])
def test_every_composed_explanation_passes_the_checker(checker, item_id):
    for state in (liked(), liked(MATRIX), liked(TOY_STORY, INCEPTION)):
        text, _ = compose_explanation(CATALOG[item_id], state, CATALOG)
        assert checker.check(text, CATALOG[item_id], state).grounded, text


def test_the_items_own_title_without_a_year_is_the_item_even_when_a_namesake_exists():
    remake = Item("g16", "Ghostbusters", 2016, genres=("Comedy",))
    original = Item("g84", "Ghostbusters", 1984, genres=("Comedy",))
    catalog = Catalog({i.item_id: i for i in (remake, original)})
    checker = FactChecker(catalog, TitleMatcher(catalog))
    state = SessionState("s")
    assert checker.check("Ghostbusters is a Comedy film from 2016.", remake, state).grounded
    assert checker.check("Ghostbusters (2016) is a Comedy film.", remake, state).grounded
    wrong = checker.check("Ghostbusters (1984) is a Comedy film.", remake, state)
    assert Claim("movie_named", "g84") in wrong.unsupported
    fan = SessionState("s", liked=("g84",))  # the original's year is its own, not a wrong year of the remake
    text, _ = compose_explanation(remake, fan, catalog)
    assert text.startswith("Like Ghostbusters (1984), which you liked") and checker.check(text, remake, fan).grounded
    assert Claim("movie_named", "g84") in checker.check("Ghostbusters (1984) is a Comedy film.", remake,
                                                        fan).unsupported  # the original, not a comparison


@pytest.mark.parametrize("text", [
    "The Matrix (1999) is an Action and Sci-Fi film directed by Christopher Nolan.",  # another title as the subject
    "The Matrix (2010) is a Sci-Fi film.",
])
def test_another_title_named_without_a_comparison_is_unsupported(checker, text):
    """Seen with the base model: a liked title used as if it were the item. Only "like <title>" compares."""
    check = checker.check(text, CATALOG[INCEPTION], liked(MATRIX))
    assert not check.grounded and Claim("movie_named", MATRIX) in check.unsupported


@pytest.mark.parametrize("text, bad", [
    ("Inceptoin (2010) is a Sci-Fi film directed by Christopher Nolan.", Claim("misspelt_title", "Inceptoin (2010)")),
    ("Like The Matrx, which you liked, Inception is a Sci-Fi film.", Claim("misspelt_title", "The Matrx")),
    ("Inception (2010) is a Sci-Fi film directed by James Cameron.", Claim("director", "James Cameron")),
    ("Inception is a Sci-Fi film starring Kate Winslet.", Claim("starring", "Kate Winslet")),
])
def test_a_wrong_title_or_another_movies_credit_is_rejected(checker, text, bad):
    """A title written with letters changed (the matcher still reads it as that movie) is a wrong title, not the
    item's; a person credited on another movie is not credited on this one."""
    check = checker.check(text, CATALOG[INCEPTION], liked(MATRIX))
    assert bad in check.unsupported and not check.grounded


@pytest.mark.parametrize("text", ["Inception (1999) is a Sci-Fi film directed by Christopher Nolan.",
                                  "Inception, from 1999, is a Sci-Fi film by Christopher Nolan."])
def test_a_wrong_year_is_rejected(checker, text):
    check = checker.check(text, CATALOG[INCEPTION], liked(MATRIX))
    assert not check.grounded, check


def test_a_year_in_the_title_is_not_a_wrong_year():
    odyssey = Item("m2001", "2001: A Space Odyssey", 1968, genres=("Sci-Fi",), directors=("Stanley Kubrick",))
    catalog = Catalog({odyssey.item_id: odyssey})
    check = FactChecker(catalog, TitleMatcher(catalog)).check(
        "2001: A Space Odyssey (1968) is a Sci-Fi film directed by Stanley Kubrick.", odyssey, liked())
    assert check.grounded, check.unsupported
