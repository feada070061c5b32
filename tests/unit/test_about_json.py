"""info/about.json: read within the bounds of all metadata, kept as a few fields of one-line printable text,
and never a reason to refuse a package (issue 12: the channel page's summary, home and license)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from reindexer import package_reader
from reindexer.package_fetch import read_package, recheck_records
from reindexer.package_reader import read_metadata
from reindexer.record_schema import MAX_DESCRIPTION_LENGTH, MAX_TEXT_LENGTH, checked_about
from reindexer.records import decode_about, encode_about
from reindexer.state import IndexedPackage, SubdirState
from reindexer.storage.local import LocalStore
from tests.support.archives import index_json, package_bytes, tar_bz2_archive

CONDA = "pkg-1.0-h0_0.conda"
TAR_BZ2 = "pkg-1.0-h0_0.tar.bz2"
BOTH_FORMATS = pytest.mark.parametrize("filename", [CONDA, TAR_BZ2])
ABOUT = {
    "summary": "A package",
    "home": "https://example.org/pkg",
    "license": "BSD-3-Clause",
    "description": "Does things.",
    "dev_url": "https://github.com/example/pkg",
    "doc_url": "https://pkg.readthedocs.io",
    # conda-build's extras, never kept
    "channels": ["conda-forge"],
    "root_pkgs": ["python 3.12.0 h0_0"],
    "conda_build_version": "24.1.0",
}
KEPT = {key: ABOUT[key] for key in ("summary", "home", "license", "description", "dev_url", "doc_url")}


def archive(filename: str, about: bytes | dict[str, Any] | None, **index: Any) -> bytes:
    extra = {}
    if about is not None:
        extra["info/about.json"] = about if isinstance(about, bytes) else json.dumps(about).encode()
    return package_bytes(filename, index_json(**index), extra)


def about_of(filename: str, data: bytes) -> dict[str, Any] | None:
    return read_metadata(filename, io.BytesIO(data)).about


def indexed(tmp_path: Path, filename: str, data: bytes) -> IndexedPackage:
    (tmp_path / "linux-64").mkdir(exist_ok=True)
    (tmp_path / "linux-64" / filename).write_bytes(data)
    store = LocalStore(tmp_path)
    obj = store.head(f"linux-64/{filename}")
    assert obj is not None
    outcome = read_package(store, "linux-64", obj, max_size=1 << 30)
    assert isinstance(outcome, IndexedPackage), outcome
    return outcome


# --- reading ------------------------------------------------------------------------------------------------


@BOTH_FORMATS
def test_about_json_is_read_beside_index_json(filename):
    assert about_of(filename, archive(filename, ABOUT)) == ABOUT


@BOTH_FORMATS
def test_a_package_without_about_json_has_none(filename):
    assert about_of(filename, archive(filename, None)) is None


@BOTH_FORMATS
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"text"', b'{"summary": NaN}', b'{"a": 1, "a": 2}', b"\xff\xfe"],
)
def test_about_json_that_is_no_json_object_is_left_out_not_refused(filename, raw):
    metadata = read_metadata(filename, io.BytesIO(archive(filename, raw)))

    assert metadata.about is None
    assert metadata.index["name"] == "pkg"


@BOTH_FORMATS
def test_an_oversized_about_json_is_passed_over_within_the_metadata_bound(filename, monkeypatch):
    # The same bound as index.json's: over it, about.json is not read at all (not even into memory).
    monkeypatch.setattr(package_reader, "METADATA_MEMBER_LIMIT", 256)
    data = archive(filename, {"summary": "x" * 300})

    metadata = read_metadata(filename, io.BytesIO(data))

    assert metadata.about is None
    assert metadata.index["name"] == "pkg"


@BOTH_FORMATS
def test_about_json_within_the_bound_is_read(filename, monkeypatch):
    monkeypatch.setattr(package_reader, "METADATA_MEMBER_LIMIT", 256)
    assert about_of(filename, archive(filename, {"summary": "x" * 100})) == {"summary": "x" * 100}


def test_about_json_after_index_json_in_a_tar_bz2_is_found():
    # rattler-build writes about.json first, conda-build after index.json: both are within info/.
    members = {
        "info/index.json": json.dumps(index_json()).encode(),
        "info/about.json": json.dumps({"summary": "late"}).encode(),
        "share/a.txt": b"a",
    }
    assert read_metadata(TAR_BZ2, io.BytesIO(tar_bz2_archive(members))).about == {"summary": "late"}


# --- which fields are kept ----------------------------------------------------------------------------------


def test_only_the_text_fields_the_page_and_channeldata_show_are_kept():
    assert checked_about(ABOUT) == KEPT


@pytest.mark.parametrize("about", [None, [], "summary", 3, {"summary": None}, {}])
def test_nothing_is_kept_of_what_is_not_an_object_of_strings(about):
    assert checked_about(about) == {}


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("  padded  ", "padded"),
        ("two\nlines\tand\r\ntabs", "two lines and tabs"),
        ("Ünïcödé ✓ 中文", "Ünïcödé ✓ 中文"),
        ("", None),
        ("   ", None),
        ("\x1b[31mred\x1b[0m", None),  # terminal escapes
        ("evil\u202etxt.exe", None),  # a bidi override
        ("zero\u200bwidth", None),  # a format character
        ("\ud800", None),  # a lone surrogate
        ("private\ue000use", None),
        ("x" * MAX_TEXT_LENGTH, "x" * MAX_TEXT_LENGTH),
        ("x" * (MAX_TEXT_LENGTH + 1), None),
        (42, None),
        (["a list"], None),
        ({"an": "object"}, None),
    ],
)
def test_a_field_is_one_line_of_printable_text_of_bounded_length_or_dropped(value, kept):
    about = checked_about({"summary": value, "license": "MIT"})

    assert about.get("summary") == kept
    assert about["license"] == "MIT", "a bad field costs that field only"


def test_urls_given_as_lists_keep_the_first_as_rattler_writes_them():
    about = checked_about({"home": ["https://a.example", "https://b.example"], "dev_url": [], "doc_url": [3]})

    assert about == {"home": "https://a.example"}


def test_a_long_description_is_cut_not_refused():
    description = "word " * 2000 + "\x00 a control character far beyond the cut"

    kept = checked_about({"description": description})["description"]

    assert len(kept) == MAX_DESCRIPTION_LENGTH
    assert kept.endswith("…") and kept.startswith("word word")
    assert kept.isprintable()


def test_a_short_description_is_kept_whole_with_its_whitespace_folded():
    assert checked_about({"description": "Line one.\n\nLine two."}) == {"description": "Line one. Line two."}


def test_kept_about_text_holds_no_raw_tab_or_newline_and_reads_back():
    text = encode_about(checked_about({"summary": 'quote " and backslash \\ <b>', "home": "https://x.y"}))

    assert "\t" not in text and "\n" not in text
    assert decode_about(text) == {"summary": 'quote " and backslash \\ <b>', "home": "https://x.y"}
    assert encode_about({}) == ""
    assert decode_about("") == {} and decode_about("{broken") == {} and decode_about("[1]") == {}


# --- from the package to the state --------------------------------------------------------------------------


@BOTH_FORMATS
def test_read_package_carries_the_kept_fields_into_the_indexed_package(tmp_path, filename):
    package = indexed(tmp_path, filename, archive(filename, ABOUT))

    assert decode_about(package.about) == KEPT
    assert "summary" not in json.loads(package.record), "about.json never reaches the record"


@BOTH_FORMATS
@pytest.mark.parametrize("about", [b"{broken", b"[]", {"summary": "\x07bell"}, None])
def test_a_bad_or_missing_about_json_never_rejects_the_package(tmp_path, filename, about):
    package = indexed(tmp_path, filename, archive(filename, about))

    assert package.about == ""
    assert json.loads(package.record)["name"] == "pkg"


def test_records_checked_again_under_new_rules_keep_their_about(tmp_path):
    package = indexed(tmp_path, CONDA, archive(CONDA, ABOUT))
    # A record kept under an older schema with a field today's rules drop: it is cleaned, about stays.
    old = IndexedPackage(
        package.etag, package.size, package.record[:-1] + ',"date":"2020-01-01"}', package.about
    )

    ((_, outcome),) = recheck_records({CONDA: old}, "linux-64", schema=0)

    assert isinstance(outcome, IndexedPackage)
    assert outcome.record == package.record
    assert outcome.about == package.about


def test_the_state_keeps_about_through_a_round_trip(tmp_path):
    package = indexed(tmp_path, CONDA, archive(CONDA, ABOUT))
    state = SubdirState(packages={CONDA: package})

    assert SubdirState.from_bytes(state.to_bytes()).packages[CONDA] == package
