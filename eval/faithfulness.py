"""Explanation faithfulness: every concrete claim checked against the item's facts and the session memory.

    ExplanationStats().add(explanations, items, state, checker); .summary() -> dict

Claims are what `agent.grounding.FactChecker` finds: people (with their role), genres, years, decades, countries,
languages, and other movies ("like <a movie you liked>"). Reported over all explanations added:
- supported_claim_rate: supported concrete claims / all concrete claims;
- with_unsupported: share of explanations with any unsupported claim, counting words no fact licenses
  ("captivating", "award-winning") as claims too;
- citing_a_fact: share with at least one supported claim;
- words: mean length in words; distinct_2: distinct word pairs / all word pairs within one list (1.0 = no two
  explanations of a list repeat a phrase), averaged over lists; empty: share with no text;
- facts_per_explanation: supported claims per explanation;
- personalisation_rate: of the explanations in sessions with something to be personal about (a liked movie or a
  request: people, genres, a period), the share that cite a liked movie the pick shares facts with ("like The
  Matrix"), a person of a liked movie, or what was asked for;
- asked_fact_citation_rate: of the explanations in sessions that asked for people, genres or a period, the share
  that cite one of them (a requested person or genre; the year or decade when a period was asked);
- personal_ceiling: of the same explanations as personalisation_rate, the share whose pick has anything personal to
  cite (what was asked for, or a fact shared with a liked movie): the most any explanation could reach.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.grounding import FactChecker, cites_liked, cites_what_was_asked, could_be_personal
from agent.types import Constraints, SessionState
from retrieval.catalog import Item

_WORD = re.compile(r"[\w'-]+")


@dataclass
class ExplanationStats:
    explanations: int = 0
    empty: int = 0
    claims: int = 0
    supported: int = 0
    with_unsupported: int = 0
    citing: int = 0
    words: int = 0
    distinct_2: list[float] = field(default_factory=list)
    unsupported_examples: list[str] = field(default_factory=list)
    personal_possible: int = 0
    personal: int = 0
    pick_has_personal_facts: int = 0
    asked_for_something: int = 0
    cites_what_was_asked: int = 0

    def add(self, explanations: Sequence[str], items: Sequence[Item], state: SessionState,
            checker: FactChecker) -> None:
        """Check one list's explanations (one per item, in list order)."""
        for text, item in zip(explanations, items, strict=True):
            self.explanations += 1
            if not text.strip():
                self.empty += 1
                continue
            check = checker.check(text, item, state)
            concrete = [c for c in check.unsupported if c.kind != "unverified"]
            self.claims += len(check.supported) + len(concrete)
            self.supported += len(check.supported)
            self.citing += bool(check.supported)
            self.with_unsupported += bool(check.unsupported)
            self.words += len(_WORD.findall(text))
            asked = cites_what_was_asked(check.supported, state.constraints)
            if _has_requests(state.constraints):
                self.asked_for_something += 1
                self.cites_what_was_asked += asked
            if state.liked or _has_requests(state.constraints):
                self.personal_possible += 1
                self.personal += asked or cites_liked(check.supported, state, checker.catalog)
                self.pick_has_personal_facts += could_be_personal(item, state, checker.catalog)
            if check.unsupported and len(self.unsupported_examples) < 5:
                self.unsupported_examples.append(f"{item.label}: {text} "
                                                 f"[unsupported: {', '.join(c.value for c in check.unsupported)}]")
        texts = [t for t in explanations if t.strip()]
        if len(texts) > 1:
            self.distinct_2.append(distinct_n(texts, 2))

    def summary(self) -> dict:
        written = self.explanations - self.empty
        return {
            "explanations": self.explanations,
            "empty": _share(self.empty, self.explanations),
            "supported_claim_rate": _share(self.supported, self.claims),
            "claims_per_explanation": _share(self.claims, written),
            "with_unsupported": _share(self.with_unsupported, written),
            "citing_a_fact": _share(self.citing, written),
            "facts_per_explanation": _share(self.supported, written),
            "personalisation_rate": _share(self.personal, self.personal_possible),
            "personal_possible": self.personal_possible,
            "personal_ceiling": _share(self.pick_has_personal_facts, self.personal_possible),
            "asked_fact_citation_rate": _share(self.cites_what_was_asked, self.asked_for_something),
            "asked_possible": self.asked_for_something,
            "words": _share(self.words, written),
            "distinct_2": round(sum(self.distinct_2) / len(self.distinct_2), 4) if self.distinct_2 else None,
            "unsupported_examples": self.unsupported_examples,
        }


def _has_requests(constraints: Constraints) -> bool:
    return bool(constraints.people or constraints.genres or constraints.min_year is not None
                or constraints.max_year is not None)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over the texts (1.0 when no n-gram repeats; 0.0 for none)."""
    grams = [tuple(words[i:i + n]) for t in texts if (words := _WORD.findall(t.casefold()))
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
