"""Prompt lookup's proposals (agent/decoding.py); the decoding itself is checked against transformers' greedy
`generate` in tests/test_engines.py."""

from __future__ import annotations

from agent.decoding import lookup_draft


def test_the_draft_follows_the_latest_earlier_occurrence_of_the_last_tokens():
    #          0  1  2  3  4  5  6  7  8  9
    tokens = [5, 6, 7, 8, 9, 5, 6, 7, 1, 2, 5, 6, 7]
    assert lookup_draft(tokens, size=3) == [1, 2, 5]  # after the 5 6 7 at 5-7, not the one at 0-2


def test_two_tokens_match_when_three_do_not():
    assert lookup_draft([1, 2, 3, 4, 9, 3, 4], size=2) == [9, 3]


def test_no_match_no_draft():
    assert lookup_draft([1, 2, 3, 4]) == []
    assert lookup_draft([7]) == []


def test_the_draft_stops_at_the_end_of_the_tokens():
    assert lookup_draft([1, 2, 3, 1, 2], size=6) == [3, 1, 2]
