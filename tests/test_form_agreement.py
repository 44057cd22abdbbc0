"""The two ReDial forms scored against each other (eval/form_agreement.py), on crafted dialogues."""

from __future__ import annotations

from eval.form_agreement import agreement


def form(**liked: int) -> dict:
    return {movie.lstrip("m"): {"suggested": 0, "seen": 1, "liked": value} for movie, value in liked.items()}


def test_the_recommenders_form_is_scored_against_the_seekers_on_catalog_movies():
    records = [
        {"initiatorQuestions": form(m1=1, m2=0, m3=0, m9=0), "respondentQuestions": form(m1=1, m2=0, m3=1, m9=0)},
        {"initiatorQuestions": form(m4=1), "respondentQuestions": []},  # one form only: left out
        {"initiatorQuestions": form(m5=1, m6=2), "respondentQuestions": form(m5=0, m6=1)},
    ]
    result = agreement(records, catalog={"1", "2", "3", "4", "5", "6"})  # 9 is not in the catalog
    assert result["dialogues_with_both_forms"] == 2
    # liked: the seeker liked 1 and 5; the recommender said 1, 3 and 6 -> 1 of 3 right, 1 of 2 found
    assert result["liked"] == {"f1": 0.4, "precision": 0.3333, "recall": 0.5, "actual": 2}
    # disliked: the seeker disliked 2 and 3; the recommender said 2 and 5
    assert result["disliked"] == {"f1": 0.5, "precision": 0.5, "recall": 0.5, "actual": 2}
