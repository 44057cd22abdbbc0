"""Explicit requests are honoured (agent/requests.py): every pick matches a person, genre or period the user asked
for, the catalog is searched beyond the ranked list, and the reply says when and how a request was loosened."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from agent.requests import describe_request, honour_requests
from agent.turn import compose_reply
from agent.types import Constraints, Recommendation, SessionState, Signals, short_reply
from retrieval.candidates import CandidateQuery, HybridRetriever, fulfils_requests
from retrieval.catalog import Catalog, Item

JIM = "Jim Carrey"


def catalog() -> Catalog:
    items = [
        Item("ace", "Ace Ventura", 1994, genres=("Comedy",), cast=(JIM,)),
        Item("mask", "The Mask", 1994, genres=("Comedy", "Fantasy"), cast=(JIM,)),
        Item("liar", "Liar Liar", 1997, genres=("Comedy",), cast=(JIM,)),
        Item("truman", "The Truman Show", 1998, genres=("Drama",), cast=(JIM,)),
        Item("number", "The Number 23", 2007, genres=("Horror", "Thriller"), cast=(JIM,)),
        Item("number-again", "The Number 23", 2007, genres=("Horror", "Thriller"), cast=(JIM,)),
        Item("scream", "Scream", 1996, genres=("Horror",), directors=("Wes Craven",)),
        Item("shining", "The Shining", 1980, genres=("Horror",), directors=("Stanley Kubrick",)),
        Item("heat", "Heat", 1995, genres=("Crime",), cast=("Al Pacino",)),
        Item("fargo", "Fargo", 1996, genres=("Crime", "Comedy")),
        Item("bare", "Bare", description="Bare"),
    ]
    popularity = {"ace": 9, "mask": 8, "liar": 7, "truman": 6, "number": 5, "number-again": 4, "scream": 3,
                  "shining": 2, "heat": 1, "fargo": 1}
    return Catalog(items={i.item_id: i for i in items}, popularity=popularity)


CATALOG = catalog()


def pool(exclude: frozenset[str] = frozenset()):
    retriever = HybridRetriever(CATALOG, None, None)
    return lambda constraints, n: retriever.matching(CandidateQuery(exclude=exclude, constraints=constraints), n)


def honour(ranked, constraints, n=3, exclude=frozenset()):
    return honour_requests(ranked, constraints, CATALOG, n, pool(exclude))


def test_without_a_request_the_ranked_list_is_left_as_it_is():
    ranked = ("heat", "scream", "ace")
    assert honour(ranked, Constraints()) == (ranked, None)
    assert honour(ranked, Constraints(excluded_genres=("Drama",))) == (ranked, None)


def test_items_matching_every_request_come_first_in_the_given_order():
    ranked = ("heat", "liar", "scream", "ace", "fargo", "mask", "truman")
    item_ids, note = honour(ranked, Constraints(genres=("Comedy",), people=(JIM,)))
    assert item_ids == ("liar", "ace", "mask", "truman", "heat", "scream", "fargo")
    assert note is None


def test_the_catalog_is_searched_beyond_the_ranked_list_by_popularity():
    item_ids, note = honour(("heat", "liar", "scream"), Constraints(people=(JIM,)), n=4)
    assert item_ids[:4] == ("liar", "ace", "mask", "truman")
    assert set(item_ids[4:]) == {"heat", "scream"}
    assert note is None


def test_excluded_and_duplicate_items_are_never_brought_in():
    item_ids, _ = honour(("heat", "number"), Constraints(people=(JIM,)), n=4, exclude=frozenset({"ace", "mask"}))
    assert item_ids[:3] == ("number", "liar", "truman")
    assert not {"ace", "mask", "number-again", "bare"} & set(item_ids)


def test_a_period_is_checked_even_though_retrieval_filters_it():
    item_ids, note = honour(("shining", "scream", "heat", "fargo"), Constraints(min_year=1990, max_year=1999), n=2)
    assert item_ids == ("scream", "heat", "fargo", "shining")
    assert note is None


def test_too_few_matches_loosen_the_genre_and_the_reply_says_so():
    item_ids, note = honour(("scream", "heat", "liar"), Constraints(genres=("Horror",), people=(JIM,)))
    assert item_ids[:3] == ("number", "liar", "ace")  # Jim Carrey + Horror, then Jim Carrey by rank, by popularity
    assert item_ids[3:] == ("scream", "heat")
    assert note == ("Only 1 movie I can recommend matches Jim Carrey + Horror, so I loosened the genre (Horror) "
                    "for the rest.")


def test_the_person_is_loosened_after_the_genre_and_the_period_is_kept():
    constraints = Constraints(genres=("Horror",), people=(JIM,), min_year=1995, max_year=1999)
    item_ids, note = honour(("heat", "fargo"), constraints, n=4)
    assert item_ids[:4] == ("liar", "truman", "heat", "fargo")
    assert all(1995 <= CATALOG[i].year <= 1999 for i in item_ids)
    assert note == ("No movie I can recommend matches Jim Carrey + Horror + 1995-1999, so I loosened the genre "
                    "(Horror) and the person (Jim Carrey) for the rest and kept 1995-1999.")


def test_a_period_holding_too_few_movies_is_kept_and_said():
    item_ids, note = honour(("number",), Constraints(min_year=2000), n=3)
    assert item_ids == ("number",)
    assert note == "Only 1 movie I can recommend matches 2000 or later."


def test_a_request_reads_as_people_genres_and_period():
    assert describe_request(Constraints(genres=("Romance", "Comedy"), min_year=2000, max_year=2009)) == (
        "Romance or Comedy + 2000-2009")
    assert describe_request(Constraints(people=(JIM,), max_year=1999)) == "Jim Carrey + 1999 or earlier"
    assert describe_request(Constraints(min_year=1994, max_year=1994)) == "1994"


def test_the_note_is_part_of_the_reply():
    rec = Recommendation("liar", "Liar Liar", 1997, 1, "A comedy.")
    reply = compose_reply(Signals(), [rec], SessionState("s"), CATALOG, note="Only 1 movie matches X.")
    assert reply.splitlines()[:2] == ["Only 1 movie matches X.", "Here are my picks:"]


def test_the_web_chat_reply_says_what_was_understood_not_the_list_again():
    rec = Recommendation("liar", "Liar Liar", 1997, 1, "Liar Liar is a Comedy film, starring Jim Carrey.")
    state = SessionState("s", constraints=Constraints(people=(JIM,), genres=("Comedy",)))
    reply = compose_reply(Signals(), [rec], state, CATALOG)
    assert reply.splitlines()[:2] == ["Looking for: Jim Carrey + Comedy.", "Here are my picks:"]
    assert rec.explanation in reply  # the API's text carries the list
    assert short_reply(reply) == "Looking for: Jim Carrey + Comedy.\nMy picks are on the cards."
    assert short_reply("I have nothing left that fits.") == "I have nothing left that fits."


# --- the real models on the ReDial catalog -----------------------------------------------------------------------

REQUESTS = [
    # (message, what understand() must extract: people, genres, min_year, max_year); each names a person, a genre
    # and/or a period that at least `n` ReDial movies match
    ("any 90s comedy with Jim Carrey?", (JIM,), ("Comedy",), 1990, 1999),
    ("a horror movie from the 80s", (), ("Horror",), 1980, 1989),
    ("something directed by Christopher Nolan", ("Christopher Nolan",), (), None, None),
    ("a western with Clint Eastwood", ("Clint Eastwood",), ("Western",), None, None),
    ("romantic comedies from the 2000s", (), ("Romance", "Comedy"), 2000, 2009),
    ("I'd like a Tom Hanks drama", ("Tom Hanks",), ("Drama",), None, None),
    ("a sci-fi movie from the 70s", (), ("Sci-Fi",), 1970, 1979),
    ("any animated movies from the 2010s?", (), ("Animation",), 2010, 2019),
    ("a Steven Spielberg adventure movie", ("Steven Spielberg",), ("Adventure",), None, None),
    ("a thriller with Denzel Washington", ("Denzel Washington",), ("Thriller",), None, None),
    ("musicals from the 1950s", (), ("Musical",), 1950, 1959),
    ("a crime movie directed by Martin Scorsese", ("Martin Scorsese",), ("Crime",), None, None),
    ("something with Adam Sandler after 2000", ("Adam Sandler",), (), 2000, None),
    ("an action movie with Arnold Schwarzenegger from the 80s", ("Arnold Schwarzenegger",), ("Action",), 1980, 1989),
    ("a war movie from the 1960s", (), ("War",), 1960, 1969),
    ("a mystery directed by Alfred Hitchcock", ("Alfred Hitchcock",), ("Mystery",), None, None),
    ("a comedy from 2015", (), ("Comedy",), 2015, 2015),
    ("a drama made before 1970", (), ("Drama",), None, 1969),
    ("movies from the 80s with Bill Murray", ("Bill Murray",), (), 1980, 1989),
    ("a scary movie with Jamie Lee Curtis", ("Jamie Lee Curtis",), ("Horror",), None, None),
]
LOOSENED = [
    # (message, the person kept, the genre loosened): the catalog holds fewer than n movies that match both
    ("any good sci-fi movies with Harrison Ford?", "Harrison Ford", "Sci-Fi"),
    ("a family movie with Will Ferrell", "Will Ferrell", "Family"),
]


def facts_only(recommender):
    """The real recommender with explanations composed from facts (the ranking still asks the real LLM)."""
    return dataclasses.replace(recommender, settings=dataclasses.replace(recommender.settings,
                                                                         explain_with_llm=False))


@pytest.mark.slow
@pytest.mark.parametrize("message, people, genres, min_year, max_year", REQUESTS,
                         ids=[message for message, *_ in REQUESTS])
def test_every_pick_honours_an_explicit_request(redial_recommender, message, people, genres, min_year, max_year):
    r = facts_only(redial_recommender)
    result = r.run_turn(uuid.uuid4().hex[:10], message)
    asked = result.memory.constraints
    assert (asked.people, asked.genres, asked.min_year, asked.max_year) == (people, genres, min_year, max_year)
    picks = [r.catalog[rec.item_id] for rec in result.recommendations]
    assert len(picks) == r.settings.n
    assert all(fulfils_requests(item, asked) for item in picks), [(i.label, i.genres) for i in picks]
    assert "loosened" not in result.reply


@pytest.mark.slow
@pytest.mark.parametrize("message, person, genre", LOOSENED, ids=[message for message, *_ in LOOSENED])
def test_a_request_too_few_movies_match_is_loosened_and_the_reply_says_how(redial_recommender, message, person,
                                                                           genre):
    r = facts_only(redial_recommender)
    result = r.run_turn(uuid.uuid4().hex[:10], message)
    asked = result.memory.constraints
    assert (asked.people, asked.genres) == ((person,), (genre,))
    picks = [r.catalog[rec.item_id] for rec in result.recommendations]
    assert len(picks) == r.settings.n
    assert all(person in (*i.directors, *i.cast, *i.writers) for i in picks), [i.label for i in picks]
    matching = sum(fulfils_requests(item, asked) for item in picks)
    assert all(fulfils_requests(item, asked) for item in picks[:matching])  # the full matches first
    assert f"{person} + {genre}, so I loosened the genre ({genre}) for the rest." in result.reply
