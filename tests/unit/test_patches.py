"""Patch instructions (reindexer.patches): what a patch_instructions.json may hold, how instructions compose
and are edited, and the patched view they give, checked against conda-index's own semantics written down
as expected records, and read back by rattler."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from rattler import Channel, ChannelConfig, RepoData

from reindexer import patches
from reindexer.layout import parse_package_filename
from reindexer.patches import (
    MAX_INSTRUCTIONS_BYTES,
    REVOKED_DEPENDENCY,
    PatchedView,
    PatchError,
    PatchInstructions,
    apply_instructions,
    changed_records,
)
from reindexer.records import RecordJson, checked_stored_record, decode_record, encode_record
from reindexer.repodata import render_repodata
from reindexer.reports import MAX_REASON_LENGTH
from tests.support.clients import parse_repodata_json

SUBDIR = "linux-64"


# --- records and instructions, built by hand ---------------------------------------------------------------


def record(filename: str, **fields: Any) -> dict[str, Any]:
    """A record as the indexer keeps it (checked by the record schema), digests derived from the file name."""
    parsed = parse_package_filename(filename)
    assert parsed is not None, filename
    document: dict[str, Any] = {
        "name": parsed.name,
        "version": parsed.version,
        "build": parsed.build,
        "build_number": 0,
        "depends": [],
        "license": "MIT",
        "timestamp": 1704067200000,
        "subdir": SUBDIR,
        "md5": hashlib.md5(filename.encode()).hexdigest(),
        "sha256": hashlib.sha256(filename.encode()).hexdigest(),
        "size": len(filename),
    }
    document.update(fields)
    return checked_stored_record(document, parsed, SUBDIR)


def stored(filename: str, **fields: Any) -> RecordJson:
    return encode_record(record(filename, **fields))


def instructions(
    packages: Mapping[str, Mapping[str, Any]] | None = None,
    packages_conda: Mapping[str, Mapping[str, Any]] | None = None,
    remove: tuple[str, ...] = (),
    revoke: tuple[str, ...] = (),
    reasons: dict[str, str] | None = None,
) -> PatchInstructions:
    return PatchInstructions(
        packages=packages or {},
        packages_conda=packages_conda or {},
        remove=frozenset(remove),
        revoke=frozenset(revoke),
        reasons=reasons or {},
    )


def raw(document: Any) -> bytes:
    return json.dumps(document).encode()


def patched(view: PatchedView, filename: str) -> dict[str, Any]:
    return decode_record(view.records[filename])


# --- parse: what a patch_instructions.json may hold ------------------------------------------------------

GOOD_TAR = "pkg-1.0-h0_0.tar.bz2"
GOOD_CONDA = "pkg-1.0-h0_0.conda"

REFUSED = [
    pytest.param(b"not json", "is not valid JSON", id="not-json"),
    pytest.param(b"", "is not valid JSON", id="empty-file"),
    pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
    pytest.param(b'{"remove": [NaN]}', "NaN is not a JSON number", id="nan"),
    pytest.param(b'{"packages": {"pkg-1.0-h0_0.tar.bz2": {"size": 1e999}}}', "out of range", id="infinity"),
    pytest.param(
        b'{"packages": {"pkg-1.0-h0_0.tar.bz2": {"size": 99999999999999999999}}}', "64-bit", id="bigint"
    ),
    pytest.param(b'{"remove": [], "remove": ["pkg-1.0-h0_0.conda"]}', "appears twice", id="duplicate-key"),
    pytest.param(
        b'{"packages": {"pkg-1.0-h0_0.tar.bz2": {"x": ' + b"[" * 40 + b"]" * 40 + b"}}}",
        "nested deeper than 32 levels",
        id="deep-nesting",
    ),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested deeper than", id="very-deep-nesting"),
    pytest.param(b'{"remove": ["\\ud800"]}', "surrogate", id="lone-surrogate"),
    pytest.param(b"[]", "must be a JSON object, not a list", id="top-level-list"),
    pytest.param(b'"packages"', "must be a JSON object, not a string", id="top-level-string"),
    pytest.param(b"null", "must be a JSON object, not null", id="top-level-null"),
    pytest.param(
        raw({"patch_instructions_version": 2}), "patch_instructions_version 2 is not supported", id="v2"
    ),
    pytest.param(raw({"patch_instructions_version": "1"}), "'1' is not supported", id="version-string"),
    pytest.param(raw({"patch_instructions_version": True}), "True is not supported", id="version-bool"),
    pytest.param(raw({"patch_instructions_version": 1.0}), "1.0 is not supported", id="version-float"),
    pytest.param(raw({"patch_instructions_version": None}), "None is not supported", id="version-null"),
    pytest.param(raw({"patch_instructions_version": 0}), "0 is not supported", id="version-0"),
    pytest.param(raw({"packages": []}), "packages must be an object of overrides", id="packages-list"),
    pytest.param(
        raw({"packages": None}),
        "packages must be an object of overrides by file name, not null",
        id="packages-null",
    ),
    pytest.param(
        raw({"packages.conda": "x"}), "packages.conda must be an object", id="packages-conda-string"
    ),
    pytest.param(
        raw({"packages": {GOOD_CONDA: {}}}),
        "packages names 'pkg-1.0-h0_0.conda', not a .tar.bz2",
        id="conda-in-tar",
    ),
    pytest.param(
        raw({"packages.conda": {GOOD_TAR: {}}}), "not a .conda package file name", id="tar-in-packages-conda"
    ),
    pytest.param(raw({"packages": {"pkg-1.0.tar.bz2": {}}}), "not a .tar.bz2 package", id="two-part-name"),
    pytest.param(raw({"packages": {"pkg-1.0-h0_0.zip": {}}}), "not a .tar.bz2 package", id="not-a-package"),
    pytest.param(raw({"packages": {"../x-1-0.tar.bz2/..": {}}}), "not a .tar.bz2 package", id="path"),
    pytest.param(raw({"packages": {"a b-1-0.tar.bz2": {}}}), "not a .tar.bz2 package", id="whitespace"),
    pytest.param(
        raw({"packages": {"x" * 2000 + "-1-0.tar.bz2": {}}}), "not a .tar.bz2 package", id="overlong"
    ),
    pytest.param(
        raw({"packages": {GOOD_TAR: ["depends"]}}),
        "must be an object of fields, not a list",
        id="override-list",
    ),
    pytest.param(
        raw({"packages": {GOOD_TAR: None}}), "must be an object of fields, not null", id="override-null"
    ),
    pytest.param(
        raw({"remove": GOOD_TAR}), "remove must be a list of package file names, not a string", id="str"
    ),
    pytest.param(raw({"remove": None}), "remove must be a list", id="remove-null"),
    pytest.param(raw({"remove": [5]}), "remove holds 5, not a package file name", id="remove-number"),
    pytest.param(raw({"remove": [None]}), "remove holds None", id="remove-null-item"),
    pytest.param(raw({"revoke": {"a": 1}}), "revoke must be a list", id="revoke-object"),
    pytest.param(raw({"revoke": [7]}), "revoke holds 7", id="revoke-not-text"),
    pytest.param(raw({"reindexer_reasons": []}), "reindexer_reasons must be an object", id="reasons-list"),
    pytest.param(
        raw({"reindexer_reasons": {"x": "y"}}), "reindexer_reasons names 'x'", id="reasons-bad-name"
    ),
    pytest.param(
        raw({"reindexer_reasons": {GOOD_TAR: "two\nlines"}}),
        "must be one line of printable text",
        id="two-lines",
    ),
    pytest.param(raw({"reindexer_reasons": {GOOD_TAR: ""}}), "must be one line", id="reason-empty"),
    pytest.param(raw({"reindexer_reasons": {GOOD_TAR: 7}}), "must be one line", id="reason-number"),
    pytest.param(raw({"reindexer_reasons": {GOOD_TAR: "\x1b[31m"}}), "must be one line", id="reason-escape"),
    pytest.param(
        raw({"reindexer_reasons": {GOOD_TAR: "x" * (MAX_REASON_LENGTH + 1)}}),
        f"over the limit of {MAX_REASON_LENGTH}",
        id="reason-too-long",
    ),
]


@pytest.mark.parametrize(("data", "says"), REFUSED)
def test_hostile_or_malformed_instructions_are_refused_in_one_line(data, says):
    """Protects the indexer from a bad patch_instructions.json: each is refused with a short, one-line
    reason (the caller reports it and keeps the last good instructions), never a crash or a half-read file."""
    with pytest.raises(PatchError, match=re.escape(says)) as error:
        PatchInstructions.parse(data)
    message = str(error.value)
    assert "\n" not in message
    assert len(message) < 400


def test_oversize_instructions_are_refused_before_they_are_parsed():
    """Protects memory and time: the size bound is checked before any decoding."""
    data = b"{" + b" " * MAX_INSTRUCTIONS_BYTES + b"}"

    with pytest.raises(PatchError, match=f"over the limit of {MAX_INSTRUCTIONS_BYTES}"):
        PatchInstructions.parse(data)


def test_conda_index_shaped_instructions_parse():
    """Protects compatibility with what conda-index and conda-forge write: version 1, both override sections,
    remove and revoke of either format, and keys conda ignores (ignored here too)."""
    document = {
        "patch_instructions_version": 1,
        "packages": {GOOD_TAR: {"depends": ["python >=3.8"], "license": None}},
        "packages.conda": {GOOD_CONDA: {"constrains": ["numpy <2"]}},
        "remove": ["gone-1.0-h0_0.tar.bz2", "gone-2.0-h0_0.conda", "gone-1.0-h0_0.tar.bz2"],
        "revoke": ["bad-1.0-h0_0.tar.bz2"],
        "some_future_key": {"anything": [1, 2]},
    }

    parsed = PatchInstructions.parse(raw(document))

    assert parsed.packages == {GOOD_TAR: {"depends": ["python >=3.8"], "license": None}}
    assert parsed.packages_conda == {GOOD_CONDA: {"constrains": ["numpy <2"]}}
    assert parsed.remove == {"gone-1.0-h0_0.tar.bz2", "gone-2.0-h0_0.conda"}
    assert parsed.revoke == {"bad-1.0-h0_0.tar.bz2"}
    assert parsed.reasons == {}


@pytest.mark.parametrize("data", [b"{}", raw({"patch_instructions_version": 1}), b' {"unknown": 1} '])
def test_instructions_without_entries_are_empty(data):
    """Protects the unpatched case: an empty file (version absent means 1) is the identity."""
    assert PatchInstructions.parse(data) == PatchInstructions.EMPTY
    assert PatchInstructions.parse(data).is_empty()


# --- to_bytes: canonical and read back equal --------------------------------------------------------------

RICH = instructions(
    packages={
        "zeta-1.0-h0_0.tar.bz2": {"depends": ["b", "a"], "license": None, "run_exports": {"weak": ["zeta"]}},
        GOOD_TAR: {"timestamp": 1, "license": "Zürich license"},
    },
    packages_conda={GOOD_CONDA: {"constrains": ["numpy <2"], "noarch": "python"}},
    remove=("gone-1.0-h0_0.tar.bz2", "a-1.0-h0_0.conda"),
    revoke=("bad-1.0-h0_0.tar.bz2",),
    reasons={"gone-1.0-h0_0.tar.bz2": "broken ABI — see issue 12"},
)


@pytest.mark.parametrize(
    "value",
    [PatchInstructions.EMPTY, RICH, instructions(remove=(GOOD_TAR,)), instructions(packages={GOOD_TAR: {}})],
)
def test_to_bytes_is_read_back_equal(value):
    """Protects operators' edits (read, change, write back): nothing is lost or changed on the way."""
    data = value.to_bytes()

    assert PatchInstructions.parse(data) == value
    assert PatchInstructions.parse(data).to_bytes() == data


def test_to_bytes_is_canonical():
    """Protects reproducible files and states: sorted keys and lists, compact, version 1, whatever the order
    the instructions were built in; our reasons key only when there are reasons."""
    shuffled = instructions(
        packages={GOOD_TAR: {"license": "Zürich license", "timestamp": 1}, **dict(RICH.packages)},
        packages_conda=dict(RICH.packages_conda),
        remove=("a-1.0-h0_0.conda", "gone-1.0-h0_0.tar.bz2"),
        revoke=tuple(RICH.revoke),
        reasons=dict(RICH.reasons),
    )

    assert shuffled.to_bytes() == RICH.to_bytes()
    document = json.loads(RICH.to_bytes())
    assert list(document) == sorted(document)
    assert document["patch_instructions_version"] == 1
    assert document["remove"] == ["a-1.0-h0_0.conda", "gone-1.0-h0_0.tar.bz2"]
    assert document["packages"]["zeta-1.0-h0_0.tar.bz2"]["depends"] == [
        "b",
        "a",
    ]  # a spec list keeps its order
    assert document["packages"]["zeta-1.0-h0_0.tar.bz2"]["license"] is None
    assert "Zürich".encode() in RICH.to_bytes()
    assert json.loads(PatchInstructions.EMPTY.to_bytes()) == {
        "packages": {},
        "packages.conda": {},
        "patch_instructions_version": 1,
        "remove": [],
        "revoke": [],
    }


def test_to_bytes_refuses_to_write_what_parse_would_refuse(monkeypatch):
    """Protects the operators' compare-and-swap edits from writing a file too big to be read again."""
    monkeypatch.setattr(patches, "MAX_INSTRUCTIONS_BYTES", 100)

    with pytest.raises(PatchError, match="over the limit of 100"):
        instructions(remove=tuple(f"pkg-{n}-h0_0.conda" for n in range(10))).to_bytes()


def test_instructions_are_read_only():
    """Protects shared instructions (EMPTY, a state's) from being changed through their mappings."""
    value = instructions(packages={GOOD_TAR: {"license": "MIT"}}, reasons={GOOD_TAR: "why"})

    with pytest.raises(TypeError):
        value.packages[GOOD_TAR] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        value.packages[GOOD_TAR]["license"] = "GPL"  # type: ignore[index]
    with pytest.raises(TypeError):
        value.reasons["x"] = "y"  # type: ignore[index]


# --- then(), yanked(), unyanked(): the laws their callers rely on -----------------------------------------

A = instructions(
    packages={GOOD_TAR: {"license": "A", "depends": ["a"]}, "x-1-0.tar.bz2": {"license": "A"}},
    packages_conda={GOOD_CONDA: {"license": "A-conda"}},
    remove=("r-1-0.conda",),
    revoke=("v-1-0.tar.bz2",),
    reasons={"r-1-0.conda": "A's reason"},
)
B = instructions(
    packages={GOOD_TAR: {"license": "B", "timestamp": 2}},
    packages_conda={"y-1-0.conda": {"license": None}},
    remove=("r-2-0.tar.bz2",),
    reasons={"r-1-0.conda": "B's reason", "r-2-0.tar.bz2": "B"},
)
C = instructions(
    packages={"x-1-0.tar.bz2": {"license": None}},
    packages_conda={GOOD_CONDA: {"depends": ["c"]}},
    revoke=("v-2-0.conda",),
)


@pytest.mark.parametrize("value", [PatchInstructions.EMPTY, A, B, C])
def test_empty_instructions_are_the_identity_of_then(value):
    """Protects the patch sources' composition: no patch package or no subdir file changes nothing."""
    assert value.then(PatchInstructions.EMPTY) == value
    assert PatchInstructions.EMPTY.then(value) == value


def test_then_is_associative():
    """Protects composing more than two sources in any grouping."""
    assert A.then(B).then(C) == A.then(B.then(C))


def test_then_merges_per_file_and_field_later_winning():
    """Protects the subdir file's precedence over the patch package's instructions (conda-forge practice)."""
    combined = A.then(B)

    assert combined.packages[GOOD_TAR] == {"license": "B", "depends": ["a"], "timestamp": 2}
    assert combined.packages["x-1-0.tar.bz2"] == {"license": "A"}
    # B's .tar.bz2 override reaches the .conda twin after A's .conda-only override (as A, then B would).
    assert combined.packages_conda[GOOD_CONDA] == {"license": "B", "timestamp": 2}
    # A null is kept: it removes the field when the combined instructions are applied.
    assert combined.packages_conda["y-1-0.conda"] == {"license": None}
    assert A.then(C).packages["x-1-0.tar.bz2"] == {"license": None}
    assert combined.remove == {"r-1-0.conda", "r-2-0.tar.bz2"}
    assert combined.revoke == {"v-1-0.tar.bz2"}
    assert combined.reasons == {"r-1-0.conda": "B's reason", "r-2-0.tar.bz2": "B"}


def test_then_leaves_both_operands_unchanged():
    before = (A.to_bytes(), B.to_bytes())

    A.then(B)

    assert (A.to_bytes(), B.to_bytes()) == before


SEQUENTIAL_RECORDS = {
    name: stored(name, depends=["zlib"])
    for name in (
        GOOD_TAR,
        GOOD_CONDA,
        "x-1-0.tar.bz2",
        "x-1-0.conda",
        "y-1-0.conda",
        "r-1-0.conda",
        "r-2-0.tar.bz2",
        "r-2-0.conda",
        "v-1-0.tar.bz2",
    )
}


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param(A, B, id="overrides-twins-removals"),
        pytest.param(B, C, id="null-then-value"),
        pytest.param(C, B, id="value-then-null"),
        pytest.param(A, C, id="conda-override-after-tar-override"),
        pytest.param(
            instructions(remove=(GOOD_TAR,)), instructions(packages={GOOD_TAR: {"license": "Z"}}), id="rm"
        ),
        pytest.param(
            instructions(packages={GOOD_TAR: {"license": "Z"}}), instructions(remove=(GOOD_CONDA,)), id="rm2"
        ),
    ],
)
def test_applying_then_is_applying_one_after_the_other(earlier, later):
    """Protects the meaning of then(): the combined instructions give the view that applying the first and
    then the second gives (records not revoked by the first and overridden by the second)."""
    first = apply_instructions(SEQUENTIAL_RECORDS, earlier, SUBDIR)
    one_after_the_other = apply_instructions(first.records, later, SUBDIR)

    combined = apply_instructions(SEQUENTIAL_RECORDS, earlier.then(later), SUBDIR)

    assert combined.records == one_after_the_other.records
    assert combined.removed == sorted({*first.removed, *one_after_the_other.removed})


def test_yanked_removes_the_files_with_a_one_line_reason():
    """Protects `reindexer yank`: the files go to conda's remove list with the operator's reason, which
    must itself pass parse() (one printable line, bounded)."""
    names = ["gone-1.0-h0_0.tar.bz2", "gone-1.0-h0_0.conda"]

    result = A.yanked(names, "broken\nbuild\t" + "x" * 1000)

    assert result.remove == A.remove | set(names)
    assert set(result.reasons) == {*A.reasons, *names}
    reason = result.reasons[names[0]]
    assert reason.startswith("broken build x") and len(reason) == MAX_REASON_LENGTH
    assert PatchInstructions.parse(result.to_bytes()) == result
    assert (result.packages, result.packages_conda, result.revoke) == (A.packages, A.packages_conda, A.revoke)


def test_yanked_is_idempotent_and_keeps_an_earlier_reason_when_given_none():
    once = PatchInstructions.EMPTY.yanked([GOOD_TAR], "why")

    assert once.yanked([GOOD_TAR], "why") == once
    assert once.yanked([GOOD_TAR], None) == once
    assert once.yanked([GOOD_TAR], "  ") == once
    assert PatchInstructions.EMPTY.yanked([GOOD_TAR], None).reasons == {}


@pytest.mark.parametrize("name", ["repodata.json", "pkg-1.0.conda", "a b-1-0.conda", ""])
def test_yanked_refuses_what_is_no_package_file_name(name):
    """Protects the file from entries parse() would refuse (which would block every later edit)."""
    with pytest.raises(PatchError, match="is not a package file name"):
        A.yanked([GOOD_TAR, name], None)


def test_unyanked_undoes_yanked():
    """Protects `reindexer unyank`: a yank and its unyank leave the instructions as they were."""
    names = ["gone-1.0-h0_0.tar.bz2", "gone-1.0-h0_0.conda"]

    assert A.yanked(names, "oops").unyanked(names) == A


def test_unyanked_drops_the_files_from_remove_revoke_and_reasons_only():
    result = A.unyanked(["r-1-0.conda", "v-1-0.tar.bz2", "never-1-0.conda"])

    assert result.remove == set()
    assert result.revoke == set()
    assert result.reasons == {}
    assert (result.packages, result.packages_conda) == (A.packages, A.packages_conda)
    assert A.unyanked([]) == A


# --- apply_instructions: conda-index's semantics, written down as expected records ----------------------

FIXTURE_RECORDS = {
    # untouched
    "keep-1.0-h0_0.tar.bz2": stored("keep-1.0-h0_0.tar.bz2", depends=["python >=3.8"]),
    "keep-1.0-h0_0.conda": stored("keep-1.0-h0_0.conda", depends=["python >=3.8"]),
    # removed by its .tar.bz2 name: both twins go
    "gone-1.0-h0_0.tar.bz2": stored("gone-1.0-h0_0.tar.bz2"),
    "gone-1.0-h0_0.conda": stored("gone-1.0-h0_0.conda"),
    # removed by its .conda name: only the .conda goes
    "half-1.0-h0_0.tar.bz2": stored("half-1.0-h0_0.tar.bz2"),
    "half-1.0-h0_0.conda": stored("half-1.0-h0_0.conda"),
    # revoked by its .tar.bz2 name: both twins are revoked
    "bad-1.0-h0_0.tar.bz2": stored("bad-1.0-h0_0.tar.bz2", depends=["zlib >=1.2"]),
    "bad-1.0-h0_0.conda": stored("bad-1.0-h0_0.conda", depends=["zlib >=1.2"]),
    # depends override by the .tar.bz2 name: reaches the .conda twin
    "deps-1.0-h0_0.tar.bz2": stored("deps-1.0-h0_0.tar.bz2", depends=["python >=3.8", "six"]),
    "deps-1.0-h0_0.conda": stored("deps-1.0-h0_0.conda", depends=["python >=3.8", "six"]),
    # constrains override in packages.conda: the .conda only
    "pins-1.0-h0_0.tar.bz2": stored("pins-1.0-h0_0.tar.bz2", constrains=["openssl >=3"]),
    "pins-1.0-h0_0.conda": stored("pins-1.0-h0_0.conda", constrains=["openssl >=3"]),
    # fields removed with null, one added
    "lic-1.0-h0_0.tar.bz2": stored("lic-1.0-h0_0.tar.bz2", license="GPL", track_features="mkl"),
    # overridden in both sections: packages.conda applies after packages
    "both-1.0-h0_0.tar.bz2": stored("both-1.0-h0_0.tar.bz2"),
    "both-1.0-h0_0.conda": stored("both-1.0-h0_0.conda"),
    # an object field: an override object is merged into it (conda merges nested objects), null removes a key
    "rx-1.0-h0_0.conda": stored("rx-1.0-h0_0.conda", run_exports={"weak": ["rx >=1"], "strong": ["rx-core"]}),
    "rx-2.0-h0_0.conda": stored("rx-2.0-h0_0.conda", run_exports={"weak": ["rx >=2"], "strong": ["rx-core"]}),
}

FIXTURE_INSTRUCTIONS = PatchInstructions.parse(
    raw(
        {
            "patch_instructions_version": 1,
            "packages": {
                "deps-1.0-h0_0.tar.bz2": {"depends": ["python >=3.8,<3.12", "numpy >=1.21"]},
                "lic-1.0-h0_0.tar.bz2": {"license": None, "track_features": None, "license_family": "GPL"},
                "both-1.0-h0_0.tar.bz2": {"license": "BSD-3-Clause", "timestamp": 1704067201000},
                "absent-1.0-h0_0.tar.bz2": {"license": "ignored"},
            },
            "packages.conda": {
                "pins-1.0-h0_0.conda": {"constrains": ["openssl >=3,<4"]},
                "both-1.0-h0_0.conda": {"license": "Apache-2.0"},
                "rx-1.0-h0_0.conda": {"run_exports": {"weak": ["rx >=1.1"]}},
                "rx-2.0-h0_0.conda": {"run_exports": {"strong": None}},
                "absent-1.0-h0_0.conda": {"depends": ["not a spec >=>="]},
            },
            "remove": ["gone-1.0-h0_0.tar.bz2", "half-1.0-h0_0.conda", "absent-2.0-h0_0.conda"],
            "revoke": ["bad-1.0-h0_0.tar.bz2", "gone-1.0-h0_0.tar.bz2", "absent-3.0-h0_0.tar.bz2"],
        }
    )
)

EXPECTED_RECORDS = {
    "keep-1.0-h0_0.tar.bz2": record("keep-1.0-h0_0.tar.bz2", depends=["python >=3.8"]),
    "keep-1.0-h0_0.conda": record("keep-1.0-h0_0.conda", depends=["python >=3.8"]),
    "half-1.0-h0_0.tar.bz2": record("half-1.0-h0_0.tar.bz2"),
    "bad-1.0-h0_0.tar.bz2": {
        **record("bad-1.0-h0_0.tar.bz2", depends=["zlib >=1.2", REVOKED_DEPENDENCY]),
        "revoked": True,
    },
    "bad-1.0-h0_0.conda": {
        **record("bad-1.0-h0_0.conda", depends=["zlib >=1.2", REVOKED_DEPENDENCY]),
        "revoked": True,
    },
    "deps-1.0-h0_0.tar.bz2": record("deps-1.0-h0_0.tar.bz2", depends=["python >=3.8,<3.12", "numpy >=1.21"]),
    "deps-1.0-h0_0.conda": record("deps-1.0-h0_0.conda", depends=["python >=3.8,<3.12", "numpy >=1.21"]),
    "pins-1.0-h0_0.tar.bz2": record("pins-1.0-h0_0.tar.bz2", constrains=["openssl >=3"]),
    "pins-1.0-h0_0.conda": record("pins-1.0-h0_0.conda", constrains=["openssl >=3,<4"]),
    "lic-1.0-h0_0.tar.bz2": {
        **{key: value for key, value in record("lic-1.0-h0_0.tar.bz2").items() if key != "license"},
        "license_family": "GPL",
    },
    "both-1.0-h0_0.tar.bz2": record("both-1.0-h0_0.tar.bz2", license="BSD-3-Clause", timestamp=1704067201000),
    "both-1.0-h0_0.conda": record("both-1.0-h0_0.conda", license="Apache-2.0", timestamp=1704067201000),
    "rx-1.0-h0_0.conda": record(
        "rx-1.0-h0_0.conda", run_exports={"weak": ["rx >=1.1"], "strong": ["rx-core"]}
    ),
    "rx-2.0-h0_0.conda": record("rx-2.0-h0_0.conda", run_exports={"weak": ["rx >=2"]}),
}
EXPECTED_REMOVED = ["gone-1.0-h0_0.conda", "gone-1.0-h0_0.tar.bz2", "half-1.0-h0_0.conda"]


def test_patched_view_follows_conda_index():
    """Protects what solvers see: each of conda-index's rules (remove and revoke reaching the .conda twin of
    a .tar.bz2 name, overrides replacing lists, a .tar.bz2 override reaching its .conda twin,
    packages.conda after packages, null removing a field, nested objects merged, names absent from the
    records ignored), as conda-index would write them."""
    view = apply_instructions(FIXTURE_RECORDS, FIXTURE_INSTRUCTIONS, SUBDIR)

    assert {name: decode_record(text) for name, text in view.records.items()} == EXPECTED_RECORDS
    assert view.removed == EXPECTED_REMOVED
    # Records not named keep their text; patched ones are canonical (key-sorted) records.
    assert view.records["keep-1.0-h0_0.conda"] is FIXTURE_RECORDS["keep-1.0-h0_0.conda"]
    assert view.records["half-1.0-h0_0.tar.bz2"] is FIXTURE_RECORDS["half-1.0-h0_0.tar.bz2"]
    for name, expected in EXPECTED_RECORDS.items():
        assert view.records[name] == encode_record(dict(sorted(expected.items())))
    assert '"revoked":true' in view.records["bad-1.0-h0_0.conda"]


def test_patched_view_is_read_by_rattler(tmp_path: Path):
    """Protects pixi and other rattler clients: the patched repodata.json (revoked records and the removed
    list included) parses with RepoData and SparseRepoData, with the patched values."""
    view = apply_instructions(FIXTURE_RECORDS, FIXTURE_INSTRUCTIONS, SUBDIR)
    path = tmp_path / "repodata.json"
    # The removed list is added here so this test needs no more of render_repodata than the records.
    document = json.loads(render_repodata(SUBDIR, view.records))
    path.write_text(json.dumps({**document, "removed": view.removed}))

    assert parse_repodata_json(path, SUBDIR) == set(view.records)
    by_name = {
        rec.file_name: rec
        for rec in RepoData.from_path(path).into_repo_data(Channel("patched", ChannelConfig()))
    }
    assert by_name["bad-1.0-h0_0.conda"].depends == ["zlib >=1.2", REVOKED_DEPENDENCY]
    assert by_name["deps-1.0-h0_0.conda"].depends == ["python >=3.8,<3.12", "numpy >=1.21"]
    assert by_name["pins-1.0-h0_0.conda"].constrains == ["openssl >=3,<4"]
    assert by_name["lic-1.0-h0_0.tar.bz2"].license is None
    assert by_name["lic-1.0-h0_0.tar.bz2"].track_features == []
    assert json.loads(path.read_bytes())["removed"] == EXPECTED_REMOVED


def test_revoking_twice_or_a_record_already_depending_on_the_marker_adds_it_once():
    records = {
        GOOD_TAR: stored(GOOD_TAR, depends=["zlib", REVOKED_DEPENDENCY]),
        GOOD_CONDA: stored(GOOD_CONDA),
    }

    view = apply_instructions(records, instructions(revoke=(GOOD_TAR, GOOD_CONDA)), SUBDIR)

    assert patched(view, GOOD_TAR)["depends"] == ["zlib", REVOKED_DEPENDENCY]
    assert patched(view, GOOD_CONDA)["depends"] == [REVOKED_DEPENDENCY]


def test_revoke_applies_after_overrides():
    """Protects conda-index's order: a revoked record whose depends are overridden still gets the marker."""
    records = {GOOD_TAR: stored(GOOD_TAR, depends=["zlib"])}

    view = apply_instructions(
        records, instructions(packages={GOOD_TAR: {"depends": ["xz"]}}, revoke=(GOOD_TAR,)), SUBDIR
    )

    assert patched(view, GOOD_TAR)["depends"] == ["xz", REVOKED_DEPENDENCY]
    assert patched(view, GOOD_TAR)["revoked"] is True


def test_null_removes_a_field_so_its_default_applies():
    """Protects rattler clients, which refuse a null depends or build_number (the whole repodata.json would
    be unreadable): as in conda-index, null removes the field, and the record schema's default applies."""
    records = {GOOD_TAR: stored(GOOD_TAR, depends=["zlib"], build_number=3, constrains=["xz <6"])}
    override = {"depends": None, "build_number": None, "constrains": None, "purls": None}

    view = apply_instructions(records, instructions(packages={GOOD_TAR: override}), SUBDIR)

    assert patched(view, GOOD_TAR) == {
        **{key: value for key, value in record(GOOD_TAR).items() if key != "constrains"},
        "depends": [],
        "build_number": 0,
    }
    assert "null" not in view.records[GOOD_TAR]


def test_fields_outside_the_record_schema_are_dropped_like_index_json_fields():
    """Protects the published records' shape: a patch cannot add what the indexer never publishes (fn, url,
    channel, unknown keys, a "revoked" not from the revoke list)."""
    records = {GOOD_TAR: stored(GOOD_TAR)}
    override = {"fn": "other.tar.bz2", "url": "https://x", "channel": "c", "whatever": 1, "revoked": True}

    view = apply_instructions(records, instructions(packages={GOOD_TAR: override}), SUBDIR)

    assert view.records[GOOD_TAR] == records[GOOD_TAR]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        pytest.param(
            {"name": "other"}, "file name says pkg-1.0-h0_0 but info/index.json says other", id="name"
        ),
        pytest.param({"version": "2.0"}, "says pkg-2.0-h0_0", id="version"),
        pytest.param({"build": "h1_0"}, "says pkg-1.0-h1_0", id="build"),
        pytest.param({"name": None}, "has no valid 'name'", id="name-null"),
        pytest.param({"subdir": "osx-64"}, "subdir 'osx-64'", id="subdir"),
        pytest.param(
            {"depends": ["numpy >=>=1"]}, "depends spec 'numpy >=>=1' does not parse", id="bad-spec"
        ),
        pytest.param(
            {"depends": "zlib"}, "depends must be a list of match specs, not str", id="depends-string"
        ),
        pytest.param({"constrains": [5]}, "constrains holds 5", id="constrains-number"),
        pytest.param({"sha256": "xyz"}, "sha256 must be 64 lowercase hex digits", id="sha256"),
        pytest.param({"md5": None}, "md5 must be 32 lowercase hex digits", id="md5-null"),
        pytest.param({"size": -1}, "size must be a whole number of bytes", id="size"),
        pytest.param({"build_number": "1"}, "build_number must be a whole number", id="build-number"),
        pytest.param({"license": "a\x00b"}, "license 'a\\x00b' holds control characters", id="control"),
        pytest.param({"run_exports": ["x"]}, "run_exports must be an object", id="run-exports"),
    ],
)
@pytest.mark.parametrize("filename", [GOOD_TAR, GOOD_CONDA])
def test_a_patched_record_clients_would_refuse_is_a_patch_error_naming_the_file(filename, override, says):
    """Protects the published channel: no override may publish a record clients would refuse (an identity
    change, a spec that does not parse, a broken digest); the error names the file and the reason."""
    records = {filename: stored(filename)}
    section = (
        {"packages": {GOOD_TAR: override}}
        if filename == GOOD_TAR
        else {"packages_conda": {filename: override}}
    )

    with pytest.raises(PatchError, match=re.escape(says)) as error:
        apply_instructions(records, instructions(**section), SUBDIR)
    message = str(error.value)
    assert message.startswith(f"{filename} after patching: ")
    assert "\n" not in message


def test_a_removed_record_is_not_checked():
    """Protects removals: a bad override of a file that is removed anyway does not block the view."""
    records = {GOOD_TAR: stored(GOOD_TAR), "other-1-0.conda": stored("other-1-0.conda")}

    view = apply_instructions(
        records, instructions(packages={GOOD_TAR: {"name": "impostor"}}, remove=(GOOD_TAR,)), SUBDIR
    )

    assert view.records == {"other-1-0.conda": records["other-1-0.conda"]}
    assert view.removed == [GOOD_TAR]


def test_empty_instructions_give_the_records_unchanged_in_a_new_dict():
    view = apply_instructions(FIXTURE_RECORDS, PatchInstructions.EMPTY, SUBDIR)

    assert view.records == FIXTURE_RECORDS
    assert view.records is not FIXTURE_RECORDS
    assert view.removed == []


def test_a_large_subdir_decodes_only_the_records_the_instructions_name(monkeypatch):
    """Protects publication time: with 100,000 records and a 10-entry file, 10 records are decoded and
    checked; the others keep their text untouched (here opaque text that would not even decode)."""
    decoded: list[str] = []

    def counting_decode(text: str) -> dict[str, Any]:
        decoded.append(text)
        return decode_record(text)

    monkeypatch.setattr(patches, "decode_record", counting_decode)
    records = {f"filler-{n}-h0_0.conda": f"<opaque record {n}>" for n in range(100_000)}
    named = [f"named-{n}-h0_0.tar.bz2" for n in range(10)]
    records.update({name: stored(name) for name in named})
    value = instructions(
        packages={name: {"license": "Apache-2.0"} for name in named[:6]},
        revoke=tuple(named[6:8]),
        remove=tuple(named[8:]),
    )

    view = apply_instructions(records, value, SUBDIR)

    assert len(decoded) == 8
    assert view.removed == sorted(named[8:])
    assert len(view.records) == 100_008
    assert view.records["filler-7-h0_0.conda"] is records["filler-7-h0_0.conda"]
    assert patched(view, named[0])["license"] == "Apache-2.0"


def test_changed_records_lists_only_differences_by_file_name():
    """Protects `reindexer patch --preview`: what an operator is shown is exactly what would change."""
    before = {"b-1-0.conda": "B", "a-1-0.conda": "A", "same-1-0.conda": "S"}
    after = {"a-1-0.conda": "A2", "same-1-0.conda": "S", "c-1-0.conda": "C"}

    assert changed_records(before, after) == [
        ("a-1-0.conda", "A", "A2"),
        ("b-1-0.conda", "B", None),
        ("c-1-0.conda", None, "C"),
    ]
    assert changed_records(before, dict(before)) == []


def test_changed_records_of_a_patched_view():
    view = apply_instructions(FIXTURE_RECORDS, FIXTURE_INSTRUCTIONS, SUBDIR)

    changed = changed_records(FIXTURE_RECORDS, view.records)

    assert [name for name, _, _ in changed] == sorted(
        (set(EXPECTED_RECORDS) | set(EXPECTED_REMOVED))
        - {"keep-1.0-h0_0.tar.bz2", "keep-1.0-h0_0.conda", "half-1.0-h0_0.tar.bz2", "pins-1.0-h0_0.tar.bz2"}
    )


@pytest.mark.parametrize(
    ("text", "says"), [("{not json", "its record does not parse"), ("[]", "its record is not a JSON object")]
)
def test_a_named_record_whose_text_does_not_decode_is_a_patch_error(text, says):
    """Protects the caller's fallback (publish without the instructions) from a crash on a corrupt record."""
    with pytest.raises(PatchError, match=re.escape(f"{GOOD_TAR}: {says}")):
        apply_instructions({GOOD_TAR: text}, instructions(revoke=(GOOD_TAR,)), SUBDIR)


def test_names_no_record_can_have_are_passed_over_in_remove_and_revoke():
    """conda-forge's own files list some (an empty build string): they can match no record, so a real file
    holding one is applied rather than refused as a whole."""
    instructions = PatchInstructions.parse(
        raw({"remove": ["lammps-2018.03.16-.tar.bz2", "ok-1.0-h0_0.tar.bz2"], "revoke": ["repodata.json"]})
    )

    assert instructions.remove == frozenset({"ok-1.0-h0_0.tar.bz2"})
    assert instructions.revoke == frozenset()
