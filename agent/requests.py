"""Explicit requests are honoured: when the user asks for a person, a genre or a period, every pick matches it.

    honour_requests(ranked, constraints, catalog, n, pool) -> (item_ids, note)

An item matches a request when it has at least one wanted genre, at least one wanted person among its directors,
cast and writers, and its year within [min_year, max_year] (see `retrieval.candidates.fulfils_requests`). The
ranked list is re-ordered, stably, so that the items matching every kind of request come first. When it holds
fewer than n of them, `pool` (the retriever's `matching`: allowed items only, most popular first) brings more in
from the catalog. When even the catalog holds fewer than n, the request is loosened, one step at a time, and
`note` says so:

    1. drop the genres   (the people and the period stay)
    2. drop the people   (the period stays: it is a hard filter the user set)

Items that match a looser level follow the stricter ones; items that match nothing follow last. The function is
pure: it reads the catalog and asks `pool`, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from agent.types import Constraints
from retrieval.candidates import fulfils_requests
from retrieval.catalog import Catalog

Pool = Callable[[Constraints, int], Sequence[str]]
"""(constraints, n) -> up to n item ids that fulfil `constraints` and may be recommended (never excluded, always
explainable), most popular first: `HybridRetriever.matching` with the session's exclusions."""


def honour_requests(ranked: Sequence[str], constraints: Constraints, catalog: Catalog, n: int,
                    pool: Pool) -> tuple[tuple[str, ...], str | None]:
    """`ranked` re-ordered so that the first n items match the user's requests, loosened only where the catalog
    holds fewer than n that match; the note (None when nothing was loosened) says what was loosened."""
    levels = _levels(constraints)
    if not levels:
        return tuple(ranked), None
    ordered = list(ranked)
    counts: list[int] = []
    for level in levels:
        count = _count(ordered, level, catalog)
        if count < n:
            ordered += _new(pool(level, n + len(ordered)), ordered, catalog)[: n - count]
            count = _count(ordered, level, catalog)
        counts.append(count)
        if count >= n:
            break

    def tier(item_id: str) -> int:
        item = catalog.get(item_id)
        return next((k for k, level in enumerate(levels) if item and fulfils_requests(item, level)), len(levels))

    ordered.sort(key=tier)
    return tuple(ordered), (_note(levels, counts, n) if counts[0] < n else None)


def describe_request(constraints: Constraints) -> str:
    """'Jim Carrey + Horror + 1990-1999': the people, genres and period asked for."""
    c = constraints
    parts = [" or ".join(c.people), " or ".join(c.genres)]
    if c.min_year is not None and c.max_year is not None:
        parts.append(str(c.min_year) if c.min_year == c.max_year else f"{c.min_year}-{c.max_year}")
    elif c.min_year is not None:
        parts.append(f"{c.min_year} or later")
    elif c.max_year is not None:
        parts.append(f"{c.max_year} or earlier")
    return " + ".join(part for part in parts if part)


def _levels(c: Constraints) -> list[Constraints]:
    """The request as asked, then loosened step by step (genres, then people); empty when nothing was asked."""
    if not (c.genres or c.people or c.min_year is not None or c.max_year is not None):
        return []
    levels = [c]
    if c.genres and c.people:
        levels.append(replace(c, genres=()))
    if c.genres or c.people:
        levels.append(replace(c, genres=(), people=()))
    return levels


def _count(item_ids: Sequence[str], constraints: Constraints, catalog: Catalog) -> int:
    return sum(1 for i in item_ids if (item := catalog.get(i)) is not None and fulfils_requests(item, constraints))


def _new(item_ids: Sequence[str], ordered: Sequence[str], catalog: Catalog) -> list[str]:
    """The items not in `ordered`, one per movie (ReDial lists some movies twice, under two ids)."""
    taken = {_movie(i, catalog) for i in ordered}
    new = []
    for item_id in item_ids:
        movie = _movie(item_id, catalog)
        if movie not in taken:
            taken.add(movie)
            new.append(item_id)
    return new


def _movie(item_id: str, catalog: Catalog) -> tuple[str, int | None]:
    item = catalog.get(item_id)
    return (item.title.casefold(), item.year) if item else (item_id, None)


def _note(levels: list[Constraints], counts: list[int], n: int) -> str:
    """'Only 2 movies I can recommend match Jim Carrey + Horror, so I loosened the genre (Horror) for the rest.'"""
    reached = levels[len(counts) - 1]
    note = _only(counts[0], describe_request(levels[0]))
    dropped = [_dropped(stricter, looser) for stricter, looser in zip(levels, levels[1:len(counts)], strict=False)]
    if dropped:
        note += f", so I loosened {' and '.join(dropped)} for the rest"
        period = describe_request(replace(reached, genres=(), people=()))
        note += f" and kept {period}" if period else ""
    note += "."
    if len(counts) > 1 and counts[-1] < n and describe_request(reached):
        note += f" {_only(counts[-1], describe_request(reached))}."
    return note


def _only(count: int, request: str) -> str:
    if count == 0:
        return f"No movie I can recommend matches {request}"
    return f"Only {count} movie{'s' if count > 1 else ''} I can recommend match{'es' if count == 1 else ''} {request}"


def _dropped(stricter: Constraints, looser: Constraints) -> str:
    if stricter.genres != looser.genres:
        return f"the genre{'s' if len(stricter.genres) > 1 else ''} ({', '.join(stricter.genres)})"
    return f"the {'people' if len(stricter.people) > 1 else 'person'} ({', '.join(stricter.people)})"
