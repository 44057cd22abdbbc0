"""Value types the retrieval floor and the agent above it share: what a user asked for (`Constraints`) and a
retrieved item (`Candidate`). They live here, on the lower floor, so retrieval imports nothing from agent/;
agent/types.py re-exports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Constraints:
    """What the user asked the recommendations to satisfy. Empty means no constraint."""

    genres: tuple[str, ...] = ()
    """Wanted genres (catalog genre names, e.g. "Comedy"); a soft preference."""
    excluded_genres: tuple[str, ...] = ()
    """Genres the user does not want; a hard filter."""
    min_year: int | None = None
    """Earliest release year allowed; a hard filter."""
    max_year: int | None = None
    """Latest release year allowed; a hard filter."""
    people: tuple[str, ...] = ()
    """Wanted people (directors, cast, writers, as named in the catalog); a soft preference."""

    def is_empty(self) -> bool:
        return self == Constraints()


@dataclass(frozen=True)
class Candidate:
    """A retrieved item with the score and sources that put it in the list."""

    item_id: str
    score: float
    sources: tuple[str, ...] = ()
    """Which generators proposed it: "dense", "cooccurrence", "popularity"."""
