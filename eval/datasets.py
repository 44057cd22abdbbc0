"""Evaluation turns from a ReDial-format file, played through convrec's own understanding and memory.

    load_benchmark(path, catalog, matcher, data_dir, limit) -> Benchmark

Two input formats, told apart by their first line:
- the official ReDial format (`conversationId`, `messages`, movie forms): consecutive messages of one sender form
  one utterance; `@id` mentions are rendered as titles; a recommender utterance mentioning movies its form marks
  `suggested = 1` is an evaluation turn, and those movies are its ground truth; the forms also give the memory truth;
- the CRSLab turn format used by He et al. (CIKM 2023) (`context`, `resp`, `rec`, `prev_entity`): one line per
  evaluation turn, utterances alternating and ending with the seeker's; ground truth and "seen" are DBpedia entity
  ids, mapped to catalog ids through the ReDial->DBpedia links, else through the title in the entity's URI. An entity
  that maps to no catalog item stays in the ground truth as "entity:<id>", which no system can rank (an honest miss).

Either way the session memory is the system's own: seeker utterances go through `understand` + `memory.update`;
recommender utterances are recorded as replies, so the movies they named count as already recommended.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent import memory
from agent.types import SessionState, Signals
from agent.understand import understand
from retrieval.catalog import Catalog
from retrieval.redial import RECOMMENDER, SEEKER, Dialogue, load_redial_dialogues, mentioned_ids, render_mentions
from retrieval.titles import TitleMatcher

Reader = Callable[[str, SessionState], Signals]
"""Reads one seeker message against the memory: `Recommender.read` (as a live turn does) or the rules alone."""

FORMATS = ("redial", "crslab")


class BenchmarkFormatError(ValueError):
    """The dialogue file is in neither supported format, or is malformed."""


@dataclass(frozen=True)
class EvalTurn:
    """One recommender turn to score: the memory before it, the seeker's last words and the ground truth."""

    dialogue_id: str
    state: SessionState
    text: str
    relevant: frozenset[str]
    seen: frozenset[str]
    understand_seconds: float = 0.0


@dataclass
class Benchmark:
    path: str
    format: str
    dialogues: int
    turns: list[EvalTurn]
    finals: list[tuple[SessionState, Dialogue]] = field(default_factory=list)
    """Final memory and dialogue (official format only: its movie forms are the memory truth)."""
    notes: dict[str, object] = field(default_factory=dict)


def detect_format(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as lines:
            first = next((line for line in lines if line.strip()), "")
        record = json.loads(first)
    except FileNotFoundError:
        raise BenchmarkFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchmarkFormatError(f"{path}: line 1 is not JSON ({error})") from None
    if isinstance(record, dict) and {"conversationId", "messages"} <= record.keys():
        return "redial"
    if isinstance(record, dict) and {"context", "rec", "dialog_id"} <= record.keys():
        return "crslab"
    raise BenchmarkFormatError(f"{path}: neither the official ReDial format (conversationId, messages) nor the "
                               "CRSLab turn format (context, rec, dialog_id)")


def load_benchmark(path: Path, catalog: Catalog, matcher: TitleMatcher, data_dir: Path,
                   limit: int = 0, read: Reader | None = None) -> Benchmark:
    """The evaluation turns of the first `limit` dialogues (all when 0), replayed in file order; `read` reads each
    seeker message as a live turn does (`Recommender.read`), else the cue rules alone (`understand`)."""
    path = Path(path)
    if detect_format(path) == "redial":
        dialogues = load_redial_dialogues(path)[: limit or None]
        turns, finals = [], []
        for dialogue in dialogues:
            dialogue_turns, final = replay(dialogue, catalog, matcher, read)
            turns += dialogue_turns
            finals.append((final, dialogue))
        return Benchmark(str(path), "redial", len(dialogues), turns, finals)
    entities = EntityMap(data_dir, matcher)
    groups = list(_crslab_dialogues(path))[: limit or None]
    turns = [turn for dialogue_id, lines in groups for turn in replay_crslab(dialogue_id, lines, catalog, matcher,
                                                                            entities, read)]
    return Benchmark(str(path), "crslab", len(groups), turns, notes=entities.coverage())


def utterances(dialogue: Dialogue) -> Iterator[tuple[str, str, list[str]]]:
    """(sender, raw text, mentioned ids) with consecutive messages of one sender merged."""
    group: list[str] = []
    sender = None
    for message in (*dialogue.messages, None):
        if message is None or message.sender != sender:
            if group:
                raw = " ".join(group)
                yield sender, raw, mentioned_ids(raw)
            group, sender = [], message.sender if message else None
        if message is not None:
            group.append(message.text)


def replay(dialogue: Dialogue, catalog: Catalog, matcher: TitleMatcher,
           read: Reader | None = None) -> tuple[list[EvalTurn], SessionState]:
    """The evaluation turns of one official-format dialogue, and the memory at its end."""
    state, seen, last_seeker, seconds, turns = SessionState(f"eval-{dialogue.dialogue_id}"), [], "", 0.0, []
    for sender, raw, ids in utterances(dialogue):
        text = render_mentions(raw, dialogue.mentions)
        if sender == SEEKER:
            state, seconds = _understood(state, text, catalog, matcher, read)
            last_seeker = text
        elif sender == RECOMMENDER:
            relevant = {i for i in ids if i in catalog and (f := dialogue.forms.get(i)) and f.suggested == 1}
            if relevant:
                turns.append(EvalTurn(dialogue.dialogue_id, state, last_seeker, frozenset(relevant),
                                      frozenset(seen), seconds))
            state = memory.record(state, last_seeker, text, tuple(i for i in dict.fromkeys(ids) if i in catalog))
        seen += ids
    return turns, state


def replay_crslab(dialogue_id: str, lines: list[dict], catalog: Catalog, matcher: TitleMatcher,
                  entities: EntityMap, read: Reader | None = None) -> list[EvalTurn]:
    """One dialogue's CRSLab lines: each line's context extends the previous one by the utterances in between."""
    state, played, last_seeker, seconds, turns = SessionState(f"eval-{dialogue_id}"), 0, "", 0.0, []
    for line in lines:
        context = [str(u) for u in line["context"]]
        for j in range(played, len(context)):
            text = context[j].strip()
            if not text:
                continue
            if (len(context) - 1 - j) % 2 == 0:  # the context ends with the seeker; utterances alternate
                state, seconds = _understood(state, text, catalog, matcher, read)
                last_seeker = text
            else:
                named = tuple(dict.fromkeys(m.item_id for m in matcher.find(text)))
                state = memory.record(state, last_seeker, text, named)
        played = len(context)
        relevant = frozenset(entities.item(e) for e in line["rec"])
        seen = frozenset(entities.item(e) for e in line.get("prev_entity", ()) if entities.is_movie(e))
        turns.append(EvalTurn(dialogue_id, state, last_seeker, relevant, seen, seconds))
    return turns


def _understood(state: SessionState, text: str, catalog: Catalog, matcher: TitleMatcher,
                read: Reader | None) -> tuple[SessionState, float]:
    started = time.perf_counter()
    signals = read(text, state) if read is not None else understand(text, state, catalog, matcher)
    state = memory.update(state, signals)
    return state, time.perf_counter() - started


def _crslab_dialogues(path: Path) -> Iterator[tuple[str, list[dict]]]:
    """(dialog_id, its lines) in file order."""
    current, lines = None, []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                dialogue_id = line["dialog_id"]
                if not isinstance(line["context"], list) or not all(isinstance(e, int) for e in line["rec"]):
                    raise ValueError("context must be a list and rec a list of entity ids")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise BenchmarkFormatError(f"{path}, line {number}: not a CRSLab turn ({error})") from None
            if dialogue_id != current and lines:
                yield current, lines
                lines = []
            current = dialogue_id
            lines.append(line)
    if lines:
        yield current, lines


URI_TITLE = re.compile(r"^(?P<title>.+?)(?: \((?:(?P<year>\d{4}) )?[^()]*(?:film|movie)[^()]*\))?$")


class EntityMap:
    """He et al.'s DBpedia entity ids -> catalog item ids (ReDial movieIds)."""

    def __init__(self, data_dir: Path, matcher: TitleMatcher) -> None:
        folder = Path(data_dir) / "redial"
        try:
            entity_ids = json.loads((folder / "crslab_format" / "entity2id.json").read_text(encoding="utf-8"))
            self.movies = set(json.loads((folder / "crslab_format" / "item_ids.json").read_text(encoding="utf-8")))
            links = json.loads((folder / "dbpedia" / "redial_id_to_dbpedia.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise BenchmarkFormatError(f"the CRSLab format needs {folder}/crslab_format/entity2id.json, "
                                       f"item_ids.json and dbpedia/redial_id_to_dbpedia.json: {error}") from None
        self.uris = {int(entity): _clean_uri(uri) for uri, entity in entity_ids.items()}
        self.by_uri = {_clean_uri(uri): str(movie_id) for movie_id, uri in links.items() if uri}
        self.matcher = matcher
        self._cache: dict[int, str | None] = {}
        self.how = {"dbpedia link": 0, "title in URI": 0, "unmapped": 0}

    def is_movie(self, entity: int) -> bool:
        return entity in self.movies

    def item(self, entity: int) -> str:
        """The catalog id of a movie entity, or "entity:<id>" when none matches."""
        if entity not in self._cache:
            uri = self.uris.get(entity, "")
            found, how = self.by_uri.get(uri), "dbpedia link"
            if found is None and uri:
                match = URI_TITLE.match(uri.rsplit("/", 1)[-1].replace("_", " "))
                title = f"{match['title']} {match['year']}" if match and match["year"] else match and match["title"]
                found, how = (self.matcher.lookup(title) if title else None), "title in URI"
            self.how["unmapped" if found is None else how] += 1
            self._cache[entity] = found
        return self._cache[entity] or f"entity:{entity}"

    def coverage(self) -> dict[str, object]:
        return {"entity_mapping": dict(self.how)}


def _clean_uri(uri: str) -> str:
    return urllib.parse.unquote(uri.strip().strip("<>"))
