"""The catalog: user CSV/JSONL files, the ReDial movie catalog, composed descriptions, derived lookups."""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from retrieval.catalog import (
    Catalog,
    CatalogError,
    Item,
    clean_names,
    compose_description,
    join_names,
    load_catalog,
    load_catalog_file,
    load_redial_catalog,
    names_a_screen_work,
    parse_movie_name,
)
from retrieval.redial import TRAINING_FILES
from tests.conftest import DATA_DIR

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
MINI_FILES = FIXTURES / "mini_data"
MINI_LAYOUT = {
    "redial_movies.csv": "redial/movies_with_mentions.csv",
    "redial_dbpedia_links.json": "redial/dbpedia/redial_id_to_dbpedia.json",
    "redial_kg_facts.json": "redial/dbpedia/movie_kg_neighbors.json",
    "redial_train_dialogues.jsonl": "redial/train_sample/train_data.jsonl",
    "movietweetings_genres.csv": "movietweetings/mappings.csv",
}
"""Hand-written fixture files -> where the data directory layout expects them."""


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory) -> Path:
    """A data directory in the shared data's layout, assembled from the hand-written fixture files."""
    root = tmp_path_factory.mktemp("mini_data")
    for name, target in MINI_LAYOUT.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_bytes((MINI_FILES / name).read_bytes())
    return root
REAL_DATA = DATA_DIR
MATRIX_DESCRIPTION = (
    "Action, Sci-Fi film from 1999, directed by Lana Wachowski and Lilly Wachowski, starring Keanu"
    " Reeves, Laurence Fishburne and Carrie-Anne Moss. Written by Lana Wachowski and Lilly Wachowski;"
    " country: United States; language: English."
)
TEMPLATE_WORDS = {"film", "from", "directed", "by", "starring", "and", "written", "country", "language"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def fact_words(item: Item) -> set[str]:
    return {word for values in item.facts().values() for value in values for word in words(value)}


# --- user catalog files


def test_jsonl_catalog_keeps_every_item_in_file_order() -> None:
    catalog = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    assert len(catalog) == 12
    assert [item.title for item in catalog][:4] == ["The Matrix", "Toy Story", "Inception", "Alien"]
    matrix = catalog["tt0133093"]
    assert matrix.year == 1999
    assert matrix.genres == ("Action", "Sci-Fi")
    assert matrix.directors == ("Lana Wachowski", "Lilly Wachowski")
    assert catalog["tt0211915"].title == "Amélie"


def test_csv_and_jsonl_catalogs_with_the_same_rows_give_the_same_items() -> None:
    from_csv = load_catalog_file(FIXTURES / "small_catalog.csv")
    from_jsonl = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    assert from_csv.items == from_jsonl.items
    assert from_csv.popularity == from_jsonl.popularity
    assert from_csv.fingerprint() == from_jsonl.fingerprint()


def test_lists_may_be_json_arrays_or_pipe_separated_strings() -> None:
    catalog = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    pulp_fiction = catalog["tt0110912"]  # written as "Crime|Drama" and year "1994" in the fixture
    assert pulp_fiction.genres == ("Crime", "Drama")
    assert pulp_fiction.year == 1994


def test_a_given_description_is_kept_and_a_missing_one_is_composed_from_the_facts() -> None:
    catalog = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    assert catalog["tt0133093"].description == "A hacker learns that the world he lives in is a simulation."
    toy_story = catalog["tt0114709"]
    assert toy_story.description == (
        "Animation, Adventure, Comedy film from 1995, directed by John Lasseter, starring Tom Hanks, Tim"
        " Allen and Don Rickles. Written by Joss Whedon, Andrew Stanton and Joel Cohen; country: United"
        " States; language: English."
    )


def test_popularity_is_read_and_missing_popularity_counts_as_zero() -> None:
    catalog = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    assert catalog.popularity["tt1375666"] == 7.0
    assert catalog.popularity["tt6751668"] == 2.5
    assert catalog.popularity["tt0245429"] == 0.0
    assert set(catalog.popularity) == set(catalog.items)


def test_ids_are_strings_and_surrounding_whitespace_is_dropped(tmp_path: Path) -> None:
    text = '{"id": 42, "title": "The Answer"}\n{"id": "  x-7 ", "title": "  Seven  "}\n'
    path = write(tmp_path, "c.jsonl", text)
    catalog = load_catalog_file(path)
    assert list(catalog.items) == ["42", "x-7"]
    assert catalog["x-7"].title == "Seven"


def test_blanks_and_repeats_in_lists_are_dropped_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,cast\n1,Heat,Al Pacino| |Robert De Niro|Al Pacino\n")
    assert load_catalog_file(path)["1"].cast == ("Al Pacino", "Robert De Niro")


def test_duplicate_ids_are_reported_with_both_line_numbers() -> None:
    expected = r"catalog_duplicate_id\.jsonl, line 4: duplicate id 'tt0114709'"
    with pytest.raises(CatalogError, match=expected) as error:
        load_catalog_file(FIXTURES / "catalog_duplicate_id.jsonl")
    assert "first at line 2" in str(error.value)


def test_missing_id_is_reported_with_its_line() -> None:
    with pytest.raises(CatalogError, match=r"catalog_missing_id\.csv, line 3: missing or empty id"):
        load_catalog_file(FIXTURES / "catalog_missing_id.csv")


def test_malformed_json_line_is_reported_with_its_line() -> None:
    with pytest.raises(CatalogError, match=r"catalog_bad_json\.jsonl, line 3: malformed JSON"):
        load_catalog_file(FIXTURES / "catalog_bad_json.jsonl")


def test_a_json_line_that_is_not_an_object_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", '{"id": "1", "title": "Heat"}\n["2", "Ronin"]\n')
    with pytest.raises(CatalogError, match=r"line 2: expected a JSON object, got list"):
        load_catalog_file(path)


def test_missing_title_is_reported_with_the_id(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", '{"id": "1", "title": "Heat"}\n{"id": "2", "title": "  "}\n')
    with pytest.raises(CatalogError, match=r"c\.jsonl, line 2: missing title for id '2'"):
        load_catalog_file(path)


@pytest.mark.parametrize("year", ['"199x"', "1999.5", "-1999", "true", '"99"', "[1999]"])
def test_bad_year_is_reported_with_its_line(tmp_path: Path, year: str) -> None:
    path = write(tmp_path, "c.jsonl", f'{{"id": "1", "title": "Heat", "year": {year}}}\n')
    with pytest.raises(CatalogError, match=r"c\.jsonl, line 1: bad year"):
        load_catalog_file(path)


def test_empty_year_means_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,year\n1,Heat,\n")
    assert load_catalog_file(path)["1"].year is None


@pytest.mark.parametrize("popularity", ['"lots"', "-1", "true", '"nan"'])
def test_bad_popularity_is_reported(tmp_path: Path, popularity: str) -> None:
    path = write(tmp_path, "c.jsonl", f'{{"id": "1", "title": "Heat", "popularity": {popularity}}}\n')
    with pytest.raises(CatalogError, match=r"line 1: bad popularity"):
        load_catalog_file(path)


def test_a_list_field_of_the_wrong_type_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", '{"id": "1", "title": "Heat", "cast": {"lead": "Al Pacino"}}\n')
    with pytest.raises(CatalogError, match=r"line 1: cast must be a list of strings"):
        load_catalog_file(path)


def test_invalid_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,title\n1,Heat\n2,Caf\xe9 Society\n")
    with pytest.raises(CatalogError, match=r"c\.csv, line 3: not valid UTF-8"):
        load_catalog_file(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("id,title\n1,Amélie\n".encode("utf-8-sig"))
    assert load_catalog_file(path)["1"].title == "Amélie"


@pytest.mark.parametrize(
    ("name", "text"), [("c.jsonl", ""), ("c.jsonl", "\n  \n"), ("c.csv", ""), ("c.csv", "id,title\n")]
)
def test_a_file_without_items_is_rejected(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(CatalogError, match=r"has no items"):
        load_catalog_file(write(tmp_path, name, text))


def test_csv_without_the_required_columns_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "movie,name\n1,Heat\n")
    with pytest.raises(CatalogError, match=r"c\.csv, line 1: missing required column\(s\) id, title"):
        load_catalog_file(path)


def test_unsupported_suffix_is_rejected_with_the_supported_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.xlsx", "whatever")
    expected = r"catalog\.xlsx: unsupported catalog format '\.xlsx'; use \.csv or \.jsonl"
    with pytest.raises(CatalogError, match=expected):
        load_catalog_file(path)


def test_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nowhere\.jsonl: catalog file not found"):
        load_catalog_file(tmp_path / "nowhere.jsonl")


def test_a_directory_is_not_a_readable_catalog(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(CatalogError, match=r"folder\.csv: cannot read catalog file"):
        load_catalog_file(folder)


# --- descriptions


def test_description_lists_the_facts_in_one_or_two_sentences() -> None:
    item = Item(
        item_id="1",
        title="The Matrix",
        year=1999,
        genres=("Action", "Sci-Fi"),
        directors=("Lana Wachowski", "Lilly Wachowski"),
        cast=("Keanu Reeves", "Laurence Fishburne", "Carrie-Anne Moss", "Hugo Weaving"),
        writers=("Lana Wachowski", "Lilly Wachowski"),
        countries=("United States",),
        languages=("English",),
    )
    assert compose_description(item) == MATRIX_DESCRIPTION


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, "Heat"),
        ({"year": 1995}, "Film from 1995."),
        ({"genres": ("Crime",)}, "Crime film."),
        ({"directors": ("Michael Mann",)}, "Film directed by Michael Mann."),
        ({"writers": ("Michael Mann",)}, "Written by Michael Mann."),
        ({"languages": ("English",)}, "Language: English."),
        ({"year": 1995, "cast": ("Al Pacino",)}, "Film from 1995, starring Al Pacino."),
    ],
)
def test_description_skips_missing_parts_and_never_adds_any(facts: dict, expected: str) -> None:
    assert compose_description(Item(item_id="1", title="Heat", **facts)) == expected


def test_names_are_joined_like_prose() -> None:
    assert [join_names([]), join_names(["A"]), join_names(["A", "B"]), join_names(["A", "B", "C"])] == [
        "",
        "A",
        "A and B",
        "A, B and C",
    ]


# --- derived lookups


def test_fingerprint_is_stable_and_changes_when_any_field_changes() -> None:
    catalog = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    again = load_catalog_file(FIXTURES / "small_catalog.jsonl")
    assert catalog.fingerprint() == again.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", catalog.fingerprint())
    items = dict(catalog.items)
    items["tt0078748"] = replace(items["tt0078748"], languages=("English", "French"))
    assert Catalog(items=items).fingerprint() != catalog.fingerprint()
    reordered = dict(reversed(list(catalog.items.items())))
    assert Catalog(items=reordered).fingerprint() != catalog.fingerprint()


def test_genres_are_the_sorted_distinct_genre_names() -> None:
    genres = load_catalog_file(FIXTURES / "small_catalog.jsonl").genres()
    assert genres == sorted(set(genres))
    assert {"Action", "Sci-Fi", "Animation", "War"} <= set(genres)


def test_people_finds_directors_cast_and_writers_by_lower_cased_name() -> None:
    people = load_catalog_file(FIXTURES / "small_catalog.jsonl").people()
    assert people["lana wachowski"] == "Lana Wachowski"
    assert people["sigourney weaver"] == "Sigourney Weaver"
    assert people["dan o'bannon"] == "Dan O'Bannon"
    assert "united states" not in people and "english" not in people


# --- the ReDial catalog, from a hand-written miniature of the data folder


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("The Matrix  (1999)", ("The Matrix", 1999)),
        ("Ghostbusters (1984)", ("Ghostbusters", 1984)),
        ("The Mummy ", ("The Mummy", None)),
        ("(500) Days of Summer  (2009)", ("(500) Days of Summer", 2009)),
        ("Evangelion: 2.0 You Can  Advance", ("Evangelion: 2.0 You Can Advance", None)),
        ("(2012)", ("(2012)", None)),
    ],
)
def test_redial_names_split_into_title_and_year(name: str, expected: tuple) -> None:
    assert parse_movie_name(name) == expected


@pytest.mark.parametrize(("uri", "expected"), [
    ("http://dbpedia.org/resource/The_Matrix", True),
    ("http://dbpedia.org/resource/Heat_(1995_film)", True),
    ("http://dbpedia.org/resource/Rush_Hour_(film_series)", True),
    ("http://dbpedia.org/resource/Batman_and_Robin_(serial)", True),
    ("http://dbpedia.org/resource/Titanic_(2012_miniseries)", True),
    ("http://dbpedia.org/resource/Rush_Hour_(song)", False),
    ("http://dbpedia.org/resource/Psycho_(Lords_of_the_Underground_song)", False),
    ("http://dbpedia.org/resource/Highlander_(comics)", False),
    ("http://dbpedia.org/resource/The_Mummy_(franchise)", False),
    ("http://dbpedia.org/resource/All_the_Way_(Buffy_the_Vampire_Slayer)", False),
])
def test_only_links_to_a_screen_work_give_facts(uri: str, expected: bool) -> None:
    assert names_a_screen_work(uri) is expected


def test_dbpedia_disambiguation_suffixes_blanks_repeats_and_placeholders_are_cleaned() -> None:
    raw = [
        "Leslie Jones (editor)",
        "",
        "Stephen %22tWitch%22 Boss",
        "Leslie Jones",
        "Imdbname:nm0217822",
        " Al  Pacino ",
    ]
    assert clean_names(raw) == ("Leslie Jones", 'Stephen "tWitch" Boss', "Al Pacino")


@pytest.fixture(scope="module")
def mini(mini_data: Path) -> Catalog:
    return load_redial_catalog(mini_data)


def test_redial_catalog_has_every_movie_with_its_redial_id(mini: Catalog) -> None:
    assert list(mini.items) == [str(movie_id) for movie_id in range(100001, 100009)]
    assert mini.source == "redial"
    assert mini["100001"].label == "The Matrix (1999)"
    assert (mini["100007"].title, mini["100007"].year) == ("Some Unknown Film", None)


def test_redial_genres_join_by_dbpedia_uri_then_by_title_and_year(mini: Catalog) -> None:
    assert mini["100001"].genres == ("Action", "Sci-Fi")  # by URI
    assert mini["100006"].genres == ("Comedy", "Romance")  # by URI, percent-encoded on one side only
    assert mini["100003"].genres == ("Action", "Mystery", "Sci-Fi")  # no URI in mappings: title + year
    assert mini["100005"].genres == ("Drama", "War")  # the URI maps to two films: title + year decides
    assert mini["100008"].genres == ()  # no year in ReDial, so no guess by title alone


def test_redial_people_are_cleaned_and_cast_is_capped_in_billing_order(mini: Catalog) -> None:
    assert mini["100002"].cast == ("Tom Hanks", "Tim Allen")
    assert mini["100004"].cast == ("Tom Skerritt", "Sigourney Weaver", "John Hurt")
    thin_red_line = mini["100005"]
    assert thin_red_line.cast[:3] == ("Sean Penn", "Adrien Brody", "Jim Caviezel")
    assert len(thin_red_line.cast) == 8
    assert mini["100001"].languages == ("English",)
    assert mini["100006"].countries == ("France",)
    assert "don davis" not in mini.people()  # music credits are not people to search by


def test_redial_popularity_counts_training_conversations_not_nb_mentions(mini: Catalog) -> None:
    assert mini.popularity["100001"] == 2.0  # two conversations (one mentions it twice), nbMentions says 50
    assert mini.popularity["100003"] == 1.0
    assert mini.popularity["100002"] == 0.0
    assert set(mini.popularity) == set(mini.items)


def test_redial_descriptions_say_only_what_the_facts_say(mini: Catalog) -> None:
    assert mini["100001"].description == MATRIX_DESCRIPTION
    assert mini["100007"].description == "Some Unknown Film"
    assert mini["100008"].description == "Film directed by Hayao Miyazaki."


def test_load_catalog_reads_redial_by_default_and_files_by_path(mini: Catalog, mini_data: Path) -> None:
    assert load_catalog(None, mini_data).items == mini.items
    assert load_catalog("redial", mini_data).items == mini.items
    from_file = load_catalog(str(FIXTURES / "small_catalog.csv"), mini_data)
    assert "tt0133093" in from_file


def test_a_missing_data_dir_says_where_it_looked_and_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as error:
        load_catalog(None, tmp_path / "no-data")
    message = str(error.value)
    assert str(tmp_path / "no-data") in message
    assert "CONVREC_DATA_DIR" in message and "--data-dir" in message


# --- the real data folder (skipped where it is absent)

needs_real_data = pytest.mark.skipif(not (REAL_DATA / "redial").is_dir(), reason=f"no data at {REAL_DATA}")


@pytest.fixture(scope="module")
def redial() -> tuple[Catalog, float]:
    started = time.perf_counter()
    catalog = load_redial_catalog(REAL_DATA)
    return catalog, time.perf_counter() - started


@needs_real_data
def test_real_redial_catalog_loads_all_movies_quickly(redial: tuple[Catalog, float]) -> None:
    catalog, seconds = redial
    assert len(catalog) == 6924
    assert seconds < 3.0
    assert sum(bool(item.genres) for item in catalog) / len(catalog) >= 0.60
    assert all(len(item.cast) <= 8 for item in catalog)


@needs_real_data
def test_real_matrix_has_a_wachowski_director_and_sci_fi(redial: tuple[Catalog, float]) -> None:
    catalog, _ = redial
    matrix = next(item for item in catalog if item.label == "The Matrix (1999)")
    assert any("Wachowski" in name for name in matrix.directors)
    assert "Sci-Fi" in matrix.genres
    assert "Sci-Fi" in catalog.genres()


@needs_real_data
def test_real_movies_linked_to_a_song_get_none_of_its_people(redial: tuple[Catalog, float]) -> None:
    catalog, _ = redial
    rush_hour = catalog["159382"]  # ReDial's "Rush Hour", linked to the song: Jane Wiedlin wrote the song
    assert rush_hour.title == "Rush Hour" and not rush_hour.writers
    serial = catalog["103163"]  # "Batman and Robin (1949)" is the serial its link names: its cast stays
    assert "Robert Lowery" in serial.cast


@needs_real_data
def test_real_popularity_is_counted_from_the_training_dialogues_only(redial: tuple[Catalog, float]) -> None:
    catalog, _ = redial
    expected: dict[str, int] = {}
    for name in TRAINING_FILES:
        for line in (REAL_DATA / name).read_text().splitlines():
            for movie_id in json.loads(line)["movieMentions"] or {}:
                expected[movie_id] = expected.get(movie_id, 0) + 1
    with (REAL_DATA / "redial" / "movies_with_mentions.csv").open(encoding="utf-8") as rows:
        nb_mentions = {row["movieId"]: int(row["nbMentions"]) for row in csv.DictReader(rows)}
    assert all(catalog.popularity[item_id] == expected.get(item_id, 0) for item_id in catalog.items)
    assert catalog.popularity != {item_id: float(count) for item_id, count in nb_mentions.items()}


@needs_real_data
def test_real_descriptions_contain_only_words_from_the_facts(redial: tuple[Catalog, float]) -> None:
    catalog, _ = redial
    for item in catalog:
        allowed = TEMPLATE_WORDS | fact_words(item) | (words(item.title) if not item.facts() else set())
        assert words(item.description) <= allowed, item
    for item in catalog:
        if set(item.facts()) <= {"year"}:  # nothing known but perhaps the year: no names, no genre, no plot
            assert item.description == (f"Film from {item.year}." if item.year else item.title)
