"""Session memory as pure functions: U(t) = f(U(t-1), X(t)).

- `update(state, signals)`: what the user's message said (opinions, seen items, constraints).
- `record(state, user_text, reply, recommended)`: what the system answered.
- `apply_feedback(state, kind, item_id)`: a click or 👍/👎 between turns.

Every function returns a new `SessionState`; nothing here does I/O, so each rule is a unit test away.
An item lives in at most one of liked / disliked / neutral: the latest opinion wins.
"""

from __future__ import annotations

from dataclasses import replace

from agent.types import Constraints, SessionState, Signals, Turn

MAX_TURNS = 8
"""Recent turns kept in the memory (older ones stay in the session store's history)."""

FEEDBACK_KINDS = ("click", "like", "dislike", "seen", "skip")


def update(state: SessionState, signals: Signals) -> SessionState:
    """Fold one message's signals into the memory."""
    for item_id, opinion in signals.opinions:
        state = _set_opinion(state, item_id, opinion)
    if signals.seen:
        state = replace(state, seen=_add(state.seen, *signals.seen))
    base = Constraints() if signals.clear_constraints else state.constraints
    return replace(state, constraints=merge_constraints(base, signals.constraints))


def record(state: SessionState, user_text: str, reply: str, recommended: tuple[str, ...]) -> SessionState:
    """Remember what was recommended and keep the last MAX_TURNS exchanges."""
    turns = (*state.turns, Turn(user=user_text, reply=reply, recommended=recommended))[-MAX_TURNS:]
    return replace(
        state,
        recommended=_add(state.recommended, *recommended),
        last_recommended=recommended or state.last_recommended,
        turns=turns,
        turn_count=state.turn_count + 1,
    )


def apply_feedback(state: SessionState, kind: str, item_id: str) -> SessionState:
    """A feedback event: like/click pull similar items up, dislike rejects, seen/skip never show it again."""
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback type {kind!r}; expected one of {', '.join(FEEDBACK_KINDS)}")
    if kind in ("like", "click"):
        return _set_opinion(state, item_id, "liked")
    if kind == "dislike":
        return _set_opinion(state, item_id, "disliked")
    if kind == "seen":
        return replace(state, seen=_add(state.seen, item_id))
    return replace(state, recommended=_add(state.recommended, item_id))


def remove(state: SessionState, item_id: str) -> SessionState:
    """Forget one item everywhere except the recommended history (so it is still not repeated)."""
    return replace(
        state,
        liked=_drop(state.liked, item_id),
        disliked=_drop(state.disliked, item_id),
        neutral=_drop(state.neutral, item_id),
        seen=_drop(state.seen, item_id),
    )


ENTRY_KINDS = ("liked", "disliked", "seen", "recommended", "genre", "excluded_genre", "person", "min_year", "max_year")
"""A memory entry the user can remove, written "kind:value" ("liked:<item id>", "genre:Comedy", "min_year")."""


def entries(state: SessionState) -> list[str]:
    """Every removable entry of the memory, in display order."""
    c = state.constraints
    listed = [f"{kind}:{value}" for kind, values in (
        ("liked", state.liked), ("disliked", state.disliked), ("seen", state.seen),
        ("recommended", state.recommended), ("genre", c.genres), ("excluded_genre", c.excluded_genres),
        ("person", c.people)) for value in values]
    return listed + [kind for kind in ("min_year", "max_year") if getattr(c, kind) is not None]


def remove_entry(state: SessionState, entry: str) -> SessionState:
    """The memory without one entry (see ENTRY_KINDS); ValueError when the memory has no such entry."""
    if entry not in entries(state):
        raise ValueError(f"the memory has no entry {entry!r}")
    kind, _, value = entry.partition(":")
    c = state.constraints
    if kind in ("liked", "disliked", "seen", "recommended"):
        return replace(state, **{kind: _drop(getattr(state, kind), value)})
    if kind in ("min_year", "max_year"):
        return replace(state, constraints=replace(c, **{kind: None}))
    field = {"genre": "genres", "excluded_genre": "excluded_genres", "person": "people"}[kind]
    return replace(state, constraints=replace(c, **{field: _drop(getattr(c, field), value)}))


def merge_constraints(old: Constraints, new: Constraints) -> Constraints:
    """New years replace old ones; genre and people lists accumulate; a genre asked for is no longer excluded."""
    genres = _add(old.genres, *new.genres)
    excluded = _add(tuple(g for g in old.excluded_genres if g not in new.genres), *new.excluded_genres)
    return Constraints(
        genres=tuple(g for g in genres if g not in new.excluded_genres),
        excluded_genres=excluded,
        min_year=new.min_year if new.min_year is not None else old.min_year,
        max_year=new.max_year if new.max_year is not None else old.max_year,
        people=_add(old.people, *new.people),
    )


def _set_opinion(state: SessionState, item_id: str, opinion: str) -> SessionState:
    liked, disliked, neutral = (_drop(s, item_id) for s in (state.liked, state.disliked, state.neutral))
    if opinion == "liked":
        liked = _add(liked, item_id)
    elif opinion == "disliked":
        disliked = _add(disliked, item_id)
    elif opinion == "neutral":
        # A neutral mention never erases an opinion stated earlier.
        if item_id in state.liked or item_id in state.disliked:
            return state
        neutral = _add(neutral, item_id)
    else:
        raise ValueError(f"unknown opinion {opinion!r}")
    return replace(state, liked=liked, disliked=disliked, neutral=neutral)


def _add(items: tuple[str, ...], *new: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*items, *new)))


def _drop(items: tuple[str, ...], item_id: str) -> tuple[str, ...]:
    return tuple(i for i in items if i != item_id)
