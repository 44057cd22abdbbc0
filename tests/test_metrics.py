"""Ranking metrics against hand-computed examples."""

import math

import pytest

from eval.metrics import MRR, NDCG, Recall, coverage, intra_list_diversity, mean, novelty, remove_seen

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
