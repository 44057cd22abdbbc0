"""Reader for the official ReDial format: one conversation per line (Li et al., NeurIPS 2018, CC BY 4.0).

A line holds `conversationId`, `initiatorWorkerId` (the seeker), `respondentWorkerId` (the recommender),
`messages[{messageId, text, senderWorkerId, timeOffset}]`, `movieMentions{movieId: "Title (Year)"}` and the
two movie forms `initiatorQuestions` / `respondentQuestions{movieId: {suggested, seen, liked}}`. In message
text, `@<movieId>` marks a movie mention.

Messages are kept exactly as sent: consecutive messages from the same sender are not merged here, because
turn building is a decision for the callers (training data, benchmark) and they make it differently.

Errors: RedialFormatError (a ValueError) names the file and the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRAINING_FILES = ("redial/train_sample/train_data.jsonl", "redial/train_extra/train_data.jsonl")
"""Every learned signal (popularity, the collaborative model, fine-tuning examples, the ranker) learns from these
3,358 training conversations (500 + 2,858; relative to the data dir). train_extra/ is read when present."""
VALIDATION_FILE = "redial/train_sample/valid_data.jsonl"
"""100 conversations for selection and early stopping only."""
DEV_FILE = "redial/test_dev.jsonl"
"""670 conversations of the official test split: reported on, never used to choose anything."""

SEEKER = "seeker"
RECOMMENDER = "recommender"
MENTION = re.compile(r"@(\d+)")


class RedialFormatError(ValueError):
    """A ReDial file is missing, unreadable or has a malformed line."""


@dataclass(frozen=True)
class Message:
    """One message as sent; `sender` is "seeker" or "recommender"."""

    text: str
    sender: str
    message_id: int


@dataclass(frozen=True)
class MovieForm:
    """The seeker's answers about one mentioned movie: 0 = no, 1 = yes, 2 = did not say."""

    suggested: int
    seen: int
    liked: int


@dataclass(frozen=True)
class Dialogue:
    """One conversation; `forms` is the seeker's form (respondentQuestions if initiatorQuestions is empty)."""

    dialogue_id: str
    messages: tuple[Message, ...]
    mentions: dict[str, str]
    forms: dict[str, MovieForm]


def load_redial_dialogues(path: Path) -> list[Dialogue]:
    """All conversations of a ReDial JSONL file, in file order; blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RedialFormatError(f"{path}: cannot read ReDial file ({error})") from error
    dialogues = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            dialogues.append(_parse_line(line, f"{path}, line {line_number}"))
    return dialogues


def training_paths(data_dir: Path) -> list[Path]:
    """The training files present under `data_dir` (train_sample/ is required, train_extra/ read when there)."""
    paths = [Path(data_dir) / name for name in TRAINING_FILES]
    return [path for k, path in enumerate(paths) if k == 0 or path.exists()]


def load_training_dialogues(data_dir: Path) -> list[Dialogue]:
    """Every training conversation, in file order (TRAINING_FILES)."""
    return [dialogue for path in training_paths(data_dir) for dialogue in load_redial_dialogues(path)]


def dialogue_items(dialogue: Dialogue) -> list[str]:
    """The movie ids a conversation mentions: its mention list and every `@id` in its messages."""
    return list(dict.fromkeys([*dialogue.mentions, *(i for m in dialogue.messages for i in mentioned_ids(m.text))]))


def mentioned_ids(text: str) -> list[str]:
    """The movie ids of the `@123456` markers in a message, in order (repeats kept)."""
    return MENTION.findall(text)


def render_mentions(text: str, names: Mapping[str, str]) -> str:
    """Replace each `@id` by the movie's name (whitespace normalised); unknown ids stay as written."""

    def name_of(match: re.Match[str]) -> str:
        name = names.get(match.group(1))
        return " ".join(name.split()) if name and name.strip() else match.group(0)

    return MENTION.sub(name_of, text)


def _parse_line(line: str, where: str) -> Dialogue:
    """One conversation; any structural problem becomes a RedialFormatError naming `where`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise RedialFormatError(f"{where}: malformed JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise RedialFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    try:
        seeker = record["initiatorWorkerId"]
        own_form = _parse_forms(record.get("initiatorQuestions"))
        forms = own_form or _parse_forms(record.get("respondentQuestions"))
        return Dialogue(
            dialogue_id=str(record["conversationId"]),
            messages=tuple(_parse_message(message, seeker) for message in record["messages"]),
            mentions=_parse_mentions(record.get("movieMentions")),
            forms=forms,
        )
    except KeyError as error:
        raise RedialFormatError(f"{where}: missing key {error}") from error
    except (TypeError, ValueError, AttributeError) as error:
        raise RedialFormatError(f"{where}: malformed conversation ({error})") from error


def _parse_message(message: dict, seeker: object) -> Message:
    """The sender is the seeker when the worker id is the conversation's initiator, else the recommender."""
    sender = SEEKER if message["senderWorkerId"] == seeker else RECOMMENDER
    return Message(text=str(message["text"]), sender=sender, message_id=int(message["messageId"]))


def _parse_mentions(mentions: object) -> dict[str, str]:
    """movieId -> name; the official files write an empty mapping as `[]` and may hold null names."""
    if not mentions:
        return {}
    if not isinstance(mentions, dict):
        raise TypeError(f"movieMentions must be an object, got {type(mentions).__name__}")
    return {str(movie_id): str(name or "") for movie_id, name in mentions.items()}


def _parse_forms(forms: object) -> dict[str, MovieForm]:
    """movieId -> MovieForm; an empty form is written as `[]` in the official files."""
    if not forms:
        return {}
    if not isinstance(forms, dict):
        raise TypeError(f"movie form must be an object, got {type(forms).__name__}")
    return {
        str(movie_id): MovieForm(
            suggested=int(answers["suggested"]), seen=int(answers["seen"]), liked=int(answers["liked"])
        )
        for movie_id, answers in forms.items()
    }
