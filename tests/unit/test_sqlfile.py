"""The named-section SQL parser (``obsqueue.sqlfile``) and the files it loads."""

from __future__ import annotations

from importlib import resources

import pytest

from obsqueue.engines.sqlite.engine import SYNCHRONOUS_LEVELS, compose_queries
from obsqueue.sqlfile import load_queries, parse_queries

SQL_PACKAGES = ("obsqueue.engines.sqlite", "obsqueue.engines.postgres", "obsqueue.engines.huey")


def test_sections_are_split_at_headers_and_stripped() -> None:
    text = "-- first --\nSELECT 1\n\n-- second_2 --\n  SELECT 2\nFROM t  \n\n"
    assert parse_queries(text) == {"first": "SELECT 1", "second_2": "SELECT 2\nFROM t"}


def test_text_before_the_first_header_is_ignored() -> None:
    text = "-- A file comment, not a section.\nSELECT 0;\n-- only --\nSELECT 1"
    assert parse_queries(text) == {"only": "SELECT 1"}


def test_comment_lines_inside_a_section_stay_part_of_it() -> None:
    text = "-- q --\n-- why this works\nSELECT 1 -- trailing\n-- one more -- but not a header\n"
    assert parse_queries(text) == {
        "q": "-- why this works\nSELECT 1 -- trailing\n-- one more -- but not a header"
    }


@pytest.mark.parametrize(
    "header", ["-- q --", "--q--", "--   q   --", "-- q --   ", "-- q --\r"], ids=repr
)
def test_header_spacing_variants_open_a_section(header: str) -> None:
    assert parse_queries(f"{header}\nSELECT 1\n") == {"q": "SELECT 1"}


@pytest.mark.parametrize(
    "line", ["-- Upper --", "-- two words --", "-- 1digit --", "x -- q --", "-- q -- x"], ids=repr
)
def test_lines_that_are_not_headers_stay_in_the_section(line: str) -> None:
    assert parse_queries(f"-- q --\nSELECT 1\n{line}\n") == {"q": f"SELECT 1\n{line}"}


def test_a_header_is_one_line() -> None:
    # a bare "--" line followed by a line ending in "--" is two comment lines, not a header
    text = "-- q --\nSELECT 1\n--\nx --\nSELECT 2"
    assert parse_queries(text) == {"q": "SELECT 1\n--\nx --\nSELECT 2"}


def test_crlf_files_parse_like_lf_files() -> None:
    lf = "-- a --\nSELECT 1\n-- b --\nSELECT 2\n"
    assert parse_queries(lf.replace("\n", "\r\n")) == parse_queries(lf)


def test_a_section_may_be_empty() -> None:
    assert parse_queries("-- a --\n-- b --\nSELECT 2") == {"a": "", "b": "SELECT 2"}


def test_no_header_means_no_sections() -> None:
    assert parse_queries("") == {}
    assert parse_queries("SELECT 1") == {}


def test_a_name_used_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'q' appears twice"):
        parse_queries("-- q --\nSELECT 1\n-- q --\nSELECT 2")


def test_every_shipped_sql_file_parses_into_non_empty_sections() -> None:
    files = [
        (package, f.name)
        for package in SQL_PACKAGES
        for f in resources.files(package).iterdir()
        if f.name.endswith(".sql")
    ]
    assert ("obsqueue.engines.sqlite", "queries.sql") in files
    for package, name in files:
        sections = load_queries(package, name)
        assert sections, name
        assert all(sections.values()), f"{package}/{name} has an empty section"


def test_load_queries_parses_each_file_once() -> None:
    sqlite = "obsqueue.engines.sqlite"
    assert load_queries(sqlite, "queries.sql") is load_queries(sqlite, "queries.sql")


def test_a_missing_file_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        load_queries("obsqueue.engines.sqlite", "no_such_engine.sql")


@pytest.mark.parametrize("level", SYNCHRONOUS_LEVELS)
def test_sqlite_queries_are_fully_composed(level: str) -> None:
    queries = compose_queries("ns_1", level)
    assert not [name for name, text in queries.items() if "{" in text or "}" in text]
    assert queries["set_synchronous"] == f"PRAGMA synchronous = {level}"
    assert '"ns_1_messages_v1"' in queries["claim"]
