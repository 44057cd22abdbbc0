"""Candidate generation rules that do not need the models."""

from agent.types import Constraints
from retrieval.candidates import CandidateQuery, HybridRetriever, explainable
from retrieval.catalog import Catalog, Item
from retrieval.collaborative import Cooccurrence


def catalog() -> Catalog:
    items = [Item("a", "Alpha", 1999, genres=("Comedy",)), Item("b", "Beta", 1985, genres=("Horror",)),
             Item("c", "Gamma", 2005, genres=("Comedy", "Horror")), Item("bare", "Bare", description="Bare"),
             Item("dup", "Alpha", 1999, genres=("Comedy",)), Item("d", "Delta", 2010, genres=("Drama",))]
    return Catalog(items={i.item_id: i for i in items}, popularity={"a": 5, "b": 4, "c": 3, "bare": 9, "dup": 1,
                                                                    "d": 2})


def ids(query: CandidateQuery, n: int = 10) -> list[str]:
    return [c.item_id for c in HybridRetriever(catalog(), None, None).candidates(query, n)]


def test_an_item_with_nothing_to_cite_is_never_recommended():
    assert not explainable(Item("x", "X", description="X"))
    assert not explainable(Item("x", "X", countries=("United Kingdom",), description="Country: United Kingdom."))
    assert explainable(Item("x", "X", year=2001)) and explainable(Item("x", "X", description="A heist story."))
    assert "bare" not in ids(CandidateQuery())


def test_cold_start_is_popularity_and_duplicates_are_kept_once():
    assert ids(CandidateQuery()) == ["a", "b", "c", "d"]


def test_excluded_items_genres_and_years_are_hard_filters():
    query = CandidateQuery(exclude=frozenset({"a"}), constraints=Constraints(excluded_genres=("Horror",),
                                                                             min_year=1990, max_year=2008))
    assert ids(query) == ["dup"]


def test_wanted_genres_come_first():
    assert ids(CandidateQuery(constraints=Constraints(genres=("Drama",))))[0] == "d"


def test_cooccurrence_scores_items_mentioned_together():
    scores = Cooccurrence([["a", "b"], ["a", "b"], ["a", "c"]]).scores(["a"])
    assert scores["b"] > scores["c"] > 0
