"""The catalog: immutable items with facts, from ReDial + DBpedia + MovieTweetings or a user's CSV/JSONL file.

Everything an explanation may say about an item comes from `Item.facts()`; the description is composed from
those facts only (there is no plot text under a permissive licence).

Sources:
    load_catalog(source, data_dir)  None or "redial" -> load_redial_catalog, else load_catalog_file(path)
    load_redial_catalog(data_dir)   ReDial movies + MovieTweetings genres + DBpedia people and places
    load_catalog_file(path)         a user's own .csv or .jsonl catalog

Errors: CatalogError (a ValueError) for every missing, unreadable or invalid source; the message names the
file and, for a bad row, the line.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import html
import io
import json
import math
import re
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import astuple, dataclass, field, replace
from functools import cached_property
from pathlib import Path

from retrieval.redial import RedialFormatError, load_redial_dialogues, training_paths

FACT_FIELDS = ("year", "genre", "director", "starring", "writer", "country", "language")
REDIAL_SOURCE = "redial"
DATA_DIR_ENV = "CONVREC_DATA_DIR"
CAST_LIMIT = 8
"""Cast names kept per ReDial item (DBpedia lists up to 23, in billing order)."""
DESCRIPTION_NAMES = 3
"""Cast and writer names a composed description mentions; the rest stay in the facts."""
LIST_FIELDS = ("genres", "directors", "cast", "writers", "countries", "languages")
KG_RELATIONS = {
    "directors": "director",
    "cast": "starring",
    "writers": "writer",
    "countries": "country",
    "languages": "language",
}
"""Item field -> DBpedia relation: the ones the data README calls reliable, plus country and language."""


class CatalogError(ValueError):
    """A catalog source is missing, unreadable or invalid (missing or duplicate ids, bad rows)."""


@dataclass(frozen=True)
class Item:
    """One catalog item. `item_id` is a string (ReDial movieId for the movie catalog)."""

    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()
    cast: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    description: str = ""

    @property
    def label(self) -> str:
        """`Title (Year)`, or the bare title when the year is unknown."""
        return f"{self.title} ({self.year})" if self.year else self.title

    def facts(self) -> dict[str, tuple[str, ...]]:
        """The citable facts, keyed by FACT_FIELDS; empty fields are left out."""
        facts = {
            "year": (str(self.year),) if self.year else (),
            "genre": self.genres,
            "director": self.directors,
            "starring": self.cast,
            "writer": self.writers,
            "country": self.countries,
            "language": self.languages,
        }
        return {key: value for key, value in facts.items() if value}


@dataclass
class Catalog:
    """Items by id, in a stable order, plus where they came from.

    Treat a loaded catalog as immutable: `fingerprint()`, `genres()` and `people()` are computed once.
    """

    items: dict[str, Item]
    source: str = ""
    popularity: dict[str, float] = field(default_factory=dict)
    """Cold-start popularity per item id (ReDial: mentions in the training dialogues only)."""

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def __getitem__(self, item_id: str) -> Item:
        return self.items[item_id]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items.values())

    def get(self, item_id: str) -> Item | None:
        return self.items.get(item_id)

    def fingerprint(self) -> str:
        """sha256 over every item's fields in order: an unchanged fingerprint means a built index still fits.

        Popularity and source are left out on purpose: they do not change what is embedded.
        """
        return self._fingerprint

    def genres(self) -> list[str]:
        """The distinct genre names of the catalog, sorted (a fresh list each call)."""
        return list(self._genres)

    def people(self) -> dict[str, str]:
        """Lower-cased name -> name as written, for all directors, cast and writers (shared: read only)."""
        return self._people

    @cached_property
    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for item in self.items.values():
            digest.update(json.dumps(astuple(item), ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()

    @cached_property
    def _genres(self) -> tuple[str, ...]:
        return tuple(sorted({genre for item in self.items.values() for genre in item.genres}))

    @cached_property
    def _people(self) -> dict[str, str]:
        people: dict[str, str] = {}
        for item in self.items.values():
            for name in (*item.directors, *item.cast, *item.writers):
                people.setdefault(name.lower(), name)
        return people


def compose_description(item: Item) -> str:
    """One or two short sentences made only of the item's facts; the bare title when it has none."""
    sentences = [sentence for sentence in (_film_sentence(item), _credits_sentence(item)) if sentence]
    return " ".join(sentences) if sentences else item.title


def join_names(names: Iterable[str]) -> str:
    """`A`, `A and B`, `A, B and C`."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _film_sentence(item: Item) -> str:
    """`Action, Sci-Fi film from 1999, directed by X, starring Y and Z.` with the missing parts skipped."""
    if not (item.genres or item.year or item.directors or item.cast):
        return ""
    head = f"{', '.join(item.genres)} film" if item.genres else "Film"
    if item.year:
        head += f" from {item.year}"
    clauses = []
    if item.directors:
        clauses.append(f"directed by {join_names(item.directors)}")
    if item.cast:
        clauses.append(f"starring {join_names(item.cast[:DESCRIPTION_NAMES])}")
    if not clauses:
        return head + "."
    separator = " " if head == "Film" else ", "
    return head + separator + ", ".join(clauses) + "."


def _credits_sentence(item: Item) -> str:
    """`Written by X; country: Y; language: Z.` with the missing parts skipped."""
    parts = []
    if item.writers:
        parts.append(f"written by {join_names(item.writers[:DESCRIPTION_NAMES])}")
    if item.countries:
        parts.append(f"country: {', '.join(item.countries)}")
    if item.languages:
        parts.append(f"language: {', '.join(item.languages)}")
    if not parts:
        return ""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def load_catalog(source: str | Path | None, data_dir: Path) -> Catalog:
    """`None` or "redial" -> the ReDial movie catalog from data_dir; anything else is a catalog file path."""
    if source is None or str(source).strip().lower() == REDIAL_SOURCE:
        return load_redial_catalog(Path(data_dir))
    return load_catalog_file(Path(source))


def load_redial_catalog(data_dir: Path) -> Catalog:
    """All ReDial movies, with genres from MovieTweetings and people, countries, languages from DBpedia.

    Popularity counts the training-sample conversations that mention each movie; `nbMentions` in the CSV is
    not used because it counts the test split too.
    """
    data_dir = _require_data_dir(Path(data_dir))
    movies = _read_redial_movies(data_dir / "redial" / "movies_with_mentions.csv")
    uris = _read_json(data_dir / "redial" / "dbpedia" / "redial_id_to_dbpedia.json")
    neighbors = _read_json(data_dir / "redial" / "dbpedia" / "movie_kg_neighbors.json")
    genres = _read_genre_index(data_dir / "movietweetings" / "mappings.csv")
    items = {}
    for movie_id, name in movies:
        title, year = parse_movie_name(name)
        uri = uris.get(movie_id) or ""
        item = Item(
            item_id=movie_id,
            title=title,
            year=year,
            genres=genres.lookup(uri, title, year),
            **_kg_facts(neighbors.get(uri) or {} if names_a_screen_work(uri) else {}),
        )
        items[movie_id] = replace(item, description=compose_description(item))
    popularity = _count_mentions(training_paths(data_dir), items)
    return Catalog(items=items, source=REDIAL_SOURCE, popularity=popularity)


_NAME_WITH_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)$")


def parse_movie_name(name: str) -> tuple[str, int | None]:
    """`Title  (1999)` -> ("Title", 1999); names without a trailing year keep the year unknown."""
    name = " ".join(name.split())
    match = _NAME_WITH_YEAR.match(name)
    if match and match.group("title"):
        return match.group("title"), int(match.group("year"))
    return name, None


def clean_names(names: Iterable[object], limit: int | None = None) -> tuple[str, ...]:
    """DBpedia names made presentable: `Leslie Jones (editor)` -> `Leslie Jones`, `%22` -> `"`, no repeats.

    Order is kept (cast is in billing order); blanks and placeholders like `Imdbname:nm0217822` are dropped.
    """
    cleaned: list[str] = []
    seen: set[str] = set()
    for raw in names:
        name = " ".join(urllib.parse.unquote(str(raw)).split())
        name = re.sub(r"\s*\([^()]*\)$", "", name).strip()
        if not name or name.lower().startswith("imdbname:") or name.casefold() in seen:
            continue
        seen.add(name.casefold())
        cleaned.append(name)
    return tuple(cleaned[:limit])


def normalize_title(title: str) -> str:
    """A join key for titles: entities decoded, accents and punctuation dropped, lower case, no article."""
    text = unicodedata.normalize("NFKD", html.unescape(title)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", " ", text.lower().replace("&", " and ")).strip()
    return re.sub(r"^(the|a|an) ", "", text)


_SCREEN_WORK = re.compile(r"film|serial|series|music_video|sequel|sequence", re.IGNORECASE)


def names_a_screen_work(uri: str) -> bool:
    """Whether a ReDial -> DBpedia link names a film (or a serial, a series, a music video): its disambiguation, the
    last "(...)" of the URI, is absent or says so. About 60 of the 6,924 links name something else - a song, an
    album, a novel, comics, a franchise, a character, a TV episode - whose people would be false facts of the movie
    ("Rush Hour, written by Jane Wiedlin", from the song); those are not read."""
    qualifier = re.search(r"_\(([^()]*)\)$", urllib.parse.unquote(uri))
    return qualifier is None or bool(_SCREEN_WORK.search(qualifier.group(1)))


def _kg_facts(relations: Mapping[str, list]) -> dict[str, tuple[str, ...]]:
    """The Item fields DBpedia supplies for one movie; cast is capped at CAST_LIMIT."""
    return {
        key: clean_names(relations.get(relation) or (), CAST_LIMIT if key == "cast" else None)
        for key, relation in KG_RELATIONS.items()
    }


@dataclass(frozen=True)
class _GenreIndex:
    """MovieTweetings genres by DBpedia URI and by (normalised title, year); None marks an ambiguous key."""

    by_uri: dict[str, tuple[str, ...] | None]
    by_title: dict[tuple[str, int | None], tuple[str, ...] | None]

    def lookup(self, uri: str, title: str, year: int | None) -> tuple[str, ...]:
        """The URI is the reliable join; title + year is the fallback (never a title without a year)."""
        genres = self.by_uri.get(urllib.parse.unquote(uri)) if uri else None
        if genres is None and year is not None:
            genres = self.by_title.get((normalize_title(title), year))
        return genres or ()


def _read_genre_index(path: Path) -> _GenreIndex:
    """Index mappings.csv (`;`-separated, genre `|`-separated); ambiguous keys are left out, not guessed."""
    index = _GenreIndex(by_uri={}, by_title={})
    for row in csv.DictReader(io.StringIO(_read_text(path), newline=""), delimiter=";"):
        genres = tuple(genre.strip() for genre in (row.get("genre") or "").split("|") if genre.strip())
        if not genres:
            continue
        if row.get("uri"):
            _add_unambiguous(index.by_uri, urllib.parse.unquote(row["uri"]), genres)
        title, year = parse_movie_name(html.unescape(row.get("title") or ""))
        if year is not None:
            _add_unambiguous(index.by_title, (normalize_title(title), year), genres)
    return index


def _add_unambiguous(index: dict, key: object, genres: tuple[str, ...]) -> None:
    """Store genres under key; when a second row disagrees, mark the key as ambiguous (None)."""
    if key in index and index[key] != genres:
        index[key] = None
    else:
        index.setdefault(key, genres)


def _count_mentions(paths: list[Path], items: Mapping[str, Item]) -> dict[str, float]:
    """Per catalog item, the number of training conversations that mention it (0 when none)."""
    try:
        dialogues = [dialogue for path in paths for dialogue in load_redial_dialogues(path)]
    except RedialFormatError as error:
        raise CatalogError(str(error)) from error
    counts = Counter(movie_id for dialogue in dialogues for movie_id in dialogue.mentions)
    return {item_id: float(counts[item_id]) for item_id in items}


def _read_redial_movies(path: Path) -> list[tuple[str, str]]:
    """(movieId, movieName) rows of movies_with_mentions.csv, in file order."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        return [(row["movieId"].strip(), row["movieName"] or "") for row in reader]
    except (KeyError, AttributeError) as error:
        raise CatalogError(f"{path}, line {reader.line_num}: expected columns movieId, movieName") from error


def _require_data_dir(data_dir: Path) -> Path:
    """Fail early, and say how to point the program at the data, when the data folder is missing."""
    if not (data_dir / "redial").is_dir():
        raise CatalogError(
            f"ReDial data not found: tried {data_dir} (expected a redial/ folder in it). "
            f"Set the data folder with the environment variable {DATA_DIR_ENV} or the --data-dir flag."
        )
    return data_dir


def _read_text(path: Path) -> str:
    """A data file as UTF-8 text, or a CatalogError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogError(f"{path}: cannot read data file ({error})") from error


def _read_json(path: Path) -> dict:
    """A JSON object from the data folder, or a CatalogError naming the file."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise CatalogError(f"{path}, line {error.lineno}: malformed JSON ({error.msg})") from error
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a JSON object")
    return data


def load_catalog_file(path: Path) -> Catalog:
    """A user's catalog from `.csv` or `.jsonl`: `id` and `title` required, `description` recommended.

    Optional: year, genres, directors, cast, writers, countries, languages (JSON arrays or `|`-separated
    strings), popularity. A missing description is composed from the facts, as for ReDial.
    """
    path = Path(path)
    readers = {".csv": _csv_records, ".jsonl": _jsonl_records}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        suffix = path.suffix or "(no suffix)"
        raise CatalogError(f"{path}: unsupported catalog format {suffix!r}; use .csv or .jsonl")
    items: dict[str, Item] = {}
    popularity: dict[str, float] = {}
    first_lines: dict[str, int] = {}
    for line_number, record in reader(path, _read_user_text(path)):
        where = f"{path}, line {line_number}"
        item, score = _item_from_record(record, where)
        if item.item_id in items:
            first = first_lines[item.item_id]
            raise CatalogError(f"{where}: duplicate id {item.item_id!r} (first at line {first})")
        items[item.item_id], popularity[item.item_id] = item, score
        first_lines[item.item_id] = line_number
    if not items:
        raise CatalogError(f"{path}: the catalog file has no items")
    return Catalog(items=items, source=str(path), popularity=popularity)


def _read_user_text(path: Path) -> str:
    """UTF-8 text (a byte-order mark is allowed); invalid bytes are reported with their line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise CatalogError(f"{path}: catalog file not found") from error
    except OSError as error:
        raise CatalogError(f"{path}: cannot read catalog file ({error.strerror or error})") from error
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data[: error.start].count(b"\n") + 1
        raise CatalogError(f"{path}, line {line_number}: not valid UTF-8 ({error.reason})") from error


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each CSV row; the header must name `id` and `title`."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [name.strip() for name in reader.fieldnames or ()]
        missing = [name for name in ("id", "title") if name not in columns]
        if reader.fieldnames and missing:
            raise CatalogError(f"{path}, line 1: missing required column(s) {', '.join(missing)}")
        reader.fieldnames = columns
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        raise CatalogError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from error


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank JSONL line."""
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CatalogError(f"{path}, line {line_number}: malformed JSON ({error.msg})") from error
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise CatalogError(f"{path}, line {line_number}: expected a JSON object, got {kind}")
        yield line_number, record


def _item_from_record(record: Mapping[str, object], where: str) -> tuple[Item, float]:
    """Validate one row; every problem is a CatalogError that says where it is."""
    item_id = _as_text(record.get("id"), "id", where)
    if not item_id:
        raise CatalogError(f"{where}: missing or empty id")
    title = " ".join(_as_text(record.get("title"), "title", where).split())
    if not title:
        raise CatalogError(f"{where}: missing title for id {item_id!r}")
    item = Item(
        item_id=item_id,
        title=title,
        year=_as_year(record.get("year"), where),
        description=_as_text(record.get("description"), "description", where),
        **{key: _as_list(record.get(key), key, where) for key in LIST_FIELDS},
    )
    if not item.description:
        item = replace(item, description=compose_description(item))
    return item, _as_popularity(record.get("popularity"), where)


def _as_text(value: object, key: str, where: str) -> str:
    """A stripped string; numbers are accepted (ids like 42), lists and objects are not."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise CatalogError(f"{where}: {key} must be a string, got {type(value).__name__}")


def _as_list(value: object, key: str, where: str) -> tuple[str, ...]:
    """A JSON array or a `|`-separated string, stripped, without blanks or repeats, order kept."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts: list[object] = value.split("|")
    elif isinstance(value, list) and all(isinstance(part, str) for part in value):
        parts = list(value)
    else:
        raise CatalogError(f"{where}: {key} must be a list of strings or a '|'-separated string")
    return tuple(dict.fromkeys(" ".join(str(part).split()) for part in parts if str(part).strip()))


def _as_year(value: object, where: str) -> int | None:
    """A four-digit year as int or digits; empty means unknown."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not re.fullmatch(r"\d{4}", text):
        raise CatalogError(f"{where}: bad year {value!r} (expected a four-digit year like 1999)")
    return int(text)


def _as_popularity(value: object, where: str) -> float:
    """A non-negative number; missing means 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0
    try:
        score = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score) or score < 0:
        raise CatalogError(f"{where}: bad popularity {value!r} (expected a number >= 0)")
    return score
