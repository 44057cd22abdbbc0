"""The ReDial benchmark protocol on real dev dialogues (and a crafted one)."""

from __future__ import annotations

import pytest

from eval.redial_bench import ALL_SYSTEMS, format_markdown, replay, run_benchmark, utterances
from retrieval.redial import Dialogue, Message, MovieForm, load_redial_dialogues
from tests.conftest import DATA_DIR, needs_data


def crafted() -> Dialogue:
    messages = (Message("Hi, I loved @1 and @2", "seeker", 1), Message("any ideas?", "seeker", 2),
                Message("Try @3", "recommender", 3), Message("or @1 again", "recommender", 4),
                Message("seen @3, hated it", "seeker", 5), Message("Then @4", "recommender", 6))
    forms = {"1": MovieForm(0, 1, 1), "2": MovieForm(0, 1, 1), "3": MovieForm(1, 1, 0), "4": MovieForm(1, 0, 2)}
    return Dialogue("d1", messages, {"1": "A", "2": "B", "3": "C", "4": "D"}, forms)


def test_consecutive_messages_of_one_sender_form_one_utterance():
    assert [(s, ids) for s, _, ids in utterances(crafted())] == [
        ("seeker", ["1", "2"]), ("recommender", ["3", "1"]), ("seeker", ["3"]), ("recommender", ["4"])]


@pytest.mark.slow
@needs_data
def test_replay_scores_suggested_movies_with_the_memory_so_far(redial_recommender):
    dialogue = load_redial_dialogues(DATA_DIR / "redial" / "test_dev.jsonl")[0]
    turns, final = replay(dialogue, redial_recommender)
    assert turns and all(t.relevant for t in turns)
    assert all(i in redial_recommender.catalog for t in turns for i in t.relevant)
    assert turns[-1].seen >= turns[0].seen and final.turn_count >= len(turns)


@pytest.mark.slow
@needs_data
def test_a_small_benchmark_runs_every_retrieval_system(redial_recommender):
    dialogues = load_redial_dialogues(DATA_DIR / "redial" / "test_dev.jsonl")[:5]
    systems = tuple(s for s in ALL_SYSTEMS if s != "llm")
    results = run_benchmark(redial_recommender, dialogues, systems)
    for result in results["systems"].values():
        assert result["out_of_catalog"] == 0 and result["repeats"] == 0
        for setting in ("raw", "seen_removed"):
            assert all(v["mean"] is None or 0.0 <= v["mean"] <= 1.0 for v in result[setting].values())
    assert "GPT-4 zero-shot" in format_markdown(results)


def test_memory_accuracy_on_a_crafted_dialogue():
    from agent.types import SessionState
    from eval.redial_bench import memory_accuracy
    from retrieval.catalog import Catalog, Item

    catalog = Catalog(items={i: Item(i, i, 2000) for i in "1234"})
    # truth: liked {1, 2}, disliked {3}; the memory got 1 right, 4 wrong (form says "did not say"), 3 right
    state = SessionState("s", liked=("1", "4"), disliked=("3",))
    scores = memory_accuracy([(state, crafted())], catalog)
    assert scores["liked"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "predicted": 2, "actual": 2}
    assert scores["disliked"]["precision"] == 1.0 and scores["disliked"]["recall"] == 1.0
