"""Property: whatever JSON a package's info/index.json (and run_exports.json) holds, building its record
gives either a record rattler's own repodata parser accepts, or a one-line rejection — never an exception."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rattler import Channel, RepoData

from reindexer.layout import parse_package_filename
from reindexer.package_reader import ArchiveDigests, BadPackageError, PackageMetadata
from reindexer.records import build_record, encode_record
from reindexer.reports import MAX_REASON_LENGTH
from reindexer.shards import render_shard
from reindexer.strict_json import StrictJsonError, load_strict_json

FILENAME = "pkg-1.0-h0_0.conda"
DIGESTS = ArchiveDigests(md5="0" * 32, sha256="1" * 64, size=123)
KNOWN_FIELDS = [
    "name",
    "version",
    "build",
    "build_number",
    "depends",
    "constrains",
    "subdir",
    "noarch",
    "license",
    "license_family",
    "timestamp",
    "track_features",
    "features",
    "purls",
    "python_site_packages_path",
    "arch",
    "platform",
    "legacy_bz2_md5",
    "legacy_bz2_size",
    "fn",
    "url",
    "channel",
    "md5",
    "sha256",
    "size",
    "run_exports",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["python", "generic", "numpy >=1.2", "1!!2", "*", "pkg:pypi/x", "\ud800", "a\nb", ""]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
specs = st.lists(
    st.one_of(
        st.sampled_from(
            ["python >=3.8,<4.0a0", "numpy", "foo*", "numpy 1!!2", "libc 2.*", "x[version='>1']"]
        ),
        st.text(max_size=30),
    ),
    max_size=4,
)
texts = st.text(max_size=40)
# Per field, values a producer might write, then anything at all.
plausible = {
    "build_number": st.integers(min_value=-1, max_value=2**64),
    "subdir": st.sampled_from(["linux-64", "osx-64", ""]),
    "depends": specs,
    "constrains": specs,
    "noarch": st.sampled_from(["python", "generic", True, False, "x", 1]),
    "timestamp": st.integers(min_value=-1, max_value=2**63),
    "track_features": texts | st.lists(texts, max_size=3),
    "purls": st.lists(st.sampled_from(["pkg:pypi/requests", "pkg:pypi/x@1.0", "notapurl", ""]), max_size=3),
    "run_exports": st.dictionaries(
        st.sampled_from(["weak", "strong", "noarch", "weak_constrains", "x"]), specs
    ),
}
optional_fields = {
    field: st.one_of(plausible.get(field, texts), json_values)
    for field in KNOWN_FIELDS
    if field not in ("name", "version", "build")
}
# Mostly well-formed documents with fields drawn per field, so the field rules are reached and not only
# the identity check; sometimes anything at all.
index_documents = st.one_of(
    st.fixed_dictionaries(
        {"name": st.just("pkg"), "version": st.just("1.0"), "build": st.just("h0_0")},
        optional=optional_fields,
    ),
    st.dictionaries(st.sampled_from(KNOWN_FIELDS) | st.text(max_size=8), json_values, max_size=8),
)
run_exports_documents = st.none() | plausible["run_exports"] | json_values


def rattler_parses(record: dict[str, Any], tmp_path: Path) -> None:
    """Load a one-record repodata.json with py-rattler, the client pixi is built on."""
    path = tmp_path / "repodata.json"
    document = {"info": {"subdir": record["subdir"]}, "packages": {}, "packages.conda": {FILENAME: record}}
    path.write_text(json.dumps(document, allow_nan=False))
    records = RepoData.from_path(path).into_repo_data(Channel("https://example.org/channel"))
    assert [str(r.name.normalized) for r in records] == [record["name"]]


def check(index: Any, run_exports: Any, tmp_path: Path) -> None:
    filename = parse_package_filename(FILENAME)
    assert filename is not None
    metadata = PackageMetadata(index=index, run_exports=run_exports)
    try:
        record = build_record(filename, "linux-64", metadata, DIGESTS)
    except BadPackageError as error:
        # Values are quoted shortened, so a reason stays short before the reporting cap applies.
        assert "\n" not in str(error) and len(str(error)) < 3 * MAX_REASON_LENGTH, str(error)
        return
    text = encode_record(record)  # ValueError here would be a NaN that slipped through
    assert json.loads(text) == record
    assert not {"fn", "url", "channel", "legacy_bz2_md5", "legacy_bz2_size"} & record.keys()
    assert (record["md5"], record["sha256"], record["size"]) == (DIGESTS.md5, DIGESTS.sha256, DIGESTS.size)
    render_shard({FILENAME: text})
    msgpack.packb(record)
    rattler_parses(record, tmp_path)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(index=index_documents, run_exports=run_exports_documents)
@example(index={"name": "pkg", "version": "1.0", "build": "h0_0", "timestamp": 2**62}, run_exports=None)
@example(index={"name": "pkg", "version": "1.0", "build": "h0_0", "noarch": 1}, run_exports=None)
@example(index={"name": "pkg", "version": "1.0", "build": "h0_0", "license": "\x1b[31m"}, run_exports=None)
@example(index={"name": "pkg", "version": "1.0", "build": "h0_0"}, run_exports={"weak": ["a 1!!2"]})
@example(index={"name": "pkg", "version": "1.0", "build": "h0_0", "purls": ["notapurl"]}, run_exports=None)
def test_any_index_json_gives_a_record_rattler_reads_or_a_rejection(index, run_exports, tmp_path):
    check(index, run_exports, tmp_path)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda value: json.dumps(value, allow_nan=True),
            json_values,
        ),
        st.sampled_from(
            [
                '{"a": NaN}',
                '{"a": -Infinity}',
                '{"a": 1e999}',
                '{"a": 18446744073709551616}',
                '{"a": "\\ud800"}',
                '{"a": 1, "a": 2}',
                "[" * 5000,
                '{"a": ' + "9" * 5000 + "}",
            ]
        ),
    )
)
def test_strict_json_accepts_only_what_can_be_written_back(text):
    try:
        value = load_strict_json(text.encode("utf-8", "surrogatepass"))
    except StrictJsonError as error:
        assert "\n" not in str(error)
        return
    written = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert json.loads(written) == value
    msgpack.packb(value)
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(value))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for child in value.values() for leaf in _leaves(child)]
    if isinstance(value, list):
        return [leaf for child in value for leaf in _leaves(child)]
    return [value]
