"""One chat turn, top to bottom: understand, remember, retrieve, rank, explain, save.

    Recommender.run_turn(session_id, text) -> TurnResult
      1. state      = sessions.load(session_id)                     (a new session when unknown)
      2. signals    = understand(text, state, catalog)               mentions + opinions, references, constraints
      3. state      = memory.update(state, signals)                  U(t) = f(U(t-1), X(t)), pure
      4. ranked     = rank(state, text)                               candidates: dense + collaborative + popularity,
                                                                      filtered, ordered by the learned ranker;
                                                                      render_prompt("rank"); the LLM scores the first
                                                                      ones, the ranker's second stage re-orders them;
                                                                      then picks that match what was asked come first
                                                                      (agent/requests.py; trace.loosened says what
                                                                      was loosened when too few match)
      5. sessions.save(memory.record(state, picks))                   one transaction: memory + the turn's picks
                                                                      (+ an experiment's exposures, the likes)
         on_picks(...)                                                the caller shows the picks now
      6. recs       = explain(...)                                    LLM sentences checked claim by claim, each to
                                                                      on_explanation as it is ready
      7. sessions.update_last_turn(...)                               the stored turn gets its explanations
      8. TurnResult(reply, recommendations, memory, trace)

The CLI, the HTTP API, the web app and the evaluation all call this one method.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from langchain_core.messages import BaseMessage

from agent import memory
from agent.config import DEFAULT_RETRIEVAL_WEIGHT, Settings
from agent.engines import ChatEngine, EngineError
from agent.grounding import ClaimCheck, FactChecker, answers_the_person, compose_explanation
from agent.ranking import candidate_labels, rank_candidates
from agent.reactions import ReactionModel, read_message
from agent.requests import Pool, describe_request, honour_requests
from agent.store import SessionStore
from agent.types import PICKS_HEADING, Candidate, Recommendation, SessionState, Signals, Trace, TurnResult
from prompts import render_prompt
from retrieval.candidates import CandidateQuery, HybridRetriever
from retrieval.catalog import Catalog, Item
from retrieval.titles import TitleMatcher

SENTENCE_ENDS = (".", "!", "?")
"""An explanation is one sentence: generation stops there (the rest would be thrown away)."""
SESSION_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


class InputError(ValueError):
    """The request cannot be served as given (empty or oversized text, bad session id); the message says why."""


@dataclass
class Recommender:
    """Everything a turn needs. Build one with `agent.build.build_recommender(settings)`."""

    settings: Settings
    catalog: Catalog
    matcher: TitleMatcher
    retriever: HybridRetriever
    engine: ChatEngine
    sessions: SessionStore
    checker: FactChecker
    retrieval_weights: Mapping[str, float] = field(default_factory=dict)
    """model name -> its calibrated fusion weight (an adapter's training.json); see `retrieval_weight`."""
    reactions: ReactionModel | None = None
    """What a reply says of the movies just suggested when it names none of them (agent/reactions.py)."""
    experiment: tuple[str, str] | None = None
    """(experiment, arm) this recommender serves (agent/experiments.py): each turn's picks are stored as exposures
    with the turn, and its time and fallbacks as a trial."""

    @property
    def retrieval_weight(self) -> float:
        """How much the retrieval order counts beside this engine's model: the setting if given, else the model's
        calibrated weight, else the default."""
        if self.settings.retrieval_weight is not None:
            return self.settings.retrieval_weight
        return self.retrieval_weights.get(self.engine.model_name, DEFAULT_RETRIEVAL_WEIGHT)

    def run_turn(self, session_id: str, text: str, *, on_picks: Callable[[TurnResult], None] | None = None,
                 on_explanation: Callable[[Recommendation], None] | None = None) -> TurnResult:
        """One turn. The picks are committed (memory and turn, one transaction) before any explanation is written,
        then `on_picks` gets them (explanations empty); the explanations follow, each to `on_explanation` as it is
        checked, and are written to the stored turn in a second transaction. A crash in between keeps the picks."""
        text = check_message(text, self.settings.max_message_chars)
        check_session_id(session_id)
        n = self.settings.n
        trace = Trace(engine=self.engine.name, model=self.engine.model_name)
        started = time.perf_counter()
        with self.sessions.locked(session_id):
            with timed_stage(trace, "understand"):
                state = self.sessions.load(session_id) or SessionState(session_id=session_id)
                signals = self.read(text, state)
                state = memory.update(state, signals)
            ranked = self.rank(state, text, trace)
            unexplained = [Recommendation(i, self.catalog[i].title, self.catalog[i].year, rank, "")
                           for rank, i in enumerate(ranked[:n], start=1)]
            reply, recorded, turn = self._remember(state, signals, text, unexplained, trace)
            exposures = [(*self.experiment, r.item_id, r.rank) for r in unexplained] if self.experiment else []
            with timed_stage(trace, "save"):  # the picks, committed before any explanation is written
                self.sessions.save(recorded, turn=turn, exposures=exposures)
            trace.timings["first_pick"] = round(time.perf_counter() - started, 4)
            if on_picks is not None:
                on_picks(TurnResult(session_id, reply, tuple(unexplained), recorded, trace))
            with timed_stage(trace, "explain"):
                recommendations = self.explain(state, tuple(r.item_id for r in unexplained), trace, on_explanation)
            reply, recorded, turn = self._remember(state, signals, text, recommendations, trace)
            trial = ((*self.experiment, time.perf_counter() - started, bool(trace.fallbacks)) if self.experiment
                     else None)
            with timed_stage(trace, "save"):
                self.sessions.update_last_turn(recorded, turn=turn, trial=trial)
        trace.timings["total"] = round(time.perf_counter() - started, 4)
        return TurnResult(session_id, reply, tuple(recommendations), recorded, trace)

    def read(self, text: str, state: SessionState) -> Signals:
        """What the message says (agent/understand.py: titles, opinions, references, constraints); then the reaction
        model reads what it says of the movies just suggested that it does not name ("sounds good", "seen it")."""
        return read_message(text, state, self.catalog, self.matcher, self.reactions, self.retriever.embedder)

    def _remember(self, state: SessionState, signals: Signals, text: str, recommendations: list[Recommendation],
                  trace: Trace) -> tuple[str, SessionState, dict]:
        """The reply, the memory with this turn recorded, and the turn as stored."""
        reply = compose_reply(signals, recommendations, state, self.catalog, note=trace.loosened)
        picked = tuple(r.item_id for r in recommendations)
        turn = {"user": text, "reply": reply, "recommended": list(picked), "trace": trace.fallbacks}
        return reply, memory.record(state, text, reply, picked), turn

    def rank(self, state: SessionState, text: str, trace: Trace, depth: int = 0) -> tuple[str, ...]:
        """Steps 4-6: retrieve candidates, let the LLM order the first `candidates_in_prompt` of them, keep the rest
        in retrieval order behind (up to `depth` items in all; the offline evaluation asks for 50)."""
        with timed_stage(trace, "retrieve"):
            wanted = max(depth, self.settings.candidates_in_prompt)
            candidates = self.retriever.candidates(query_from(state, text), wanted)
            shown = candidates[: self.settings.candidates_in_prompt]
            trace.candidates = len(shown)
            trace.candidate_ids = tuple(c.item_id for c in shown)
        if not self.settings.rank_with_llm:  # an experiment's arm without the model: the retrieval order
            ranked, trace.loosened = self.honour_requests(state, text, tuple(c.item_id for c in candidates))
            return ranked
        with timed_stage(trace, "rank"):
            messages = rank_prompt(state, text, shown, self.catalog, self.settings.n)
            ranking = rank_candidates(self.engine, messages, [c.item_id for c in shown], self.settings.n,
                                      self.retrieval_weight, reranker=self.retriever.ranker,
                                      stage_one_scores=[c.score for c in shown])
            trace.fallbacks += [note for note in ranking.notes if note.startswith("fallback")]
        ranked = (*ranking.item_ids, *(c.item_id for c in candidates[len(shown):]))
        with timed_stage(trace, "retrieve"):
            ranked, trace.loosened = self.honour_requests(state, text, ranked)
        return ranked

    def honour_requests(self, state: SessionState, text: str, ranked: tuple[str, ...]) -> tuple[tuple[str, ...],
                                                                                              str | None]:
        """The picks match the people, genres and period asked for (agent/requests.py); the note says what was
        loosened when the catalog holds too few that do."""
        return honour_requests(ranked, state.constraints, self.catalog, self.settings.n,
                               self._matching_pool(state, text))

    def _matching_pool(self, state: SessionState, text: str) -> Pool:
        """The catalog's items that fulfil a request, by popularity, without what this session excludes."""
        query = query_from(state, text)
        return lambda constraints, n: self.retriever.matching(replace(query, constraints=constraints), n)

    def explain(self, state: SessionState, item_ids: tuple[str, ...], trace: Trace,
                on_explanation: Callable[[Recommendation], None] | None = None) -> list[Recommendation]:
        """One explanation per pick: the LLM's sentence when every claim in it is true and it answers this person
        (names the people they asked for that the pick has, cites what they asked for, and ties the pick to a movie
        they liked when it can: agent.grounding.answers_the_person), else one composed from facts; each goes to
        `on_explanation` as soon as it is checked."""
        items = [self.catalog[i] for i in item_ids]
        generated = self._generate_explanations(state, items, trace)
        trace.drafts = tuple(generated)
        recommendations, composed = [], 0
        for rank, (item, sentence) in enumerate(zip(items, generated, strict=True), start=1):
            check = self.checker.check(sentence, item, state) if sentence else None
            if check is not None and check.grounded and answers_the_person(sentence, check, item, state,
                                                                           self.catalog):
                explanation, facts = sentence, _facts_of(check, item, self.catalog)
            else:
                explanation, facts = compose_explanation(item, state, self.catalog)
                composed += 1
            recommendations.append(Recommendation(item.item_id, item.title, item.year, rank, explanation, facts))
            if on_explanation is not None:
                on_explanation(recommendations[-1])
        if composed and self.settings.explain_with_llm:
            trace.fallbacks.append(f"explanations composed from facts for {composed} of {len(items)} "
                                   "(generated text cited no fact, made an unsupported claim, or left out what "
                                   "was asked for or a liked movie the pick shares facts with)")
        return recommendations

    def _generate_explanations(self, state: SessionState, items: list[Item], trace: Trace) -> list[str]:
        if not self.settings.explain_with_llm or not items:
            return [""] * len(items)
        prompts = [explain_prompt(state, item, self.catalog) for item in items]
        try:
            return [_first_sentence(t) for t in self.engine.generate(prompts, max_new_tokens=48,
                                                                            stop=SENTENCE_ENDS)]
        except EngineError as error:
            trace.fallbacks.append(f"explanations: engine error: {error}")
            return [""] * len(items)


def check_message(text: object, limit: int) -> str:
    if not isinstance(text, str):
        raise InputError("the message must be text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the message is not valid UTF-8") from None
    text = text.strip()
    if not text:
        raise InputError("the message is empty: tell me what you'd like to watch")
    if len(text) > limit:
        raise InputError(f"the message is {len(text):,} characters long; the limit is {limit:,}")
    return text


def check_session_id(session_id: object) -> None:
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise InputError("a session id is 1-128 characters of letters, digits and . _ : @ -")


def rank_prompt(state: SessionState, text: str, shown: list[Candidate], catalog: Catalog,
                n: int) -> list[BaseMessage]:
    """The messages that ask the LLM to order `shown` (also what fine-tuning trains on: finetune/examples.py)."""
    return render_prompt("rank", memory=describe_memory(state, catalog),
                         conversation=describe_conversation(state, text),
                         candidates=describe_candidates(shown, catalog), n=n)


LIKED_IN_EXPLAIN = 3
"""The explanation prompt names the user's last few liked movies."""


def explain_prompt(state: SessionState, item: Item, catalog: Catalog) -> list[BaseMessage]:
    """The messages that ask the LLM for one sentence on why `item` fits (also used by fine-tuning)."""
    liked = "; ".join(catalog[i].label for i in state.liked[-LIKED_IN_EXPLAIN:] if i in catalog) or "nothing named yet"
    return render_prompt("explain", liked=liked, item=item.label, facts=_fact_line(item))


def query_from(state: SessionState, text: str) -> CandidateQuery:
    return CandidateQuery(text=text, liked=state.liked + state.neutral, disliked=state.disliked,
                          exclude=frozenset(state.excluded()), constraints=state.constraints, turns=len(state.turns))


def describe_memory(state: SessionState, catalog: Catalog) -> str:
    def labels(ids: tuple[str, ...]) -> str:
        return "; ".join(catalog[i].label for i in ids[-6:] if i in catalog) or "none"

    c = state.constraints
    lines = [f"Liked: {labels(state.liked)}", f"Disliked: {labels(state.disliked)}"]
    if c.genres or c.people:
        lines.append(f"Wants: {', '.join((*c.genres, *c.people))}")
    if c.excluded_genres:
        lines.append(f"Avoid: {', '.join(c.excluded_genres)}")
    if c.min_year or c.max_year:
        lines.append(f"Years: {c.min_year or 'any'} to {c.max_year or 'now'}")
    return "\n".join(lines)


def describe_conversation(state: SessionState, text: str) -> str:
    lines = [f"User: {t.user[:300]}" for t in state.turns[-2:]]
    return "\n".join([*lines, f"User: {text[:600]}"])


def describe_candidates(candidates: list[Candidate], catalog: Catalog) -> str:
    """One short line per candidate, named by its letter (the answer names letters; agent/ranking.py maps them
    back to ids)."""
    labels = candidate_labels(len(candidates))
    return "\n".join(f"{label}: {_fact_line(catalog[c.item_id], short=True)}"
                     for label, c in zip(labels, candidates, strict=True))


def compose_reply(signals: Signals, recommendations: list[Recommendation], state: SessionState,
                  catalog: Catalog, note: str | None = None) -> str:
    """The readable answer; every sentence comes from validated recommendations or the memory. `note` says how a
    request was loosened when the catalog holds too few items that match it (agent/requests.py)."""
    lines = []
    noted = [(catalog[i].label, o) for i, o in signals.opinions if i in catalog and o != "neutral"]
    if noted:
        lines.append("Noted: " + "; ".join(f"you {o} {label}" for label, o in noted) + ".")
    for title in signals.unmatched_titles[:3]:
        lines.append(f'I could not find "{title}" in the catalog.')
    if asked := describe_request(state.constraints):
        lines.append(f"Looking for: {asked}.")
    if not recommendations:
        lines.append("I have nothing left that fits everything you asked for. "
                     "Try loosening a constraint (say \"anything is fine\").")
        return "\n".join(lines)
    if note:
        lines.append(note)
    lines.append(PICKS_HEADING)
    lines += [f"{r.rank}. {catalog[r.item_id].label}" + (f": {r.explanation}" if r.explanation else "")
              for r in recommendations]
    return "\n".join(lines)


def _fact_line(item: Item, *, short: bool = False) -> str:
    parts = [item.label]
    if item.genres:
        parts.append(", ".join(item.genres[:3]))
    if item.directors:
        parts.append("directed by " + ", ".join(item.directors[: 1 if short else 2]))
    if item.cast:
        parts.append("starring " + ", ".join(item.cast[: 1 if short else 4]))
    if not short and item.writers:
        parts.append("written by " + ", ".join(item.writers[:2]))
    return "; ".join(parts)


def _first_sentence(text: str) -> str:
    """The first complete sentence, or "" when the model stopped mid-sentence."""
    text = re.sub(r"\s+", " ", text).strip().strip('"')
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1)[:300] if match else ""


def _facts_of(check: ClaimCheck, item: Item, catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """The supported claims of an accepted explanation, keyed like Item.facts() (plus "liked")."""
    facts: dict[str, tuple[str, ...]] = {}
    for claim in check.supported:
        if claim.kind == "movie":
            if claim.value == item.item_id:
                continue
            key, value = "liked", catalog[claim.value].label
        elif claim.kind == "person":  # a name with no role cue: file it under the credit it has
            key = "director" if claim.value in item.directors else "starring" if claim.value in item.cast else "writer"
            value = claim.value
        else:
            key, value = claim.kind, claim.value
        facts[key] = (*facts.get(key, ()), value)
    return facts


@contextmanager
def timed_stage(trace: Trace, name: str) -> Iterator[None]:
    """Add the time spent in the block to trace.timings[name] (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        trace.timings[name] = round(trace.timings.get(name, 0.0) + time.perf_counter() - started, 4)
