"""Explanations that say only what is true: compose them from facts, and check the claims of generated ones.

A *claim* is a concrete, checkable statement in an explanation: a person (any name the catalog knows), a genre, a
year or decade, a country, a language, or another movie ("like The Matrix"). A claim is supported when it is one of
the item's own facts — or, for another movie, when the user liked it and it shares a fact with the item.
Everything else is unsupported, and so is every word that neither the facts nor a short list of connectives
(CONNECTIVES) license: "a film that captivated audiences worldwide" makes claims no fact supports.
`FactChecker.check` is what the turn uses to accept or replace an LLM explanation, and what the offline evaluation
reports as faithfulness.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agent.types import Constraints, SessionState
from retrieval.catalog import Catalog, Item
from retrieval.titles import TitleMatcher

GENRE_WORDS = {
    "comedy": "Comedy", "comedies": "Comedy", "funny": "Comedy", "hilarious": "Comedy",
    "sci-fi": "Sci-Fi", "science fiction": "Sci-Fi", "scifi": "Sci-Fi",
    "horror": "Horror", "scary": "Horror", "thriller": "Thriller", "thrillers": "Thriller",
    "animated": "Animation", "animation": "Animation", "romance": "Romance", "romantic": "Romance",
    "drama": "Drama", "dramas": "Drama", "action": "Action", "adventure": "Adventure", "crime": "Crime",
    "mystery": "Mystery", "fantasy": "Fantasy", "family": "Family", "musical": "Musical", "war": "War",
    "western": "Western", "documentary": "Documentary", "biography": "Biography", "biopic": "Biography",
    "historical": "History", "history": "History", "sports": "Sport", "sport": "Sport", "music": "Music",
    "noir": "Film-Noir", "superhero": None, "dystopian": None,
}
"""Words that claim a genre. None: a genre-like claim no catalog fact can support (always unsupported)."""

CONNECTIVES = frozenset("""
a an the and or but nor so yet also too as at by for from in into of on to with without about than then
it its it's this that these those there here which who whom whose what where when while if because since both
is are was were be been being has have had do does did will would can could may might should must shall
you you'd you'll you're you've your yours we our us i me my
like liked likes love loved loves enjoy enjoys fan fans
film films movie movies picture story
directed direct director directors directing starring stars star starred features featuring feature cast
written writer writers wrote screenplay co-written co-directed made released release year years
same another other more most similar shares share sharing common again just only one ones
genre genres mix blend combination combines combining language country
recommend recommended recommendation pick picks choice suggest suggestion worth watch watching try
""".split())
"""Words an explanation may use freely: function words and the vocabulary of citing facts. Every other word must
come from the item's facts, its title or the title of a movie the user liked, or it counts as an unsupported claim."""

ROLE_CUES = {
    "directed": "director", "director": "director", "directors": "director", "direct": "director",
    "co-directed": "director", "starring": "starring", "stars": "starring", "star": "starring",
    "starred": "starring", "featuring": "starring", "features": "starring", "cast": "starring",
    "written": "writer", "writer": "writer", "writers": "writer", "wrote": "writer", "screenplay": "writer",
    "co-written": "writer",
}
"""Words that say which credit the names after them have (until the next cue)."""

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_YEAR_AFTER_TITLE = re.compile(r"\s*\(\s*\d{4}\s*\)|\s+\d{4}\b")
_DECADE = re.compile(r"\b(?:(1[89]|20)(\d)0s|'?(\d)0s)\b")
_WORD = re.compile(r"[\w'-]+")
_COMPARISON = re.compile(r"\b(?:like|liked|love|loved|enjoyed|similar to|fans? of|as in|same \w+ as)\W*$",
                         re.IGNORECASE)
"""What must come right before another movie's title for the mention to be a comparison ("like The Matrix");
another title anywhere else ("The Matrix is a war film", said of Saving Private Ryan) is an unsupported claim."""
_SAID_LIKED = re.compile(r"\W*(?:which |that )?you (?:really )?(?:liked|loved|enjoyed)\b", re.IGNORECASE)
"""What, right after a title, says the person liked that movie."""
_LIKE_BEFORE = re.compile(r"\b(?:like|similar to|fans? of)\W*$", re.IGNORECASE)
"""What, right before a title, compares something with that movie."""


@dataclass(frozen=True)
class Claim:
    kind: str  # person | director | starring | writer | genre | year | decade | country | language | movie
    #            (a comparison: "like <movie>") | movie_named (another title named any other way) | unverified
    #            | misspelt_title (a title written with letters changed: never the item's or a liked movie's)
    value: str


@dataclass(frozen=True)
class ClaimCheck:
    supported: tuple[Claim, ...] = ()
    unsupported: tuple[Claim, ...] = ()

    @property
    def grounded(self) -> bool:
        """No unsupported claim and at least one supported fact cited."""
        return not self.unsupported and bool(self.supported)


class FactChecker:
    """Finds the claims in a text and checks them against an item's facts and the session memory."""

    def __init__(self, catalog: Catalog, matcher: TitleMatcher) -> None:
        self.catalog = catalog
        self.matcher = matcher
        self.people: dict[str, str] = {}
        self.countries: dict[str, str] = {}
        self.languages: dict[str, str] = {}
        for item in catalog:
            for name in (*item.directors, *item.cast, *item.writers):
                if " " in name.strip():  # single-word names collide with ordinary words
                    self.people[name.casefold()] = name
            self.countries.update({c.casefold(): c for c in item.countries})
            self.languages.update({lang.casefold(): lang for lang in item.languages})

    def find_claims(self, text: str, mentions: list | None = None) -> list[Claim]:
        """Every concrete claim in `text`, in a stable order. A movie title (and the year written after it) is one
        claim, so words inside "Scary Movie (2000)" claim neither a genre nor a year. `mentions`: the title matcher's
        mentions of `text`, when the caller has them already."""
        mentions = self.matcher.find(text) if mentions is None else mentions
        original, text = text, _blank_titles(text, mentions)
        lowered = text.casefold()
        words = _WORD.findall(lowered)
        grams = sorted({" ".join(words[i:i + size]) for size in (1, 2, 3, 4) for i in range(len(words) - size + 1)})
        claims = self._people_with_roles(words)
        claims += [Claim("country", self.countries[g]) for g in grams if g in self.countries]
        claims += [Claim("language", self.languages[g]) for g in grams if g in self.languages]
        claims += [Claim("genre", GENRE_WORDS[g] or g) for g in grams if g in GENRE_WORDS]
        claims += [Claim("year", y) for y in sorted(set(_YEAR.findall(text)))]
        claims += [Claim("decade", d) for d in sorted({m.group(0) for m in _DECADE.finditer(lowered)})]
        claims += [Claim("movie" if _COMPARISON.search(original[:m.start]) else "movie_named", m.item_id)
                   for m in mentions]
        return list(dict.fromkeys(claims))

    def _people_with_roles(self, words: list[str]) -> list[Claim]:
        """Catalog people named in `words`; the nearest role cue before a name ("directed by", "starring",
        "written by") makes the claim about that role, otherwise it is a claim of any credit ("person")."""
        claims, role, i = [], "person", 0
        while i < len(words):
            role = ROLE_CUES.get(words[i], role)
            for size in (4, 3, 2):
                name = self.people.get(" ".join(words[i:i + size]))
                if name:
                    claims.append(Claim(role, name))
                    i += size - 1
                    break
            i += 1
        return claims

    def check(self, text: str, item: Item, state: SessionState) -> ClaimCheck:
        """Sort the claims of `text` into supported and unsupported; words no fact licenses are unsupported too."""
        supported, unsupported = [], []
        found = self.matcher.find(text)  # once: the claims and the word check below both use it
        unsupported += [Claim("misspelt_title", m.surface) for m in found if m.edits]  # "The Exorcism" for The Exorcist
        mentions = [m for m in found if not m.edits]
        itself = {m.item_id for m in mentions if self._names_the_item(text, m, item)}
        unsupported += [Claim("year", year) for m in mentions if (year := self._wrong_year(text, m, item))]
        for claim in self.find_claims(text, found):
            if claim.kind in ("movie", "movie_named") and (claim.value in itself
                                                            or _is_the_item(claim.value, item, self.catalog)):
                if claim.value not in state.liked and _said_to_be_liked(text, mentions, claim.value):
                    unsupported.append(Claim("movie", claim.value))  # "Like <the item itself>, which you liked"
                continue  # naming the item itself cites no fact
            (supported if _supports(claim, item, state, self.catalog) else unsupported).append(claim)
        licensed = CONNECTIVES | self._licensed_words(item, state)
        for word in dict.fromkeys(_WORD.findall(_blank_titles(text, mentions).casefold())):
            parts = [p for p in word.split("-") if p.strip("'")]
            if parts and word not in licensed and not all(p in licensed or _YEAR.fullmatch(p) for p in parts):
                unsupported.append(Claim("unverified", word))
        return ClaimCheck(tuple(supported), tuple(unsupported))

    def _names_the_item(self, text: str, mention, item: Item) -> bool:
        """A mention of the item's own title ("Ghostbusters" for Ghostbusters (2016), which the matcher may read as
        the 1984 film), unless a different year is written with it."""
        written = _written_year(text, mention, item.title)
        return self._same_title(mention, item) and (not written or written == str(item.year))

    def _wrong_year(self, text: str, mention, item: Item) -> str | None:
        """The year written with the item's own title when it is not the item's ("Inception (1999)"); None when it
        is the year of a namesake the mention names ("Like Ghostbusters (1984), which you liked": a claim about that
        movie, checked as one)."""
        if not self._same_title(mention, item):
            return None
        year = _written_year(text, mention, item.title)  # the mention's own movie is the item or a namesake
        return year if year not in (None, str(item.year), str(self.catalog[mention.item_id].year)) else None

    def _same_title(self, mention, item: Item) -> bool:
        other = self.catalog.get(mention.item_id)
        return other is not None and other.title.casefold() == item.title.casefold()

    def _licensed_words(self, item: Item, state: SessionState) -> set[str]:
        """Words of the item's facts and title, the titles the user liked, and the genre words its genres allow."""
        texts = [item.title, *(v for values in item.facts().values() for v in values)]
        texts += [self.catalog[i].title for i in state.liked if i in self.catalog]
        words = {w for t in texts for w in _WORD.findall(t.casefold())}
        words |= {word for word, genre in GENRE_WORDS.items() if genre in item.genres}
        if item.year:
            words |= {f"{item.year % 100 // 10}0s", f"{item.year // 10}0s", f"'{item.year % 100 // 10}0s"}
        return words


def _written_year(text: str, mention, title: str) -> str | None:
    """The year written with a title mention, in it or right after it ("Heat (1995)", "Heat 1995"; not the 2001 of
    "2001: A Space Odyssey", which is part of the title), else None."""
    after = _YEAR_AFTER_TITLE.match(text, mention.end)
    written = [y for y in _YEAR.findall(mention.surface + (after.group(0) if after else "")) if y not in title]
    return written[0] if written else None


def _said_to_be_liked(text: str, mentions: list, item_id: str) -> bool:
    """A mention of this movie compared with ("like <title>") or followed by "which you liked" (loved, enjoyed)."""
    for mention in (m for m in mentions if m.item_id == item_id):
        year = _YEAR_AFTER_TITLE.match(text, mention.end)
        if _LIKE_BEFORE.search(text[:mention.start]) or _SAID_LIKED.match(text, year.end() if year else mention.end):
            return True
    return False


def _blank_titles(text: str, mentions: list) -> str:
    """`text` with each title mention, and a year written right after it, replaced by spaces."""
    chars = list(text)
    for mention in mentions:
        end = mention.end
        year = _YEAR_AFTER_TITLE.match(text, end)
        if year:
            end = year.end()
        chars[mention.start:end] = " " * (end - mention.start)
    return "".join(chars)


def _supports(claim: Claim, item: Item, state: SessionState, catalog: Catalog) -> bool:
    if claim.kind == "person":
        return claim.value in (*item.directors, *item.cast, *item.writers)
    if claim.kind in ("director", "starring", "writer"):
        return claim.value in {"director": item.directors, "starring": item.cast, "writer": item.writers}[claim.kind]
    if claim.kind == "genre":
        return claim.value in item.genres
    if claim.kind == "year":
        return item.year is not None and str(item.year) == claim.value
    if claim.kind == "decade":
        return item.year is not None and _in_decade(item.year, claim.value)
    if claim.kind == "country":
        return claim.value in item.countries
    if claim.kind == "language":
        return claim.value in item.languages
    if claim.kind == "movie":
        return claim.value in state.liked and bool(shared_facts(item, catalog[claim.value]))
    return False


def _is_the_item(item_id: str, item: Item, catalog: Catalog) -> bool:
    return item_id == item.item_id or (item_id in catalog and catalog[item_id].label == item.label)


def _in_decade(year: int, decade: str) -> bool:
    digits = re.sub(r"\D", "", decade)
    if len(digits) == 2:  # "90s"
        return year % 100 // 10 == int(digits[0])
    return year // 10 == int(digits[:3])


def shared_facts(item: Item, other: Item) -> dict[str, tuple[str, ...]]:
    """Facts `item` has in common with `other` (directors, cast, writers, genres)."""
    pairs = {"director": (item.directors, other.directors), "starring": (item.cast, other.cast),
             "writer": (item.writers, other.writers), "genre": (item.genres, other.genres)}
    shared = {key: tuple(v for v in mine if v in theirs) for key, (mine, theirs) in pairs.items()}
    return {key: values for key, values in shared.items() if values}


def compose_explanation(item: Item, state: SessionState, catalog: Catalog) -> tuple[str, dict[str, tuple[str, ...]]]:
    """A true explanation built from facts: the person asked for when the item has them (with the rest of what was
    asked), else what it shares with a liked movie, else what was asked, else its headline facts."""
    if asked_people(item, state):
        asked = _matching_constraints(item, state)
        facts = {"genre": item.genres[:2], **asked} if item.genres else asked  # "an Action film, starring ..."
        return _describe(item, facts), facts
    for liked_id in reversed(state.liked):
        liked = catalog.get(liked_id)
        shared = shared_facts(item, liked) if liked else {}
        if shared:
            return _sentence_for_shared(item, liked, shared), {**shared, "liked": (liked.label,)}
    asked = _matching_constraints(item, state)
    facts = asked or _headline_facts(item)
    return _describe(item, facts), facts


def _sentence_for_shared(item: Item, liked: Item, shared: dict[str, tuple[str, ...]]) -> str:
    facts = {"genre": shared.get("genre", ())[:2], "director": shared.get("director", ()),
             "starring": shared.get("starring", ())[:2]}
    if "writer" in shared and "director" not in shared:
        facts["writer"] = shared["writer"][:2]
    return f"Like {liked.label}, which you liked, {_describe(item, facts, label=True)}"


def asked_people(item: Item, state: SessionState) -> tuple[str, ...]:
    """The people the user asked for who directed or star in `item`: an explanation of it must name them."""
    return tuple(p for p in state.constraints.people if p in item.directors or p in item.cast)


PERSON_KINDS = ("person", "director", "starring", "writer")


def cites_what_was_asked(supported: Sequence[Claim], constraints: Constraints) -> bool:
    """A supported claim of a requested person or genre, or of the year / decade when a period was asked for."""
    period = constraints.min_year is not None or constraints.max_year is not None
    return any((c.kind in PERSON_KINDS and c.value in constraints.people)
               or (c.kind == "genre" and c.value in constraints.genres)
               or (c.kind in ("year", "decade") and period) for c in supported)


def cites_liked(supported: Sequence[Claim], state: SessionState, catalog: Catalog) -> bool:
    """A supported comparison with a liked movie (the checker supports it only when the two share facts), or a
    person who also made or starred in a liked movie."""
    liked_people = {p for i in state.liked if i in catalog
                    for p in (*catalog[i].directors, *catalog[i].cast, *catalog[i].writers)}
    return any(c.kind == "movie" or (c.kind in PERSON_KINDS and c.value in liked_people) for c in supported)


def could_cite_asked(item: Item, state: SessionState) -> bool:
    """`item` has something the user asked for (a person, a genre; its year when a period was asked)."""
    return bool(_matching_constraints(item, state))


def could_be_personal(item: Item, state: SessionState, catalog: Catalog) -> bool:
    """An explanation of `item` can tie it to this user: it has what was asked for, or shares a fact with a liked
    movie (what `compose_explanation` then cites)."""
    return could_cite_asked(item, state) or any(shared_facts(item, catalog[i]) for i in state.liked if i in catalog)


def answers_the_person(sentence: str, check: ClaimCheck, item: Item, state: SessionState, catalog: Catalog) -> bool:
    """A checked sentence says what this user needs to hear of `item`: the people they asked for that it has, what
    they asked for when it has it, and something personal (a liked movie's shared fact) when it can."""
    asked = cites_what_was_asked(check.supported, state.constraints)
    return (names_everyone(sentence, asked_people(item, state))
            and (asked or not could_cite_asked(item, state))
            and (asked or cites_liked(check.supported, state, catalog) or not could_be_personal(item, state, catalog)))


def names_everyone(sentence: str, people: Sequence[str]) -> bool:
    """True when `sentence` names each of `people` in full (case aside)."""
    return all(person.casefold() in sentence.casefold() for person in people)


def _matching_constraints(item: Item, state: SessionState) -> dict[str, tuple[str, ...]]:
    c = state.constraints
    facts = {"genre": tuple(g for g in item.genres if g in c.genres),
             "director": tuple(p for p in item.directors if p in c.people),
             "starring": tuple(p for p in item.cast if p in c.people)}
    if (c.min_year or c.max_year) and item.year:
        facts["year"] = (str(item.year),)
    return {key: values for key, values in facts.items() if values}


def _headline_facts(item: Item) -> dict[str, tuple[str, ...]]:
    facts = {"year": (str(item.year),) if item.year else (), "genre": item.genres[:2],
             "director": item.directors[:1], "starring": item.cast[:2]}
    return {key: values for key, values in facts.items() if values}


def _describe(item: Item, facts: dict[str, tuple[str, ...]], *, label: bool = False) -> str:
    """"Inception (2010) is an Action and Sci-Fi film from 2010, directed by Christopher Nolan, starring ..."."""
    genres = facts.get("genre", ())
    kind = f"{_article(genres[0])} {_join(genres)} film" if genres else "a film"
    sentence = f"{item.label if label else item.title} is {kind}"
    if facts.get("year") and not label:
        sentence += f" from {facts['year'][0]}"
    clauses = [f"{verb} {_join(facts[key])}" for key, verb in
               (("director", "directed by"), ("starring", "starring"), ("writer", "written by")) if facts.get(key)]
    return sentence + "".join(f", {clause}" for clause in clauses) + "."


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(values: tuple[str, ...] | list[str]) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]
