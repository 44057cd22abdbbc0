"""Explanation faithfulness numbers on crafted true and false explanations (the small fixture catalog)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.grounding import FactChecker
from agent.types import Constraints, SessionState
from eval.faithfulness import ExplanationStats, distinct_n
from retrieval.catalog import load_catalog_file
from retrieval.titles import TitleMatcher

CATALOG = load_catalog_file(Path(__file__).parent / "fixtures" / "small_catalog.jsonl")
MATRIX, INCEPTION, TOY_STORY = "tt0133093", "tt1375666", "tt0114709"


def test_supported_claims_unsupported_explanations_and_citations_are_counted():
    checker = FactChecker(CATALOG, TitleMatcher(CATALOG))
    state = SessionState("s", liked=(MATRIX,))
    stats = ExplanationStats()
    stats.add([
        "Inception is a 2010 film directed by Christopher Nolan.",      # 2 claims, both true
        "Toy Story is a 1995 film directed by James Cameron.",          # 2 claims: year true, director false
        "",                                                             # the model wrote nothing
    ], [CATALOG[INCEPTION], CATALOG[TOY_STORY], CATALOG[MATRIX]], state, checker)
    stats.add(["A breathtaking masterpiece."], [CATALOG[INCEPTION]], state, checker)  # no concrete claim, unlicensed
    summary = stats.summary()
    assert summary["explanations"] == 4 and summary["empty"] == 0.25
    assert summary["supported_claim_rate"] == 0.75          # 3 of 4 concrete claims
    assert summary["with_unsupported"] == pytest.approx(2 / 3, abs=1e-4)  # the wrong director; the unlicensed words
    assert summary["citing_a_fact"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["claims_per_explanation"] == pytest.approx(4 / 3, abs=1e-4)
    assert summary["words"] == pytest.approx((9 + 10 + 3) / 3, abs=1e-4)
    assert any("James Cameron" in example for example in summary["unsupported_examples"])


def test_nothing_checked_gives_no_rates():
    summary = ExplanationStats().summary()
    assert summary["explanations"] == 0 and summary["supported_claim_rate"] is None and summary["distinct_2"] is None


def test_distinct_2_is_one_when_no_word_pair_repeats():
    assert distinct_n(["a b c", "d e f"], 2) == 1.0
    assert distinct_n(["a b c", "a b c"], 2) == 0.5
    assert distinct_n(["a", ""], 2) == 0.0


def test_personal_explanations_and_citations_of_what_was_asked_are_counted():
    """Liked Titanic, asked for a 90s Sci-Fi: "like Titanic" for Inception (both star Leonardo DiCaprio) is personal,
    a Sci-Fi or its year is what was asked, a bare fact that no liked movie shares and nobody asked for is neither."""
    checker = FactChecker(CATALOG, TitleMatcher(CATALOG))
    titanic, alien = "tt0120338", "tt0078748"
    state = SessionState("s", liked=(titanic,), constraints=Constraints(genres=("Sci-Fi",), min_year=1990))
    stats = ExplanationStats()
    stats.add(["Inception stars Leonardo DiCaprio, like Titanic.",   # personal: a liked movie's star
               "The Matrix is a Sci-Fi film.",                        # asked: the genre
               "The Matrix is a 1999 film.",                          # asked: the period
               "Alien is directed by Ridley Scott."],                 # neither
              [CATALOG[INCEPTION], CATALOG[MATRIX], CATALOG[MATRIX], CATALOG[alien]], state, checker)
    summary = stats.summary()
    assert summary["supported_claim_rate"] == 1.0
    assert summary["personalisation_rate"] == 0.75 and summary["personal_possible"] == 4
    assert summary["asked_fact_citation_rate"] == 0.5 and summary["asked_possible"] == 4
    assert summary["facts_per_explanation"] == pytest.approx(5 / 4)  # DiCaprio + like Titanic, Sci-Fi, 1999, Scott
    nothing_asked = ExplanationStats()
    nothing_asked.add(["Alien is directed by Ridley Scott."], [CATALOG[alien]], SessionState("s"), checker)
    assert nothing_asked.summary()["personalisation_rate"] is None  # nothing to be personal about
