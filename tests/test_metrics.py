"""Ranking metrics against hand-computed examples."""

import math

import pytest

from eval.metrics import (
    MRR,
    NDCG,
    Recall,
    bootstrap_interval,
    coverage,
    intra_list_diversity,
    mean,
    novelty,
    paired_difference,
    remove_seen,
)

RANKED = ["a", "b", "c", "d", "e"]


def test_labels_read_like_the_literature():
    assert [m.label for m in (Recall(10), NDCG(10), MRR())] == ["Recall@10", "NDCG@10", "MRR"]


def test_recall_counts_the_share_of_relevant_items_in_the_top_n():
    assert Recall(1)(RANKED, {"a"}) == 1.0
    assert Recall(1)(RANKED, {"b"}) == 0.0
    assert Recall(3)(RANKED, {"b", "e"}) == 0.5
    assert Recall(5)(RANKED, {"b", "e"}) == 1.0
    assert Recall(5)(RANKED, {"z"}) == 0.0


def test_ndcg_with_binary_gains():
    # hit at rank 2 of 1 relevant: (1/log2(3)) / (1/log2(2))
    assert NDCG(10)(RANKED, {"b"}) == pytest.approx(1 / math.log2(3))
    # hits at ranks 1 and 3 of 2 relevant: (1 + 1/log2(4)) / (1 + 1/log2(3))
    assert NDCG(10)(RANKED, {"a", "c"}) == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert NDCG(2)(RANKED, {"c"}) == 0.0


def test_mrr_is_the_inverse_rank_of_the_first_hit():
    assert MRR()(RANKED, {"c", "e"}) == pytest.approx(1 / 3)
    assert MRR()(RANKED, {"z"}) == 0.0


@pytest.mark.parametrize("metric", [Recall(10), NDCG(10), MRR()])
def test_empty_ground_truth_is_not_scored(metric):
    assert metric(RANKED, set()) is None


def test_mean_skips_unscored_turns_and_counts_the_rest():
    assert mean([1.0, None, 0.0]) == (0.5, 2)
    assert mean([None]) == (None, 0)


def test_seen_items_leave_the_list_and_the_ground_truth():
    ranked, relevant = remove_seen(RANKED, {"a", "d"}, seen={"a"})
    assert ranked == ["b", "c", "d", "e"] and relevant == {"d"}
    assert Recall(1)(ranked, relevant) == 0.0 and MRR()(ranked, relevant) == pytest.approx(1 / 3)


def test_coverage_is_the_share_of_the_catalog_shown_in_any_list():
    assert coverage([["a", "b"], ["b", "c"]], catalog_size=10) == pytest.approx(0.3)
    assert coverage([], catalog_size=10) == 0.0


def test_intra_list_diversity_is_the_mean_pairwise_cosine_distance():
    vectors = {"x": [1.0, 0.0], "y": [0.0, 2.0], "x2": [3.0, 0.0]}
    assert intra_list_diversity(["x", "y"], vectors) == pytest.approx(1.0)  # orthogonal
    assert intra_list_diversity(["x", "x2"], vectors) == pytest.approx(0.0)  # same direction
    assert intra_list_diversity(["x", "y", "x2"], vectors) == pytest.approx(2 / 3)  # pairs: 1, 0, 1
    assert intra_list_diversity(["x", "unknown"], vectors) is None  # fewer than two vectors


def test_novelty_is_the_mean_self_information_with_add_one_smoothing():
    popularity = {"hit": 6.0, "rare": 0.0}  # total 6 mentions, catalog of 2: p(hit) = 7/8, p(rare) = 1/8
    assert novelty(["rare"], popularity, catalog_size=2) == pytest.approx(3.0)
    assert novelty(["hit", "rare"], popularity, catalog_size=2) == pytest.approx((-math.log2(7 / 8) + 3.0) / 2)
    assert novelty([], popularity, catalog_size=2) is None


def test_equal_dialogues_give_a_zero_width_interval_at_the_mean():
    low, high = bootstrap_interval([[0.25, 0.75]] * 10)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_the_interval_is_of_the_turn_weighted_mean_resampling_dialogues():
    # Two dialogues, 3 turns scoring 0 and 1 turn scoring 1. A resample draws {A, A}, {A, B} or {B, B} with
    # probabilities 1/4, 1/2, 1/4; turn-weighted means 0, 1/4 and 1 (the mean of dialogue means would say 1/2).
    assert bootstrap_interval([[0.0, 0.0, 0.0], [1.0]]) == (0.0, 1.0)
    assert bootstrap_interval([[0.0, 0.0, 0.0], [1.0]], level=0.1) == (0.25, 0.25)


def test_the_interval_holds_the_mean_skips_unscored_turns_and_is_reproducible():
    groups = [[1.0, 0.0], [0.0], [1.0, 1.0, 1.0], [0.0, None], [0.5], [0.0, 1.0], [1.0], [0.0, 0.0]]
    mean_value, _ = mean(v for group in groups for v in group)
    low, high = bootstrap_interval(groups, seed=3)
    assert 0.0 <= low < mean_value < high <= 1.0
    assert bootstrap_interval(groups, seed=3) == (low, high)
    assert bootstrap_interval(groups, seed=4) != (low, high)
    assert bootstrap_interval([*groups, [None]], seed=3) == (low, high)  # a dialogue with nothing scored takes no part
    assert bootstrap_interval([[None], []]) is None
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(groups, level=95)


def test_identical_systems_differ_by_zero_and_not_significantly():
    groups = [[1.0, 0.0], [0.5, None], [0.0]]
    assert paired_difference(groups, groups) == {"difference": 0.0, "interval": (0.0, 0.0), "a_better": 0,
                                                 "b_better": 0, "turns": 4, "significant": False}


def test_a_system_better_on_every_dialogue_has_an_interval_above_zero():
    a = [[1.0, 0.5], [0.5], [0.0, 1.0, 1.0], [1.0, None]]
    b = [[0.0, 0.5], [0.2], [0.0, 0.0, 1.0], [0.0, 1.0]]
    result = paired_difference(a, b)
    # differences 1, 0 | 0.3 | 0, 1, 0 | 1 (the turn a does not score is left out): 3.3 / 7
    assert result["difference"] == pytest.approx(3.3 / 7)
    assert result["turns"] == 7 and result["a_better"] == 4 and result["b_better"] == 0
    low, high = result["interval"]
    assert 0 < low < result["difference"] < high and result["significant"]
    reverse = paired_difference(b, a)
    assert reverse["difference"] == pytest.approx(-3.3 / 7) and reverse["interval"] == pytest.approx((-high, -low))
    assert reverse["significant"] and reverse["b_better"] == 4


def test_paired_systems_must_score_the_same_turns():
    with pytest.raises(ValueError):
        paired_difference([[1.0], [0.0]], [[1.0]])
    with pytest.raises(ValueError):
        paired_difference([[1.0, 0.0]], [[1.0]])


def test_a_thousand_resamples_of_670_dialogues_take_well_under_a_second():
    import random
    import time

    rng = random.Random(0)
    groups = [[rng.choice((0.0, 0.5, 1.0, None)) for _ in range(rng.randint(1, 5))] for _ in range(670)]
    other = [[None if v is None else 1.0 - v for v in group] for group in groups]
    started = time.perf_counter()
    for _ in range(10):
        bootstrap_interval(groups)
        paired_difference(groups, other)
    assert time.perf_counter() - started < 5  # 20 of the ~100 computations of a 6-system run
