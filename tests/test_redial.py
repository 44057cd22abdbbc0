"""The ReDial reader: conversations, senders, movie forms and `@id` mention markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.redial import (
    Dialogue,
    Message,
    MovieForm,
    RedialFormatError,
    load_redial_dialogues,
    mentioned_ids,
    render_mentions,
)
from tests.conftest import DATA_DIR

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
REAL_DATA = DATA_DIR
needs_real_data = pytest.mark.skipif(not (REAL_DATA / "redial").is_dir(), reason=f"no data at {REAL_DATA}")


@pytest.fixture(scope="module")
def dialogues() -> list[Dialogue]:
    return load_redial_dialogues(FIXTURES / "redial_dialogues.jsonl")


def test_conversations_are_read_in_file_order_and_blank_lines_skipped(dialogues: list[Dialogue]) -> None:
    assert [dialogue.dialogue_id for dialogue in dialogues] == ["7001", "7002", "7003"]


def test_senders_are_told_apart_by_the_initiator_worker_id(dialogues: list[Dialogue]) -> None:
    first = dialogues[0]
    assert [message.sender for message in first.messages] == [
        "seeker",
        "seeker",
        "recommender",
        "seeker",
        "recommender",
    ]
    assert first.messages[2] == Message(
        text="Have you seen @111776 ? Or maybe @204974", sender="recommender", message_id=503
    )


def test_consecutive_messages_from_one_sender_are_not_merged(dialogues: list[Dialogue]) -> None:
    assert [message.text for message in dialogues[0].messages[:2]] == [
        "Hi there! I want a funny movie tonight.",
        "I really liked @91313",
    ]


def test_mentions_map_movie_ids_to_names(dialogues: list[Dialogue]) -> None:
    assert dialogues[0].mentions["91313"] == "Groundhog Day  (1993)"
    assert dialogues[2].mentions == {}  # written as [] in the file


def test_forms_are_the_seekers_own_answers(dialogues: list[Dialogue]) -> None:
    assert dialogues[0].forms["204974"] == MovieForm(suggested=1, seen=1, liked=0)
    assert dialogues[0].forms["91313"] == MovieForm(suggested=0, seen=1, liked=1)


def test_forms_fall_back_to_the_respondents_answers_when_the_seekers_are_empty(
    dialogues: list[Dialogue],
) -> None:
    assert dialogues[1].forms == {"78340": MovieForm(suggested=1, seen=2, liked=2)}
    assert dialogues[2].forms == {}


def test_mentioned_ids_are_returned_in_order_with_repeats() -> None:
    assert mentioned_ids("I saw @204974 and did not like it. @111776 sounds fun! @204974") == [
        "204974",
        "111776",
        "204974",
    ]
    assert mentioned_ids("I AM WAITING ON @DEADPOOL 2, mail me@home") == []


def test_render_mentions_writes_titles_and_leaves_unknown_ids_alone() -> None:
    names = {"91313": "Groundhog Day  (1993)", "204974": " The Hangover  (2009) ", "5": ""}
    text = "Like @91313 or @204974? Not @999 or @5."
    assert render_mentions(text, names) == "Like Groundhog Day (1993) or The Hangover (2009)? Not @999 or @5."


def test_a_malformed_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    good = (FIXTURES / "redial_dialogues.jsonl").read_text(encoding="utf-8").splitlines()[0]
    path = tmp_path / "broken.jsonl"
    path.write_text(good + "\n" + good[:-10] + "\n", encoding="utf-8")
    with pytest.raises(RedialFormatError, match=r"broken\.jsonl, line 2: malformed JSON"):
        load_redial_dialogues(path)


def test_a_line_missing_a_required_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    record = '{"conversationId": "1", "initiatorWorkerId": 1, "movieMentions": {}}'
    path.write_text(record + "\n", encoding="utf-8")
    with pytest.raises(RedialFormatError, match=r"broken\.jsonl, line 1: missing key 'messages'"):
        load_redial_dialogues(path)


def test_a_form_with_a_bad_answer_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    record = (
        '{"conversationId": "1", "initiatorWorkerId": 1, "messages": [], "movieMentions": {},'
        ' "initiatorQuestions": {"5": {"suggested": "maybe", "seen": 1, "liked": 1}}}'
    )
    path.write_text(record + "\n", encoding="utf-8")
    with pytest.raises(RedialFormatError, match=r"line 1: malformed conversation"):
        load_redial_dialogues(path)


def test_a_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    with pytest.raises(RedialFormatError, match=r"nowhere\.jsonl: cannot read"):
        load_redial_dialogues(tmp_path / "nowhere.jsonl")


def test_format_errors_are_value_errors() -> None:
    assert issubclass(RedialFormatError, ValueError)


@needs_real_data
@pytest.mark.parametrize(("name", "count"), [("train_sample/train_data.jsonl", 500), ("test_dev.jsonl", 670)])
def test_real_redial_files_read_completely_and_every_marker_is_a_mention(name: str, count: int) -> None:
    dialogues = load_redial_dialogues(REAL_DATA / "redial" / name)
    assert len(dialogues) == count
    for dialogue in dialogues:
        assert {message.sender for message in dialogue.messages} <= {"seeker", "recommender"}
        for message in dialogue.messages:
            assert set(mentioned_ids(message.text)) <= set(dialogue.mentions)
    assert sum(bool(dialogue.forms) for dialogue in dialogues) >= count - 1
