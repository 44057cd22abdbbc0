"""Find catalog titles in free text, and resolve a title-ish string to an item id.

    matcher = TitleMatcher(catalog)
    matcher.find("I loved The Matirx and oceans 11")
        → [TitleMention("1", 8, 18, "The Matirx", 0.85), TitleMention("8", 23, 32, "oceans 11", 1.0)]
    matcher.lookup("Matrix 1999") → "1"

Normalisation (text and titles alike): accents dropped, case folded, apostrophes removed ("Ocean's" →
"oceans"), "&" read as "and", other punctuation splits words, roman numerals II–IX and number words two–twelve
read as digits ("Rocky II" = "Rocky 2", "Ocean's Eleven" = "Ocean's 11"). A trailing "(1999)" in a catalog
title is its year.

Keys per item: the full title, also with hyphens and single letters joined ("Spiderman", "SWAT"), score 1.0;
the same without the leading article ("Matrix" → "The Matrix"), score 0.95; the part before a colon or " - ",
score 0.9 ("Police Academy 2" → "Police Academy 2: Their First Assignment"). A key shared by several items
resolves to the version the following year names ("Ocean's Eleven (1960)", "Matrix 1999"), else the full title
over an alias, then the most popular (`catalog.popularity`), then the latest year, then the smallest id.

Typos: a word of ≥ 4 letters that is not a common English word may be one edit (Damerau: insert, delete,
replace, swap) from a title word, two edits for words of ≥ 8 letters, found through a deletion-neighbourhood
(SymSpell) index of the title vocabulary. A whole title allows 1 edit when it has ≥ 6 letters, 2 when it has ≥
12; each edit costs 0.15 of the score.

False positives poison the memory, so a match must be *written like a title* whenever it could be prose.
Evidence, strongest first: quoted ("Up", 'Her'); followed by "(Year)", or by a bare year that names a version;
capitalised: every significant word starts with a capital, at least one capital is not a sentence start, "I"
or an all-caps common word ("I LOVED it") — or the sentence opens with it, it is not a pronoun or a common
verb, and the end, punctuation or a verb follows ("Heat was great", "Frozen?"; not "It was great", "Go and
see") —, the message is neither shouting nor Title Case, and a one-word match is not glued to another
capitalised word ("Bruce Willis", "Jack Black", "World War" — unless that word starts a longer title, or is a
word like "Or", "Both"). What a key needs (`required_evidence`):
- quotes or a year: digits only ("2012", "300"; a capitalised number word is enough: "Seven"), a single letter
  ("D" in ":D"), only genre, day, service or chat words ("Comedy", "Friday", "Yes", "LOL"), a one-word alias
  that is a common word ("The Rock" → "Rock"), and the full name of a catalog person unless all its words are
  common ("Emma Stone", not "Scary Movie").
- capitals (or better): one word that is common English or shorter than 5 letters ("It", "Up", "Her", "Love",
  "Go", "Saw"), any other one-word alias ("Matrix"), several words that are all common ("Say Anything", "Yes
  Man", "Home Alone"). So "i loved it", "something up my alley" and "It was great" never match It or Up; "I
  loved It" does.
- nothing: other titles match in any case ("i loved inception", "the dark knight").
Typo matches need capitals, or a window of ≥ 2 words and ≥ 8 letters; a single lowercase word is never
corrected. Overlapping candidates: one whose following year names a version wins, then the one covering more
words, fewer edits, more letters, the better key (full title, alias, before the colon), the earlier.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from retrieval.catalog import Catalog

ARTICLES = frozenset({"the", "a", "an"})
MINOR_WORDS = ARTICLES | frozenset(
    "of and or in on at to for with from by vs v de la le les du das der die el los into as is".split()
)
QUOTES = "\"'“”‘’«»`"
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|&")
_HYPHEN_BEFORE = re.compile(r"[^\W_]-\Z")
_HYPHEN_AFTER = re.compile(r"-[^\W_]")
_TRAILING_YEAR = re.compile(r"\s*\(\s*(\d{4})\s*\)\s*$")
_YEAR_AFTER = re.compile(r"[!?.'’…]{0,3}\s*\(\s*(1[89]\d\d|20\d\d)\s*\)|\s+(1[89]\d\d|20\d\d)\b")
_SUBTITLE = re.compile(r":|\s[-–—]\s")
_NUMBERS = {
    "ii": "2",
    "iii": "3",
    "iv": "4",
    "vi": "6",
    "vii": "7",
    "viii": "8",
    "ix": "9",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
}
MAX_EDITS = 2
NO_EVIDENCE, CAPITALS, QUOTES_OR_YEAR = 0, 1, 2
"""How a key must be written to match (`required_evidence`)."""

COMMON_WORDS = frozenset(
    """
a able about above absolutely accepted accident account across act action actor actors actress actually
addicted adult adults adventure adventures afraid after afternoon again against age ago agree ahead air
airport alien aliens alive all allied almost alone along already alright also always am amazing america
american among amount amusement amy an and angel angry animal animals animated animation anonymous another
answer any anybody anyone anything anyway apart apple are area arent arm army around arrival art as ask asleep
at attack attention audience audition awakening away awesome awful babe baby bachelor back bad ball band
bandits bank bar base basic bat bats battle battleship be beach beaches bear bears beast beautiful beauty
became because become bed been before began begin beginners beginning behind being believe bell beloved below
beneath best bet better between beyond big bird birds birthday bit black blade blast blended blind blockers
blood bloody blow blue boat body bodyguard bomb bone book books bookworm boom born borrowed boss both bottle
bottom bound bounty box boy boys brain brave break breathe brick bride brides bright brilliant bring broadcast
broke broken brother brothers brought brown buddy bug build bully bunny buried burn burnt bus business busy
but buy by bye cabin call called calls came camera camp can candy cannot captain captive car care career cargo
cars cartoon cartoons case cash cat catch cats caught cause celebrity chance change chaos character chase
chasing cheaters check chef chemistry chicken child children chips choice choke choose chose christmas chronic
church cinema circus city clash class classic classics clean clear click clip close closer clown club clue
coach cocktail coffin cold collateral college collide color colors coma come comedies comedy comes comic
coming commando company concussion confess conspiracy contact contract control conversation cook cool cop copy
corner could count country couple course cousin cover cowboy crash crazy create creature creep creepy crime
criminal cross crossroads crowd cry cure cut cute dad daddy daily damn dance dancer dancing danger dark
darkness date daughter day days dead deadline deal dear death decent deception decide deep defiance definitely
deliverance demon demons descent destiny detective devil did didnt die died different dinner dinosaur dirty
disaster disney disturbing do doctor does doesnt dog dogs doing dolls done dont door dope double down downfall
drama draw dread dream dreamer dreams dress drift drink drive driven driver drop drug dude duel dumb during
each early earth easy eat echo edge eight either election elephant else empire enchanted encounter end ending
enemy enjoy enough entire epic episode equals erased eraser escape even evening event ever every everybody
everyone everything evil evolution exactly exam example excellent excited exciting exit exodus expect
experience expired exposed extinction extract extras eye eyes face fact fair faith fall fallen fame familiar
family famous fan fans fantastic fantasy far fast faster father fault favorite favorites favourite fear feel
feeling fell felt fences fever few field fight fighter fighters fighting figure film films final finally find
fine fire fireproof first fish five flash flawless fled flick flight flix floor fly focus follow following
food foot football for force forever forget forgiven forgot forgotten form fortress found four fracture
frantic freaks free freedom freeze frequency friday friend friends from front frontier frozen full fun funnier
funny future game gamer games gang gangster gangsters garden gave genre get getaway gets getting ghost ghosts
giant gift gifted gigantic girl girls give given glad glass glory go god goes going gold gone good goodbye got
gravity gravy grease great green ground group grow guardian guardians guess gun guy guys ha had hair half
halloween hand happen happened happiness happy hard hardball hardware has hate have haven havent having he
head hear heard heart heat heist hell hello help her here hero hey hi high highway him his history hit hitch
hitman hold hole holes holiday holidays hollow home honest honey hook hope horror horse hospital hostage
hostiles hot hour house housewives how huge human hunt hunter hurt husband hush i ice idea identity if ill im
imagine immortals important impossible in incredible inferno inside insomnia instead interest interesting
interview into invincible is island isnt it its jack job join joke joy juice jump just justice keep keeper kid
kidnap kids kill killer killers killing kind king kingdom kiss knew knight knights know knowing lady land
large last late later laugh law lawless lead learn least leave left legend legendary legends legion less let
letter lie life lifted light like liked likes limitless line lines lion list little live lives living lockout
lol long look looking lose loser lost lot lots loud love loved lovely lover lovers loving luck lucky luv mad
made madness magic mail main make malice man maniac many mark market married mask masks master mastermind
masterpiece matter may maybe maze me mean meet men mermaid middle midnight might milk mimic mind mine minute
miracle mirror mirrors misery miss missing mission mom mommy money monster monsters month mood moon moonlight
more morning most mother move movie movies moving much murder music must mutant my name narrow near need
neighbor neighbors nerve netflix network never new next nice night nightmare nine no nobody none normal not
notebook nothing notorious now nowhere number nuts oblivion obsessed obsession occult ocean of off office oh
ok okay old on once one only open operator or order orphan other others our out outbreak outcast outside
outsider over overboard own pain panic paper paradise parenthood parents part party pass passenger passengers
passion past pay payback paycheck peace people perfect perfume person pet pets phantom phenomenon phone pick
picture pieces pirates place plan plane planes play player players please plenty point police poor popcorn
powder power precious predator premonition prestige pretty prey pride primal prime prince princess prison
prisoner prisoners problem professor prom proposal psycho punch puncture puppet puppets pure purge put queen
quest question quick quiet race radio rain rampage ransom raw ray read ready real really reason rebound red
release remains remake remember rent rescue resolution rest restless resurrection revenge rich ride right ring
rise rising risk river road robbery robot robots rock rogue roll romance room roots rope rose rubber rules run
runaway running rush sabotage sad safe said saint salt same saturday save saved saw say scandal scary school
score scream screams sea second secret see seeker seen send senseless sequel serenity series serious set seven
sex shadow shark shattered she shelter shoot shooter short shot should show shows sick side sign signs silence
simple since sing single singles siren sister sisters sit six sixth sky sleep sleeper sleepers sleepless slow
small smart smile snatch snatched sniper snow so society solace solo some someone something sometimes son song
soon sorry soul sound sounds space sparrow speak special species speed sphere spider spies splash split sport
sports spotlight spring spy stalker stand star stars start state stay staying step still stolen stop storm
story strange stranger strangers street strong stronger stuff style submarine submission such suddenly summer
sun sunday sunshine super superhero superheroes sure surprise surrogate survivor survivors suspect suspense
swan sweet switch sword take taken takers takes talk tank taste team tell ten terminal test than thank thanks
that the their them then there these they thief thing things think third this those though three thriller
thrillers throne through thunder ticket tiger tightrope time timeline times tiny titan to today together told
tomorrow tonight too took top torn tornado touch tough tower town toxic toy toys track tracks trade traffic
train traitor trap triangle trip troll trolls trouble true trust truth try turn twelve twilight twins two type
unbreakable unbroken under undercover unfaithful unknown unleashed unrest unstoppable until up upon upside us
use used vacation vampire vampires vengeance venom very victory villain visit voice volcano wait waiting walk
wall want wanted war warm warning warrior warriors was wasnt watch watched watching water way we weapon
wedding week weekend weird well went were west what when where which while whiplash white who whole why wife
wild will win wind window wings winter wish with without witness wolf woman women wonder wonderful wonderland
wont word words work world worse worst would wow write wrong yeah year years yes yesterday yet you young your
youre zombie zombies
""".split()
)
"""Common English and chat words: as titles on their own they could be prose (`required_evidence`)."""


NO_CAPITAL_EVIDENCE = frozenset(
    """
action adventure alright amazing amazon america american animated animation april august awesome biography
british bye cartoon chinese christmas comedies comedy cool crime dc december disney documentary drama dramas
easter english excellent family fan fantasy february fi french friday fun german god goodbye gotcha great haha
halloween hbo hello hey hi hmm horror hulu incredible indian january japanese july june lol love loved march
marvel may monday musical musicals mystery netflix nice no noir nope november october ok okay omg perfect
pixar please prime romance romantic saturday sci scifi september sorry sport sports sunday superhero sure
sweet thanks thanksgiving thriller thrillers thursday tuesday war wednesday welcome western westerns wow yeah
yep yes yup
""".split()
)
"""Words people capitalise for other reasons (genres, days, names of services, chat): as one-word titles they
match only in quotes or with a year."""


FUNCTION_WORDS = frozenset(
    """
i you he she it we they me him her us them this that these those there here what who which where when why how
and or but nor so also too both either neither all some any none nothing something anything everything
everyone someone anyone everybody nobody each every is was are were be been am do does did has have had will
would can could should may might must like than then not no yes if as just maybe well ok okay oh hmm yeah my
your his its our their life time people go try check watch see look let take get give make keep come stay wait
stop enjoy think
""".split()
)
"""Words that do not make a capitalised neighbour part of a name, nor a sentence's first word a title."""
PREDICATE_WORDS = frozenset(
    "is was are were isnt wasnt arent werent and or too also has had sounds looks seems would will".split()
)
"""Words after a sentence's first word that make it a title: "Heat was great", "Split is like Identity"."""


@dataclass(frozen=True)
class TitleMention:
    """A catalog title found in a text: `text[start:end] == surface`."""

    item_id: str
    start: int
    end: int
    surface: str
    score: float
    """1.0 for an exact title (after normalisation); lower for aliases and typos."""
    edits: int = 0
    """Letters changed, added or dropped to match the title: a typo in a user's message, a wrong title in an
    explanation ("The Exorcism" for The Exorcist)."""


@dataclass(frozen=True)
class _Version:
    kind: int  # 0 full title, 1 alias, 2 part before the colon
    item_id: str
    year: int | None
    popularity: float

    def order(self) -> tuple:
        return (self.kind, -self.popularity, self.year is None, -(self.year or 0), self.item_id)


@dataclass(frozen=True)
class _Token:
    norm: str
    start: int
    end: int
    raw: str


@dataclass(frozen=True)
class _Candidate:
    i: int
    j: int
    key: tuple[str, ...]
    edits: int


@lru_cache(maxsize=65536)
def normalize_word(word: str) -> str:
    """One word as the matcher compares it: no accents, case folded, no apostrophes, numbers as digits."""
    if word == "&":
        return "and"
    plain = unicodedata.normalize("NFKD", word)
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch)).casefold()
    plain = plain.replace("'", "").replace("’", "")
    return _NUMBERS.get(plain, plain)


def _tokens(text: str) -> list[_Token]:
    found = [_Token(normalize_word(m.group()), m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    return [token for token in found if token.norm]


def normalize_title(title: str) -> tuple[str, ...]:
    """The words of a title as the matcher compares them ("Ocean's Eleven" → ("oceans", "11"))."""
    return tuple(token.norm for token in _tokens(title))


def split_year(title: str) -> tuple[str, int | None]:
    """("The Matrix", 1999) from "The Matrix (1999)"; the year is None when there is none."""
    match = _TRAILING_YEAR.search(title)
    if not match:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))


def _letters(key: tuple[str, ...]) -> int:
    return sum(len(word) for word in key)


def edit_budget(key: tuple[str, ...]) -> int:
    """Edits a title tolerates: 0 below 6 letters, 1 from 6, 2 from 12."""
    letters = _letters(key)
    return 2 if letters >= 12 else 1 if letters >= 6 else 0


def required_evidence(key: tuple[str, ...], kind: int = 0) -> int:
    """How a key must be written to match: NO_EVIDENCE (any case), CAPITALS (or better) or QUOTES_OR_YEAR."""
    significant = [word for word in key if word not in MINOR_WORDS]
    if not significant or all(word in NO_CAPITAL_EVIDENCE for word in significant):
        return QUOTES_OR_YEAR
    if len(significant) == 1:
        word = significant[0]
        if (len(word) == 1 and word.isalpha()) or (kind != 0 and word in COMMON_WORDS):
            return QUOTES_OR_YEAR
        return (
            CAPITALS if kind != 0 or word in COMMON_WORDS or len(word) < 5 or word.isdigit() else NO_EVIDENCE
        )
    return CAPITALS if all(word in COMMON_WORDS or word.isdigit() for word in significant) else NO_EVIDENCE


def _title_keys(title: str) -> dict[tuple[str, ...], int]:
    """Every key of one title with its kind: 0 the full title (also with hyphens and single letters joined), 1
    without the leading article, 2 the part before a colon or " - " (and that without its article)."""
    keys: dict[tuple[str, ...], int] = {}
    forms = [(title, 0)]
    subtitle = _SUBTITLE.search(title)
    if subtitle and subtitle.start() > 0:
        forms.append((title[: subtitle.start()], 2))
    for text, kind in forms:
        for hyphens in (text, re.sub(r"(?<=\w)-(?=\w)", "", text)):
            key = normalize_title(hyphens)
            for variant in (key, _join_letters(key)):
                bare = variant[1:] if len(variant) > 1 and variant[0] in ARTICLES else ()
                for form, form_kind in ((variant, kind), (bare, max(kind, 1))):
                    if form and form_kind < keys.get(form, 3):
                        keys[form] = form_kind
    return keys


def _join_letters(key: tuple[str, ...]) -> tuple[str, ...]:
    """Runs of single letters written together: ("s", "w", "a", "t") → ("swat",)."""
    out: list[str] = []
    run = ""
    for word in (*key, ""):
        if len(word) == 1 and word.isalpha():
            run += word
            continue
        if run:
            out.append(run)
            run = ""
        if word:
            out.append(word)
    return tuple(out)


def _deletes(word: str, depth: int) -> set[str]:
    found = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


def _fuzzy_depth(word: str) -> int:
    return 2 if len(word) >= 8 else 1 if len(word) >= 4 else 0


def osa_distance(a: str, b: str, cap: int = MAX_EDITS) -> int:
    """Optimal-string-alignment (Damerau) distance, or cap + 1 when it is larger than cap."""
    if abs(len(a) - len(b)) > cap:
        return cap + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > cap:
            return cap + 1
        prev2, prev = prev, cur
    return prev[-1] if prev[-1] <= cap else cap + 1


class TitleMatcher:
    """Exact, alias and typo-tolerant title matching over one catalog (rules in the module docstring)."""

    def __init__(self, catalog: Catalog) -> None:
        self._versions: dict[tuple[str, ...], list[_Version]] = {}
        for item in catalog:
            title, year_in_title = split_year(item.title)
            year = item.year or year_in_title
            popularity = float(catalog.popularity.get(item.item_id, 0) or 0)
            for key, kind in _title_keys(title).items():
                self._versions.setdefault(key, []).append(_Version(kind, item.item_id, year, popularity))
        for versions in self._versions.values():
            versions.sort(key=_Version.order)
        self._prefixes = {key[:n] for key in self._versions for n in range(1, len(key) + 1)}
        self._evidence = {
            key: required_evidence(key, versions[0].kind) for key, versions in self._versions.items()
        }
        for person in _people(catalog):
            if person in self._evidence and not all(word in COMMON_WORDS for word in person):
                self._evidence[person] = QUOTES_OR_YEAR
        self._neighbours: dict[str, list[str]] = {}
        for word in {word for key in self._versions for word in key}:
            if word.isalpha() and _fuzzy_depth(word):
                for deleted in _deletes(word, _fuzzy_depth(word)):
                    self._neighbours.setdefault(deleted, []).append(word)

    def find(self, text: str) -> list[TitleMention]:
        """Catalog titles in `text`: non-overlapping, longest first, returned in text order."""
        if not isinstance(text, str):
            return []
        tokens = _tokens(text)
        options = [self._options(token.norm) for token in tokens]
        years = [_year_after(text, token.end) for token in tokens]
        candidates = [c for i in range(len(tokens)) for c in self._walk(options, i, i, (), 0)]
        form = _TitleForm(text, tokens, candidates)
        candidates.sort(key=lambda c: self._precedence(c, years[c.j - 1][0]))
        taken: set[int] = set()
        mentions: list[TitleMention] = []
        for cand in candidates:
            if taken.intersection(range(cand.i, cand.j)):
                continue
            mention = self._accept(cand, tokens, text, form, years[cand.j - 1])
            if mention:
                taken.update(range(cand.i, cand.j))
                mentions.append(mention)
        return sorted(mentions, key=lambda m: m.start)

    def lookup(self, title: str) -> str | None:
        """The best item id for a title-ish string ("the matrix", "Matrix 1999", "Ocean's Eleven (1960)")."""
        if not isinstance(title, str):
            return None
        words = normalize_title(title[:500])
        year = None
        if len(words) > 1 and re.fullmatch(r"1[89]\d\d|20\d\d", words[-1]) and words not in self._versions:
            words, year = words[:-1], int(words[-1])
        options = [self._options(word) for word in words]
        found = [c for c in self._walk(options, 0, 0, (), 0) if c.j == len(words)]
        found = [c for c in found if c.edits <= edit_budget(c.key)]
        if not found:
            return None
        best = min(found, key=lambda c: (c.edits, self._versions[c.key][0].kind))
        return self._choose(best.key, year).item_id

    def _options(self, word: str) -> list[tuple[str, int]]:
        """The title words a text word may stand for, with the edits each costs (the word itself first)."""
        options = [(word, 0)]
        if not word.isalpha() or len(word) < 4 or word in COMMON_WORDS:
            return options
        seen = {word}
        for deleted in _deletes(word, 2 if len(word) >= 7 else 1):
            for target in self._neighbours.get(deleted, ()):
                if target in seen:
                    continue
                seen.add(target)
                allowed = 2 if len(target) >= 8 and len(word) >= 7 else 1
                distance = osa_distance(word, target, allowed)
                if distance <= allowed:
                    options.append((target, distance))
        return options

    def _walk(
        self, options: list[list[tuple[str, int]]], i: int, pos: int, prefix: tuple[str, ...], edits: int
    ) -> list[_Candidate]:
        """Every key that starts at word i, read through the catalog's key prefixes (a trie walk)."""
        if pos >= len(options):
            return []
        found: list[_Candidate] = []
        for word, cost in options[pos]:
            key = (*prefix, word)
            if edits + cost > MAX_EDITS or key not in self._prefixes:
                continue
            if key in self._versions:
                found.append(_Candidate(i, pos + 1, key, edits + cost))
            found.extend(self._walk(options, i, pos + 1, key, edits + cost))
        return found

    def _precedence(self, cand: _Candidate, year: int | None) -> tuple:
        """A year that names a version, then more words, fewer edits, more letters (leading article aside), a
        better key, the earlier."""
        names_year = year is not None and self._choose(cand.key, year).year == year
        kind = self._versions[cand.key][0].kind
        letters = _letters(cand.key[1:] if cand.key[0] in ARTICLES else cand.key)
        return (not names_year, cand.i - cand.j, cand.edits, -letters, kind, cand.i)

    def _accept(
        self,
        cand: _Candidate,
        tokens: list[_Token],
        text: str,
        form: _TitleForm,
        year_after: tuple[int | None, int, bool],
    ) -> TitleMention | None:
        """The mention for a candidate, or None when the rules in the module docstring reject it."""
        if cand.edits > edit_budget(cand.key):
            return None
        start, end = tokens[cand.i].start, tokens[cand.j - 1].end
        if _HYPHEN_BEFORE.search(text[max(0, start - 2):start]) or _HYPHEN_AFTER.match(text, end):
            return None  # part of a hyphenated word: the "Joy" of "Anya Taylor-Joy" is not the film Joy
        year, year_end, parenthesised = year_after
        version = self._choose(cand.key, year)
        if year is not None and (version.year == year or parenthesised):
            end = year_end
        strong = parenthesised or (year is not None and version.year == year) or form.quoted(start, end)
        if not strong and not self._written_as_title(cand, form):
            return None
        score = (1.0, 0.95, 0.9)[min(version.kind, 2)] - 0.15 * cand.edits
        return TitleMention(version.item_id, start, end, text[start:end], round(score, 2), cand.edits)

    def _written_as_title(self, cand: _Candidate, form: _TitleForm) -> bool:
        """Without quotes or a year: capitals where the key needs them; lowercase typos in long windows."""
        single = cand.j - cand.i == 1
        needed = self._evidence[cand.key]
        if needed == QUOTES_OR_YEAR or (single and form.in_longer_name(cand.i)):
            return False
        capitalised = form.capitalised(cand.i, cand.j)
        if needed == CAPITALS and not capitalised:
            return False
        return capitalised or not cand.edits or (not single and _letters(cand.key) >= 8)

    def _choose(self, key: tuple[str, ...], year: int | None) -> _Version:
        """The version a year names (also without the article: "the Godfather (1991)"), else the best."""
        versions = self._versions[key]
        named = [v for v in versions if year is not None and v.year == year]
        if (
            not named
            and year is not None
            and len(key) > 1
            and key[0] in ARTICLES
            and key[1:] in self._versions
        ):
            named = [v for v in self._versions[key[1:]] if v.year == year]
        return named[0] if named else versions[0]


def _people(catalog: Catalog) -> set[tuple[str, ...]]:
    """Normalised names (of two words or more) of the catalog's directors, cast and writers."""
    names = {name for item in catalog for name in (*item.directors, *item.cast, *item.writers)}
    return {key for key in map(normalize_title, names) if len(key) >= 2}


def _year_after(text: str, end: int) -> tuple[int | None, int, bool]:
    """(year, where it ends, in parentheses) for a year right after `end`, else (None, end, False)."""
    match = _YEAR_AFTER.match(text, end)
    if not match:
        return None, end, False
    return int(match.group(1) or match.group(2)), match.end(), match.group(1) is not None


class _TitleForm:
    """How a span of a text is written: quoted, followed by "(Year)", capitalised beyond a sentence start."""

    def __init__(self, text: str, tokens: list[_Token], candidates: list[_Candidate]) -> None:
        self.text = text
        self.tokens = tokens
        self.starts = {c.i for c in candidates if c.j - c.i > 1}
        self.ends = {c.j - 1 for c in candidates if c.j - c.i > 1}
        covered = {k for c in candidates for k in range(c.i, c.j)}
        letters = [ch for ch in text if ch.isalpha()]
        shouting = len(letters) >= 10 and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)
        prose = [
            t
            for k, t in enumerate(tokens)
            if k not in covered and t.norm in COMMON_WORDS - MINOR_WORDS and t.raw[0].isalpha()
        ]
        title_case = len(prose) >= 6 and sum(t.raw[0].isupper() for t in prose) > 0.7 * len(prose)
        self.capitals_count = not (shouting or title_case)

    def quoted(self, start: int, end: int) -> bool:
        before = self.text[:start].rstrip()
        after = self.text[end:].lstrip()
        return bool(before) and before[-1] in QUOTES and bool(after) and after[0] in QUOTES

    def capitalised(self, i: int, j: int) -> bool:
        """Every significant word capitalised, one of them beyond a sentence start, and (one word) not part of
        a longer capitalised name such as "Bruce Willis" or "World War"."""
        if not self.capitals_count:
            return False
        significant = [t for t in self.tokens[i:j] if t.norm not in MINOR_WORDS]
        if not all(t.raw[0].isupper() or t.raw[0].isdigit() for t in significant):
            return False
        if not any(self._evidence(t) for t in significant) and not self._titled_sentence_start(i, j):
            return False
        return j - i > 1 or not self.in_longer_name(i)

    def in_longer_name(self, i: int) -> bool:
        """Whether word i is capitalised next to another capitalised word, with only spaces between them, that
        does not start or end a title of several words ("Zootopia The Incredibles" is two titles)."""
        if not self.capitals_count or not self.tokens[i].raw[0].isupper():
            return False
        for left, right in ((i - 1, i), (i, i + 1)):
            if left < 0 or right >= len(self.tokens) or left in self.ends or right in self.starts:
                continue
            neighbour = self.tokens[right if left == i else left]
            gap = self.text[self.tokens[left].end : self.tokens[right].start]
            if (
                not gap.strip()
                and self._evidence(neighbour)
                and neighbour.norm not in FUNCTION_WORDS | MINOR_WORDS
            ):
                return True
        return False

    def _titled_sentence_start(self, i: int, j: int) -> bool:
        """A sentence opened by a capitalised content word and followed by the end, punctuation or a predicate
        ("Heat was great", "Frozen?", "Split is like Identity"; not "It was great", "Go and see")."""
        first = self.tokens[i]
        if not first.raw[0].isupper() or first.norm in FUNCTION_WORDS or not self._sentence_start(first):
            return False
        if first.raw.isupper() and len(first.raw) > 1 and first.norm in COMMON_WORDS:
            return False
        after = self.text[self.tokens[j - 1].end :].lstrip()
        if not after or after[0] in "?!.,;:)-–—":
            return True
        return (
            j < len(self.tokens)
            and self.tokens[j].start == len(self.text) - len(after)
            and (self.tokens[j].norm in PREDICATE_WORDS)
        )

    def _evidence(self, token: _Token) -> bool:
        """A capital that says "title": not a sentence start, not "I", not an all-caps common word."""
        if not token.raw[0].isupper() or _is_pronoun_i(token) or self._sentence_start(token):
            return False
        return not (token.raw.isupper() and len(token.raw) > 1 and token.norm in COMMON_WORDS)

    def _sentence_start(self, token: _Token) -> bool:
        before = self.text[: token.start].rstrip(" \t" + QUOTES)
        return not before or before[-1] in ".!?\n"


def _is_pronoun_i(token: _Token) -> bool:
    return token.norm in {"i", "im", "ive", "id", "ill"} and token.raw[0] == "I"
