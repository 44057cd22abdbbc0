"""What one user message asks for: genres, years and people to look for or avoid, or to start over.
`read_constraints(text, masked, catalog_vocabulary(catalog))` → `Constraints`, called by
`agent.understand.understand`.

Constraints (titles masked first, so "Scary Movie" is no genre and "2001: A Space Odyssey" no year):
- genres: the catalog's own genre names (and plurals), plus synonyms mapped to genres that exist in the
  catalog ("funny"/"comedies" → Comedy, "scary" → Horror, "sci-fi"/"science fiction" → Sci-Fi,
  "animated"/"cartoon" → Animation, "romantic" → Romance, "rom-com" → Romance + Comedy, "kids"/"family" →
  Family, ...). A genre is excluded when a negation leads to it through filler words ("no horror", "nothing
  too scary", "not a comedy", "don't want anything scary", "hate horror", "not in the mood for horror",
  "anything but horror") or it "is not my thing"; excluded wins over wanted in the same message.
- years: bounds are inclusive. "after/since/from N on/newer than N/N or later/nothing before N" → min_year N;
  "before/older than/prior to/earlier than N" → max_year N − 1 (strictly before); "until/up to/no later than/
  nothing after N/N or earlier" → max_year N; "between N and M", "N-M", "from N to M" → N..M; "from N", "in N"
  after movie words, "made/released in N", "N movies" → N..N; decades "the 90s", "90's", "1990s", "nineties" →
  1990..1999 ("early" 0–3, "mid" 3–6, "late" 6–9; "after the 90s" → min 2000, "before the 90s" → max 1989);
  "recent", "newer", "latest", "new movies" → min_year = newest catalog year − 3; "old", "older", "classics",
  "oldies", "black and white" → max_year 1979 (negated: "nothing old" → min_year 1980, "nothing recent" →
  max_year newest − 4). Contradictory bounds (min > max) are dropped.
- people: full names (two words or more) of the catalog's directors, cast and writers, case-insensitive and
  word-bounded, possessive allowed ("Spielberg's"); a name of common words only ("Jack Black") must be
  capitalised.
- clear_constraints: "anything is fine", "anything goes", "no preference", "doesn't matter",
  "forget/clear/drop the filters/constraints/preferences", "start over".
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

from agent.types import Constraints
from retrieval.catalog import Catalog
from retrieval.titles import COMMON_WORDS, normalize_title, normalize_word

OLD_MAX_YEAR = 1979
"""What "old" and "classic" mean: released in or before this year."""
RECENT_YEARS = 3
"""What "recent" means: released in the catalog's newest RECENT_YEARS + 1 years."""
NEGATION = (
    r"(?:not|never|hardly|barely|nor|\w+n't|dont|didnt|doesnt|wasnt|isnt|cant|couldnt|wouldnt|havent|hasnt"
    r"|wont|arent|werent|aint)"
)
"""A negating word (a regular expression)."""
CLAUSE_BREAK = re.compile(
    r"[.;!?\n]+|,(?!\d)|\b(?<!anything )(?<!everything )but\b|\balthough\b|\bthough\b|\bhowever\b|\bwhereas\b"
    r"|(?<!a )\bwhile\b"
)
"""Where one clause of a message ends and the next begins."""


@dataclass(frozen=True)
class Vocabulary:
    """What a message is read against: a catalog's genres, people and newest year (`catalog_vocabulary`, once per
    catalog)."""

    genres: dict[str, str]
    """Normalised genre name ("scifi") → the catalog's name ("Sci-Fi")."""
    genre_patterns: list[tuple[re.Pattern, tuple[str, ...]]]
    people: dict[tuple[str, ...], str]
    newest_year: int | None
    size: int


# --- genres --------------------------------------------------------------------------------------------

_GENRE_SYNONYMS = {
    "comedy": r"funn(?:y|ier|iest)|comed(?:y|ies)|comedic|hilarious|laughs?|light-hearted|lighthearted",
    "horror": r"scary|horrors?|frightening|creepy|spooky|slashers?|terrifying|zombies?",
    "scifi": r"sci[\s-]?fi|science[\s-]fiction|space|futuristic",
    "animation": r"animated|animations?|cartoons?|anime",
    "romance": r"romantic|romances?|love stor(?:y|ies)|rom[\s-]?coms?|chick flicks?",
    "thriller": r"thrillers?|suspense|suspenseful",
    "action": r"action|action[\s-]packed",
    "documentary": r"documentar(?:y|ies)|docs|docuseries",
    "family": r"kids?|family|families|children|childrens|kid[\s-]friendly|family[\s-]friendly",
    "drama": r"dramas?|dramatic",
    "crime": r"crime|gangsters?|mafia|heists?",
    "mystery": r"myster(?:y|ies)|whodunn?its?|detectives?",
    "fantasy": r"fantasy|fantasies|magical|wizards?",
    "adventure": r"adventures?|adventurous",
    "war": r"war|wars|military",
    "western": r"westerns?|cowboys?",
    "musical": r"musicals?",
    "biography": r"biograph(?:y|ies|ical)|biopics?",
    "history": r"history|historical|period pieces?",
    "sport": r"sports?",
    "filmnoir": r"noir",
}
_ROM_COM = re.compile(r"rom[\s-]?coms?")
_GENRE_NAMES = {
    "scifi": ("scifi", "sciencefiction"),
    "sport": ("sport", "sports"),
    "family": ("family", "kids"),
    "animation": ("animation", "animated"),
    "biography": ("biography", "biographical"),
}
_AMBIGUOUS_GENRES = {"short", "news", "adult", "music", "realitytv", "talkshow", "gameshow"}
_FILLERS = set(
    "a an any anything something more too very really so of the that those kind kinds type types sort sorts"
    " big huge fan fans into in mood for particularly much all overly super or nor genre".split()
)
_NEGATORS = set(
    "no not nothing none never without avoid hate hates hated dislike dislikes except sick tired enough nope"
    " neither skip nor".split()
)
_NEGATABLE_VERBS = {"like", "want", "enjoy", "watch", "love", "care", "do", "see", "fancy", "need"}
_NOT_MY_THING = re.compile(
    r"\s*(?:movies?|films?|flicks?|ones|stuff)?\s*(?:is|are|'s|'re)?\s*(?:not|n't|nt)\s+"
    r"(?:really\s+|very\s+)?(?:my thing|for me|my cup of tea|my style|my favou?rite)"
)


def _genre_patterns(vocab_genres: dict[str, str]) -> list[tuple[re.Pattern, tuple[str, ...]]]:
    """(pattern, catalog genre names) for synonyms and the catalog's own genre names."""
    patterns: list[tuple[re.Pattern, tuple[str, ...]]] = []
    for key, synonyms in _GENRE_SYNONYMS.items():
        genre = next((vocab_genres[n] for n in _GENRE_NAMES.get(key, (key,)) if n in vocab_genres), None)
        if genre:
            patterns.append((re.compile(rf"\b(?:{synonyms})\b"), (genre,)))
    for norm, genre in vocab_genres.items():
        if norm not in _AMBIGUOUS_GENRES and len(norm) >= 3:
            words = r"[\s-]?".join(re.escape(part) for part in re.split(r"[\s\-]+", genre.lower()) if part)
            patterns.append((re.compile(rf"\b{words}(?:s|es)?\b"), (genre,)))
    return patterns


def read_genres(masked: str, vocab: Vocabulary) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wanted, excluded) genres, in order of appearance."""
    matches = [(m, genres) for pattern, genres in vocab.genre_patterns for m in pattern.finditer(masked)]
    genre_words = {m.group() for m, _ in matches}
    hits: list[tuple[int, str, bool]] = []
    for match, genres in matches:
        extra = (
            (vocab.genres["comedy"],)
            if _ROM_COM.fullmatch(match.group()) and "comedy" in vocab.genres
            else ()
        )
        for genre in (*genres, *extra):
            hits.append((match.start(), genre, _negated(masked, match, genre_words)))
    hits.sort(key=lambda hit: hit[0])
    excluded = _unique(genre for _, genre, negated in hits if negated)
    wanted = _unique(genre for _, genre, negated in hits if not negated and genre not in excluded)
    return wanted, excluded


def _negated(masked: str, match: re.Match, skip: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether a negation leads to this word through filler words (and the words in `skip`: "no horror or
    thrillers"), or it "is not my thing"."""
    if _NOT_MY_THING.match(masked, match.end()):
        return True
    window = max(0, match.start() - 80)
    clause_start = max(
        (m.end() for m in CLAUSE_BREAK.finditer(masked, window, match.start())), default=window
    )
    words = re.findall(r"[\w']+", masked[clause_start : match.start()])
    while words and (words[-1] in _FILLERS or words[-1] in skip):
        words.pop()
    if not words:
        return False
    last, before = words[-1], words[-2] if len(words) > 1 else ""
    if last in _NEGATORS or (last == "but" and before in {"anything", "everything"}):
        return True
    if last == "than" and before in {"other", "rather"}:
        return True
    return last in _NEGATABLE_VERBS and bool(re.fullmatch(NEGATION, before))


_YEAR = r"(1[89]\d\d|20\d\d)"
_DECADE = (
    r"(?:the\s+)?(?:(early|mid|late)[\s-]+)?(?:(?:(1[89]|20)(\d)0|'?(\d)0)'?s\b"
    r"|(twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties))"
)
_DECADE_WORDS = dict(
    zip(
        "twenties thirties forties fifties sixties seventies eighties nineties".split(),
        range(2, 10),
        strict=True,
    )
)
_MIN_WORDS = (
    r"after|since|newer than|later than|post|no older than|(?:nothing|not|no movies?|none) (?:before|older"
    r" than|earlier than|prior to)|no earlier than"
)
_MAX_EXCL_WORDS = r"before|older than|prior to|earlier than|pre"
_MAX_INCL_WORDS = (
    r"until|till|up to|up until|through|no later than|no newer than|(?:nothing|not|no movies?|none)"
    r" (?:after|newer than|later than|past|since)"
)
_RANGE = re.compile(
    rf"\b(?:between\s+{_YEAR}\s+and\s+{_YEAR}|from\s+{_YEAR}\s+(?:to|till|until|through)\s+{_YEAR}"
    rf"|{_YEAR}\s*(?:-|–|to)\s*{_YEAR})\b"
)


def _years(masked: str, newest: int | None) -> tuple[int | None, int | None]:
    """(min_year, max_year) stated in the text. Where phrases overlap the earlier finder wins; numbers
    override each other in finder order, and "recent"/"old" only fill a bound that no number set."""
    low: int | None = None
    high: int | None = None
    taken: list[tuple[int, int]] = []
    for find in (_year_ranges, _year_bounds, _decades, _exact_years, _relative_years):
        relative = find is _relative_years
        for (start, end), lo, hi in sorted(find(masked, newest), key=lambda hit: hit[0][0] - hit[0][1]):
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            low = lo if lo is not None and not (relative and low is not None) else low
            high = hi if hi is not None and not (relative and high is not None) else high
    if low is not None and high is not None and low > high:
        return None, None
    return low, high


YearHit = tuple[tuple[int, int], int | None, int | None]


def _year_ranges(text: str, newest: int | None) -> list[YearHit]:
    hits = []
    for match in _RANGE.finditer(text):
        years = [int(g) for g in match.groups() if g]
        hits.append((match.span(), min(years), max(years)))
    return hits


def _year_bounds(text: str, newest: int | None) -> list[YearHit]:
    hits: list[YearHit] = []
    target = rf"(?:{_YEAR}|{_DECADE})"
    for words, kind in ((_MIN_WORDS, "min"), (_MAX_EXCL_WORDS, "max_excl"), (_MAX_INCL_WORDS, "max")):
        for match in re.finditer(rf"\b(?:{words})[\s-]+{target}", text):
            hits.append((match.span(), *_bound(match, kind)))
    for match in re.finditer(
        rf"\b{_YEAR}\s*(?:or|and)\s*(later|newer|after|up|beyond|earlier|older|before)\b"
        rf"|\b{_YEAR}\s*\+|\bfrom\s+{_YEAR}\s+on(?:wards?)?\b",
        text,
    ):
        year = int(next(g for g in match.groups() if g and g[0].isdigit()))
        older = match.group(2) in {"earlier", "older", "before"}
        hits.append((match.span(), None if older else year, year if older else None))
    return hits


def _bound(match: re.Match, kind: str) -> tuple[int | None, int | None]:
    """The (min, max) a comparator and its year or decade say."""
    groups = match.groups()
    if groups[0]:
        year = int(groups[0])
        first, last = year, year
    else:
        first, last = _decade_span(groups[1:])
    phrase = match.group().split()[0]
    if kind == "min":
        after_decade = not groups[0] and phrase in {"after", "post", "later", "newer"}
        return (last + 1 if after_decade else first), None
    if kind == "max_excl":
        return None, first - 1
    return None, last


def _decade_span(groups: tuple) -> tuple[int, int]:
    part, century, digit, short_digit, word = groups
    tens = int(digit or short_digit or 0) if not word else _DECADE_WORDS[word]
    if century:
        start = int(century) * 100 + tens * 10
    else:
        start = (2000 if tens <= 1 else 1900) + tens * 10
    offsets = {"early": (0, 3), "mid": (3, 6), "late": (6, 9)}.get(part or "", (0, 9))
    return start + offsets[0], start + offsets[1]


def _decades(text: str, newest: int | None) -> list[YearHit]:
    hits: list[YearHit] = []
    for match in re.finditer(rf"\b{_DECADE}", text):
        if not re.search(r"\b(?:my|our|their|his|her|your)\s+$", text[: match.start()]):
            hits.append((match.span(), *_decade_span(match.groups())))
    return hits


def _exact_years(text: str, newest: int | None) -> list[YearHit]:
    pattern = (
        rf"\b(?:from|(?:released|made) in|(?:movies?|films?|ones?|something|anything)"
        rf" (?:from|in|of))\s+{_YEAR}\b|\b{_YEAR}\s+(?:movies?|films?)\b"
    )
    hits: list[YearHit] = []
    for match in re.finditer(pattern, text):
        year = int(match.group(1) or match.group(2))
        hits.append((match.span(), year, year))
    return hits


_RECENT = re.compile(
    r"\b(?:recent|newer|latest|newest|modern|current)\b"
    r"|\bnew\s+(?:movies?|films?|releases?|ones?|stuff|titles?)\b"
)
_OLD = re.compile(
    r"\b(?:old(?:er)?|oldies?|vintage|black[\s-]and[\s-]white|classic (?:movies?|films?|ones)|classics)\b"
)
_NOT_OLD = re.compile(
    r"\b(?:years?|yrs?|how|\d+)[\s-]+old\b|\bold(?:er)?[\s-](?:school|friends?|days|times|brother|sister|son"
    r"|daughter|kids?|child|children|man|woman|lady|guy|people)\b"
)


def _relative_years(text: str, newest: int | None) -> list[YearHit]:
    hits: list[YearHit] = []
    for match in _RECENT.finditer(text) if newest is not None else ():
        negated = _negated(text, match)
        hits.append(
            (match.span(), None, newest - RECENT_YEARS - 1)
            if negated
            else (match.span(), newest - RECENT_YEARS, None)
        )
    for match in _OLD.finditer(text):
        if any(s <= match.start() < e for s, e in (m.span() for m in _NOT_OLD.finditer(text))):
            continue
        negated = _negated(text, match)
        hits.append((match.span(), OLD_MAX_YEAR + 1, None) if negated else (match.span(), None, OLD_MAX_YEAR))
    return hits


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _people(text: str, masked: str, vocab: Vocabulary) -> tuple[str, ...]:
    """Catalog people named in full ("tom hanks", "Steven Spielberg's"); a name made of common words only
    ("Jack Black") must be capitalised in the original text."""
    words = [(match, normalize_word(re.sub(r"'s$", "", match.group()))) for match in _WORD.finditer(masked)]
    found: list[str] = []
    for i in range(len(words)):
        for n in (4, 3, 2):
            key = tuple(word for _, word in words[i : i + n])
            name = vocab.people.get(key)
            if name is None or name in found:
                continue
            if all(word in COMMON_WORDS for word in key) and not all(
                text[match.start()].isupper() for match, _ in words[i : i + n]
            ):
                continue
            found.append(name)
            break
    return tuple(found)


_CLEAR = re.compile(
    r"\b(?:anything(?:'s| is) fine|anything goes|any genre is fine|no preferences?|start over"
    r"|(?:don't|do not|dont) have (?:a|any) preferences?|(?:doesn't|does not|doesnt) matter"
    r"|(?:forget|clear|drop|reset|remove) (?:about )?(?:the |my |all (?:the |my )?)?"
    r"(?:filters?|constraints?|requirements?|preferences?|criteria))\b"
)


def clears_constraints(masked: str) -> bool:
    """Whether the message drops what was asked for so far ("anything goes", "start over")."""
    return bool(_CLEAR.search(masked))


def read_constraints(text: str, masked: str, vocab: Vocabulary) -> Constraints:
    """The genres, years and people a message asks for (or excludes); `masked` is its lower-cased text with
    the titles masked (`understand`)."""
    wanted, excluded = read_genres(masked, vocab)
    low, high = _years(masked, vocab.newest_year)
    return Constraints(
        genres=wanted,
        excluded_genres=excluded,
        min_year=low,
        max_year=high,
        people=_people(text, masked, vocab),
    )


def _unique(values) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# --- per-catalog vocabulary ---------------------------------------------------------------------------------

_VOCABS: dict[int, tuple[weakref.ref, Vocabulary]] = {}


def catalog_vocabulary(catalog: Catalog) -> Vocabulary:
    """Genres, people and the newest year of a catalog, cached while the catalog lives and keeps its size."""
    cached = _VOCABS.get(id(catalog))
    if cached and cached[0]() is catalog and cached[1].size == len(catalog):
        return cached[1]
    genres: dict[str, str] = {}
    people: dict[tuple[str, ...], str] = {}
    for item in catalog:
        for genre in item.genres:
            genres.setdefault(re.sub(r"[^a-z0-9]", "", genre.lower()), genre)
        for name in (*item.directors, *item.cast, *item.writers):
            key = normalize_title(re.sub(r"\s*\(.*?\)", "", name))
            if len(key) >= 2:
                people.setdefault(key, name)
    years = [item.year for item in catalog if item.year]
    vocab = Vocabulary(genres, _genre_patterns(genres), people, max(years) if years else None, len(catalog))
    for key in [key for key, (ref, _) in _VOCABS.items() if ref() is None]:
        del _VOCABS[key]
    _VOCABS[id(catalog)] = (weakref.ref(catalog), vocab)
    return vocab
