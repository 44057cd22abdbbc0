"""What one user message says, read against the catalog and the memory: `understand(...)` → `Signals`.

Pure and deterministic, no model calls; any input is tolerated (only the first MAX_CHARS characters are read).

Mentions. Catalog titles come from `TitleMatcher.find`; a quoted phrase that `find` missed is tried with
`TitleMatcher.lookup`, and reported in `unmatched_titles` when that fails too. A title shared by several
versions resolves to the version in `state.last_recommended` when there is one.

References to the last recommendations (`state.last_recommended`, rank order), only when there is such a list:
"the first one", "the second", "2nd one", "#2", "number 2", "option 2", "the last one" → that rank (ignored
past the end of the list); "that one", "this one", "that movie" → the top item; "both" → the top two; "all of
them", "all three", "them all" → the whole list; "none of them/those/these", "neither" → all (neither: the top
two) disliked. "it", "that" (ending a clause) and "they/them/those/these" count only in a clause that says an
opinion or "seen" and names no title: they refer to the nearest title or reference earlier in the message,
else to the top item ("it", "that") or the whole list (plural). A reply to a suggestion just made that turns it
down and refers to nothing ("no thanks", "I won't watch that", "doesn't sound good", "sounds boring") dislikes
every movie of it, unless the clause speaks of a genre ("I don't want to watch horror" is a constraint).

Opinion of each mention or reference, from the clause around it. Clauses split at . , ; ! ? new lines and at
"but", "although", "though", "however", "whereas", "while" ("anything but" does not split). Titles are masked
before cue words are read, so "Love Actually" says nothing. The cue nearest to the mention wins (a longer cue
hides the shorter cues inside it: "not a fan of" over "fan of", "any good" over "good"):
- liked: love, like, enjoy, favourite, great, good, best, fun, "a fan of", "something like", "similar to", "in
  the mood for", "reminds me of", ...;
- disliked: hate, dislike, boring, awful, terrible, worst, bad, overrated, "couldn't stand", "didn't care
  for", "anything but", "except", "other than", "too long", ...;
- neutral: "have you seen", "heard of", "on my list", "want to see", "what about", "any good", "haven't seen",
  ...
A negation ("not", "never", "-n't") up to two words before a liked/disliked cue flips it ("didn't love" →
disliked, "not bad" → liked). No cue: neutral when the clause is a question or says "seen", else the default —
liked for a title (ReDial seekers mostly name movies they like, and "something like X" is the usual request)
and neutral for a reference. A clause that says an opinion but names nothing speaks of the title just before
it when that title's own clause said none ("I have seen X, but not a fan"). One message, one opinion per item:
the last liked/disliked one, else neutral.

Seen: a clause with "seen", "saw", "watched" or "already" that is not negated ("haven't seen") and not a
question to the recommender ("have you seen") marks its mentions and references as seen.

Constraints (genres, years, people, "start over"): agent/asked_for.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from agent.asked_for import (
    CLAUSE_BREAK,
    NEGATION,
    Vocabulary,
    catalog_vocabulary,
    clears_constraints,
    read_constraints,
    read_genres,
)
from agent.types import Opinion, SessionState, Signals
from retrieval.catalog import Catalog
from retrieval.titles import TitleMatcher, normalize_title, split_year

MAX_CHARS = 4000
"""Only this much of a message is read."""

LIKED, DISLIKED, NEUTRAL = "liked", "disliked", "neutral"
_NEGATION_BEFORE = re.compile(rf"\b{NEGATION}\s+(?:\w+\s+){{0,2}}$")
_CUES = {
    NEUTRAL: (
        r"have you (?:ever )?(?:seen|watched|heard of)",
        r"did you (?:see|watch)",
        r"you (?:ever )?seen",
        r"heard of",
        r"heard (?:about|good things)",
        r"on my (?:watch ?)?list",
        r"my (?:watch ?)?list",
        r"(?:want(?:ed)?|wanna|plan(?:ning)?|going|gonna) (?:to )?(?:see|watch)",
        r"will (?:check|watch|look)",
        r"check (?:it|that|them|those|this) out",
        r"look into",
        r"what about",
        r"how about",
        r"any good",
        r"(?:is|was) (?:it|that|this) (?:any )?good",
        r"what(?:'s| is) (?:it|that) about",
        r"not sure",
        r"(?:haven't|have not|havent|never|didn't|did not|didnt|not) (?:yet )?(?:seen|watched|saw|see|watch)",
    ),
    DISLIKED: (
        r"hat(?:e|ed|es|ing)",
        r"dislik(?:e|ed|es)",
        r"boring|bored|awful|terrible|horrible|worst|bad",
        r"sucked|sucks|stupid|dumb|lame|meh|overrated|annoying|garbage|trash|crap|cheesy",
        r"disappointing|disappointed|disappointment|waste of time",
        r"not for me",
        r"(?:couldn't|could not|couldnt|can't|cannot|cant) stand",
        r"(?:didn't|did not|didnt|don't|do not|dont) (?:\w+ )?care (?:much )?for",
        r"not a (?:big )?fan",
        r"anything (?:but|except)|except|other than",
        r"too (?:long|slow|scary|violent|gory|sad|weird)",
        r"fell asleep|turned it off|walked out",
        r"(?:not|isn't|isnt|wasn't|wasnt|aren't) (?:really )?my (?:thing|cup of tea|style|type)",
        r"(?:wasn't|was not|not) impressed",
        r"sick of|tired of",
        r"(?:i'll|ill|i will|i'd|i would|gonna|going to) pass|not interested",
    ),
    LIKED: (
        r"lov(?:e|ed|es|ing)",
        r"lik(?:e|ed|es|ing)",
        r"enjoy(?:ed|s|ing)?",
        r"ador(?:e|ed|es)",
        r"favou?rites?|favs?",
        r"great|awesome|amazing|fantastic|excellent|brilliant|wonderful|incredible",
        r"perfect|superb|masterpiece|good|best|fun|funny|hilarious|cool|nice|beautiful|solid|underrated",
        r"(?:big |huge )?fan of",
        r"(?:am|'m|im|really|so) into",
        r"similar to|along the lines of",
        r"in the mood for",
        r"remind(?:s|ed)? me of",
        r"same vibe as|such as|kind of like",
        r"(?:something|movies|films) like",
    ),
}
_CUE_PATTERNS = [(opinion, re.compile(rf"\b(?:{'|'.join(cues)})\b")) for opinion, cues in _CUES.items()]
_SEEN = re.compile(r"\b(?:seen|saw|watched|already)\b")
_ASKS = re.compile(r"\b(?:have|did|had) you\b|\byou (?:ever )?(?:seen|watched|saw)\b")


@dataclass(frozen=True)
class _Target:
    """Something a clause can hold an opinion about: a title mention or a reference to the last list."""

    start: int
    end: int
    item_ids: tuple[str, ...]
    default: Opinion
    forced: Opinion | None = None


def understand(text: str, state: SessionState, catalog: Catalog, matcher: TitleMatcher) -> Signals:
    """The signals in one user message (rules in the module docstring)."""
    text = _clip(text)
    if not text.strip():
        return Signals()
    vocab = catalog_vocabulary(catalog)
    targets, unmatched = _title_targets(text, state, catalog, matcher)
    named = tuple(dict.fromkeys(i for t in targets for i in t.item_ids))
    masked = _mask(_lower(text), [(t.start, t.end) for t in targets])
    clauses = _clause_spans(masked)
    targets = _with_references(targets, masked, clauses, state) or _refusal(masked, clauses, state, vocab)
    opinions, seen = _judge(targets, masked, clauses)
    return Signals(
        opinions=opinions,
        named=named,
        seen=seen,
        constraints=read_constraints(text, masked, vocab),
        clear_constraints=clears_constraints(masked),
        unmatched_titles=unmatched,
    )


def _clip(text: object) -> str:
    if not isinstance(text, str):
        return ""
    return text[:MAX_CHARS].replace("\x00", " ")


def _lower(text: str) -> str:
    """Lower case with the same length (characters whose lower case is longer stay as they are), ’ as '."""
    return (
        "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text).replace("’", "'").replace("‘", "'")
    )


def _clause_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each clause; the breaks themselves belong to no clause."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in CLAUSE_BREAK.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """Titles replaced by underscores of the same length: cue words and genres inside titles are not read."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = "_" * (end - start)
    return "".join(chars)


# --- titles -------------------------------------------------------------------------------------------------

_QUOTED = re.compile(
    r"\"([^\"\n]{1,80})\"|“([^”\n]{1,80})”|(?<!\w)'([^'\n]{1,80})'(?!\w)|‘([^’\n]{1,80})’(?!\w)"
)


def _title_targets(
    text: str, state: SessionState, catalog: Catalog, matcher: TitleMatcher
) -> tuple[list[_Target], tuple[str, ...]]:
    """Title mentions (found, or quoted and looked up) and the quoted phrases that match nothing."""
    recommended = _recommended_by_title(state, catalog)
    targets = [
        _Target(m.start, m.end, (_prefer(m.item_id, recommended, catalog),), LIKED)
        for m in matcher.find(text)
    ]
    unmatched: list[str] = []
    for quote in _QUOTED.finditer(text):
        start, end = quote.span()
        if any(t.start < end and start < t.end for t in targets):
            continue
        phrase = next(group for group in quote.groups() if group is not None).strip()
        item_id = matcher.lookup(phrase) if phrase else None
        if item_id is not None:
            targets.append(_Target(start, end, (_prefer(item_id, recommended, catalog),), LIKED))
        elif phrase and phrase not in unmatched:
            unmatched.append(phrase)
    return sorted(targets, key=lambda t: t.start), tuple(unmatched)


def _title_key(item_id: str, catalog: Catalog) -> tuple[str, ...]:
    item = catalog.get(item_id)
    return normalize_title(split_year(item.title)[0]) if item else ()


def _recommended_by_title(state: SessionState, catalog: Catalog) -> dict[tuple[str, ...], str]:
    found: dict[tuple[str, ...], str] = {}
    for item_id in state.last_recommended:
        found.setdefault(_title_key(item_id, catalog), item_id)
    return found


def _prefer(item_id: str, recommended: dict[tuple[str, ...], str], catalog: Catalog) -> str:
    """The recommended version of a title the user names, when a version of it was just recommended."""
    return recommended.get(_title_key(item_id, catalog), item_id) if recommended else item_id


# --- references to the last recommendations -----------------------------------------------------------------

_ORDINAL_WORDS = (
    "first 1st one",
    "second 2nd two",
    "third 3rd three",
    "fourth 4th four",
    "fifth 5th five",
    "sixth 6th",
    "seventh 7th",
    "eighth 8th",
    "ninth 9th",
    "tenth 10th",
)
_ORDINALS = {word: rank for rank, words in enumerate(_ORDINAL_WORDS) for word in words.split()}
_ORDINALS.update(last=-1, final=-1)
_ORD = "(" + "|".join(w for w in _ORDINALS if w not in {"one", "two", "three", "four", "five"}) + ")"
_AFTER_ORD = (
    r"(?=\s*(?:$|[.,!?;:)]|is\b|was\b|sounds\b|looks\b|seems\b|already\b|too\b|though\b|and\b|or\b|but\b))"
)
_RANK_REFS = [
    re.compile(rf"\b(?:the\s+)?{_ORD}\s+(?:one|pick|option|suggestion|recommendation|choice|title)\b"),
    re.compile(rf"\bthe\s+{_ORD}\b{_AFTER_ORD}"),
    re.compile(r"(?:#|\bnumber\s+|\bno\.\s*|\boption\s+)(\d{1,2}|one|two|three|four|five)\b"),
]
_TOP_REF = re.compile(r"\b(?:that|this)\s+(?:one|movie|film|recommendation|suggestion)\b(?!\s*_)")
_BOTH_REF = re.compile(r"\bboth\b(?!\s+\S+\s+and\b)")
_ALL_REF = re.compile(
    r"\b(?:all (?:of )?(?:them|those|these|three|four|five|the above)|them all|each of them"
    r"|every one of them)\b"
)
_NONE_REF = re.compile(
    r"\b(?:none of (?:them|those|these|the above|your suggestions|the suggestions)"
    r"|neither(?: of (?:them|those|these))?(?!\s+(?:do|did|am|have|can|would|will|is|was)\b))\b"
)
_IT_REF = re.compile(r"\bit\b|\bthat\b(?=\s*(?:$|[.,!?;]|too\b|already\b|either\b|before\b|one\b))")
_PLURAL_REF = re.compile(r"\b(?:they|them|those|these)\b")


def _with_references(
    targets: list[_Target], masked: str, clauses: list[tuple[int, int]], state: SessionState
) -> list[_Target]:
    """The title targets plus references to the last list and pronouns in opinionated clauses."""
    last = tuple(state.last_recommended)
    found = list(targets)
    if last:
        found += _explicit_references(masked, last)
    named = sorted(found, key=lambda t: t.start)
    for start, end in clauses:
        if any(start <= t.start < end for t in found) or not _has_opinion_or_seen(masked[start:end]):
            continue
        pronoun = _IT_REF.search(masked, start, end) or _PLURAL_REF.search(masked, start, end)
        if not pronoun:
            continue
        earlier = [t for t in named if t.end <= start]
        if earlier:
            found.append(_Target(pronoun.start(), pronoun.end(), earlier[-1].item_ids, NEUTRAL))
        elif last:
            ids = last[:1] if pronoun.re is _IT_REF else last
            found.append(_Target(pronoun.start(), pronoun.end(), ids, NEUTRAL))
    return sorted(found, key=lambda t: t.start)


_REFUSAL = re.compile(
    r"\b(?:no,? thanks?|no,? thank you|not interested|(?:i'll|ill|i will|i'd|i would|gonna|going to) pass"
    r"|(?:won't|wont|will not|wouldn't|wouldnt|would not) (?:be )?(?:watch|see)"
    r"|(?:don't|do not|dont) (?:really )?(?:want|wanna|feel like) (?:to )?(?:watch|see)"
    r"|(?:don't|do not|dont) (?:really )?want to(?=\s*$)"
    r"|(?:doesn't|does not|doesnt|don't|dont|do not) (?:really )?(?:sound|seem|look)s? (?:very )?"
    r"(?:good|interesting|appealing|fun|great)"
    r"|sounds? (?:boring|bad|awful|terrible|dumb|stupid|lame)"
    r"|not (?:really )?(?:into|interested in) (?:it|that|those|them|this)\b)"
)


def _refusal(masked: str, clauses: list[tuple[int, int]], state: SessionState, vocab: Vocabulary) -> list[_Target]:
    """A reply that turns down the movies just suggested without naming any ("no thanks", "I won't watch that",
    "doesn't sound good"): a dislike of each of them. Only right after a suggestion, and not of a clause that
    speaks of a genre ("I don't want to watch horror" is a constraint)."""
    last = tuple(state.last_recommended)
    if not last or not (state.turns and state.turns[-1].recommended):
        return []
    for start, end in clauses:
        match = _REFUSAL.search(masked, start, end)
        if match and not any(read_genres(masked[start:end], vocab)):
            return [_Target(match.start(), match.end(), last, NEUTRAL, DISLIKED)]
    return []


def _explicit_references(masked: str, last: tuple[str, ...]) -> list[_Target]:
    found: list[_Target] = []
    for pattern in _RANK_REFS:
        for match in pattern.finditer(masked):
            word = match.group(1)
            rank = int(word) - 1 if word.isdigit() else _ORDINALS[word]
            if -len(last) <= rank < len(last) and not _overlaps(found, match):
                found.append(_Target(match.start(), match.end(), (last[rank],), NEUTRAL))
    for pattern, ids, forced in (
        (_NONE_REF, last, DISLIKED),
        (_ALL_REF, last, None),
        (_BOTH_REF, last[:2], None),
        (_TOP_REF, last[:1], None),
    ):
        for match in pattern.finditer(masked):
            if not _overlaps(found, match):
                chosen = last[:2] if match.group() == "neither" else ids
                found.append(_Target(match.start(), match.end(), chosen, NEUTRAL, forced))
    return found


def _overlaps(targets: list[_Target], match: re.Match) -> bool:
    return any(t.start < match.end() and match.start() < t.end for t in targets)


def _has_opinion_or_seen(clause: str) -> bool:
    if _SEEN.search(clause) and not _ASKS.search(clause):
        return True
    return any(opinion != NEUTRAL for _, _, opinion in _cues(clause))


# --- opinions and seen --------------------------------------------------------------------------------------


def _judge(
    targets: list[_Target], masked: str, clauses: list[tuple[int, int]]
) -> tuple[tuple[tuple[str, Opinion], ...], tuple[str, ...]]:
    """(item_id, opinion) in first-mention order, the last liked/disliked opinion winning; the seen items."""
    opinions: dict[str, Opinion] = {}
    seen: list[str] = []
    for target in _with_trailing_opinions(targets, masked, clauses):
        start, end = _clause_of(target, clauses)
        clause = masked[start:end]
        asks = "?" in masked[end : end + 3]
        span = (target.start - start, target.end - start)
        opinion = target.forced or _opinion(clause, *span, target.default, asks)
        is_seen = _says_seen(clause) and target.forced is None
        for item_id in target.item_ids:
            if opinion != NEUTRAL or item_id not in opinions:
                opinions[item_id] = opinion
            if is_seen and item_id not in seen:
                seen.append(item_id)
    return tuple(opinions.items()), tuple(seen)


def _clause_of(target: _Target, clauses: list[tuple[int, int]]) -> tuple[int, int]:
    return next(((s, e) for s, e in clauses if s <= target.start < e), (target.start, target.end))


def _with_trailing_opinions(
    targets: list[_Target], masked: str, clauses: list[tuple[int, int]]
) -> list[_Target]:
    """A clause that holds an opinion but names nothing ("I have seen X but not a fan") speaks of the target
    just before it, when that target's own clause said no liked/disliked cue."""
    found = list(targets)
    for index, (start, end) in enumerate(clauses):
        if index == 0 or any(start <= t.start < end for t in targets):
            continue
        cues = [c for c in _cues(masked[start:end]) if c[2] != NEUTRAL]
        before = [t for t in targets if t.end <= start]
        if not cues or not before or before[-1].forced:
            continue
        own_start, own_end = _clause_of(before[-1], clauses)
        if own_end <= clauses[index - 1][0] or any(c[2] != NEUTRAL for c in _cues(masked[own_start:own_end])):
            continue
        found.append(_Target(start + cues[0][0], start + cues[0][1], before[-1].item_ids, before[-1].default))
    return sorted(found, key=lambda t: t.start)


def _opinion(clause: str, start: int, end: int, default: Opinion, question: bool = False) -> Opinion:
    """The opinion of the cue nearest to clause[start:end], negation flipping liked and disliked."""
    cues = _cues(clause)
    if not cues:
        neutral = question or _says_seen(clause) or bool(_ASKS.search(clause))
        return NEUTRAL if neutral else default
    cue_start, cue_end, opinion = min(cues, key=lambda c: (max(c[0] - end, start - c[1], 0), c[0] > start))
    if opinion != NEUTRAL and _NEGATION_BEFORE.search(clause[:cue_start]):
        return DISLIKED if opinion == LIKED else LIKED
    return opinion


@lru_cache(maxsize=512)
def _cues(clause: str) -> tuple[tuple[int, int, Opinion], ...]:
    """Cue words in a clause, in order; a cue inside a longer one is dropped."""
    found = sorted(
        (
            (m.start(), m.end(), opinion)
            for opinion, pattern in _CUE_PATTERNS
            for m in pattern.finditer(clause)
        ),
        key=lambda cue: (cue[0], cue[0] - cue[1]),
    )
    kept: list[tuple[int, int, Opinion]] = []
    cover = (-1, -1)
    for cue in found:
        if cue[1] <= cover[1] and (cue[0], cue[1]) != cover:
            continue
        kept.append(cue)
        if cue[1] > cover[1]:
            cover = (cue[0], cue[1])
    return tuple(kept)


def _says_seen(clause: str) -> bool:
    """Whether the clause says "seen", "saw", "watched" or "already", not negated nor asked of the user."""
    if _ASKS.search(clause):
        return False
    return any(not _NEGATION_BEFORE.search(clause[: m.start()]) for m in _SEEN.finditer(clause))
