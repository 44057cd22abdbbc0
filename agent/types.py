"""Immutable value types passed between the parts of a chat turn.

    TurnRequest ──run_turn──▶ TurnResult(reply, recommendations, memory, trace)

`SessionState` is the session memory U(t); `Signals` is what one user message X(t) says; `agent.memory.update`
computes U(t) = f(U(t-1), X(t)). `Constraints` and `Candidate` are retrieval's (retrieval/types.py), re-exported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from retrieval.types import Candidate, Constraints

__all__ = ["Candidate", "Constraints", "Opinion", "Recommendation", "SessionState", "Signals", "Trace", "Turn",
           "TurnResult"]

Opinion = str
"""One of "liked", "disliked", "neutral" (mentioned without saying)."""


@dataclass(frozen=True)
class Signals:
    """What one user message says, as understood against the catalog and the memory."""

    opinions: tuple[tuple[str, Opinion], ...] = ()
    """(item_id, opinion) for each catalog item the message mentions or refers to, in order."""
    named: tuple[str, ...] = ()
    """The items whose title the message writes (the rest of `opinions` are references: "that one", "it")."""
    seen: tuple[str, ...] = ()
    """Items the user says they have already seen (not recommended again)."""
    constraints: Constraints = Constraints()
    """Constraints stated in this message; merged into the memory's constraints."""
    clear_constraints: bool = False
    """The user asked to drop earlier constraints ("anything is fine", "forget the filters")."""
    unmatched_titles: tuple[str, ...] = ()
    """Quoted phrases ("..." or '...') that matched nothing in the catalog."""


@dataclass(frozen=True)
class Turn:
    """One exchange kept in the memory's recent history."""

    user: str
    reply: str
    recommended: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionState:
    """The session memory U(t). Item sets are tuples in first-seen order, so the state is hashable and stable."""

    session_id: str
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    """Rejected items: said they disliked them, or turned a recommendation down. Never recommended."""
    neutral: tuple[str, ...] = ()
    """Mentioned without an opinion (e.g. "have you seen X?")."""
    seen: tuple[str, ...] = ()
    recommended: tuple[str, ...] = ()
    """Everything recommended so far, in order. Never recommended again."""
    last_recommended: tuple[str, ...] = ()
    """The most recent list, in rank order: what "that one" or "the second one" refers to."""
    constraints: Constraints = Constraints()
    turns: tuple[Turn, ...] = ()
    """The most recent turns (bounded, see memory.MAX_TURNS)."""
    turn_count: int = 0

    def excluded(self) -> set[str]:
        """Item ids that must not be recommended: mentioned, seen, rejected or already recommended."""
        return {*self.liked, *self.disliked, *self.neutral, *self.seen, *self.recommended}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        constraints = Constraints(**{k: _tuple(v) if isinstance(v, list) else v
                                     for k, v in data.get("constraints", {}).items()})
        turns = tuple(Turn(t["user"], t["reply"], tuple(t.get("recommended", ()))) for t in data.get("turns", ()))
        plain = {k: _tuple(v) for k, v in data.items() if k not in {"constraints", "turns", "session_id", "turn_count"}}
        return cls(session_id=data["session_id"], constraints=constraints, turns=turns,
                   turn_count=int(data.get("turn_count", 0)), **plain)


def _tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    year: int | None
    rank: int
    explanation: str
    facts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The facts of this item the explanation used (subset of Item.facts(), plus "liked" for shared-with titles)."""


@dataclass
class Trace:
    """How the turn was produced: time per stage (seconds), engine, model, every fallback taken, what the LLM saw
    (candidate ids) and what it wrote before the fact check (drafts, "" where it wrote no complete sentence)."""

    timings: dict[str, float] = field(default_factory=dict)
    engine: str = ""
    model: str = ""
    fallbacks: list[str] = field(default_factory=list)
    candidates: int = 0
    candidate_ids: tuple[str, ...] = ()
    drafts: tuple[str, ...] = ()
    loosened: str | None = None
    """How a request was loosened because the catalog holds too few items matching it (agent/requests.py)."""


PICKS_HEADING = "Here are my picks:"
"""Where a reply's list of picks starts (`short_reply` cuts there)."""


def short_reply(reply: str) -> str:
    """The reply the web chat shows above its cards: what was understood and what changed, not the list again."""
    understood, heading, _ = reply.partition(PICKS_HEADING)
    return (understood + ("My picks are on the cards." if heading else "")).strip()


@dataclass(frozen=True)
class TurnResult:
    session_id: str
    reply: str
    recommendations: tuple[Recommendation, ...]
    memory: SessionState
    trace: Trace

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
