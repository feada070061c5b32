"""What clients read: repodata.json, its zstd twin, CEP-16 shards and the shard index."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from reindexer.records import decode_record, encode_record
from reindexer.repodata import compress_repodata, parse_repodata, render_repodata
from reindexer.shards import (
    group_by_name,
    groups_to_render,
    render_shard,
    render_shard_index,
    shard_digest,
    shard_path,
)
from tests.support.checks import decode_msgpack_zst, zstd_decompress

CREATED_AT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def record(name: str, version: str = "1.0", build: str = "h0_0", **fields: Any) -> dict[str, Any]:
    content = f"{name}-{version}-{build}".encode()
    document = {
        "build": build,
        "build_number": 0,
        "depends": [],
        "md5": hashlib.md5(content).hexdigest(),
        "name": name,
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "subdir": "linux-64",
        "version": version,
    }
    document.update(fields)
    return document


RECORDS = {
    "b-2.0-h0_0.conda": record("b", "2.0"),
    "a-1.0-h0_0.tar.bz2": record("a", "1.0"),
    "a-1.0-h0_0.conda": record("a", "1.0"),
    "b-1.0-h0_0.tar.bz2": record("b", "1.0"),
}
# What the indexer hands to the renderers: each record as compact, key-sorted JSON text.
TEXTS = {filename: encode_record(document) for filename, document in RECORDS.items()}


# --- repodata.json ------------------------------------------------------------------------------------


def test_render_repodata_layout_splits_formats():
    document = json.loads(render_repodata("linux-64", TEXTS))

    assert document["info"] == {"subdir": "linux-64"}
    assert document["packages"] == {
        "a-1.0-h0_0.tar.bz2": RECORDS["a-1.0-h0_0.tar.bz2"],
        "b-1.0-h0_0.tar.bz2": RECORDS["b-1.0-h0_0.tar.bz2"],
    }
    assert document["packages.conda"] == {
        "a-1.0-h0_0.conda": RECORDS["a-1.0-h0_0.conda"],
        "b-2.0-h0_0.conda": RECORDS["b-2.0-h0_0.conda"],
    }
    assert document["removed"] == []
    assert document["repodata_version"] == 1


def test_render_repodata_of_no_records_is_a_valid_empty_index():
    document = json.loads(render_repodata("noarch", {}))

    assert document == {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 1,
    }


def test_render_repodata_with_base_url_announces_version_2():
    document = json.loads(
        render_repodata("linux-64", TEXTS, base_url="https://cdn.example.org/chan/linux-64/")
    )

    assert document["info"] == {"subdir": "linux-64", "base_url": "https://cdn.example.org/chan/linux-64/"}
    assert document["repodata_version"] == 2


def test_render_repodata_is_deterministic_whatever_the_input_order():
    reordered = dict(reversed(list(TEXTS.items())))

    assert render_repodata("linux-64", TEXTS) == render_repodata("linux-64", reordered)
    document = json.loads(render_repodata("linux-64", reordered))
    assert list(document["packages.conda"]) == sorted(document["packages.conda"])
    assert list(document["packages"]) == sorted(document["packages"])


def test_render_repodata_keeps_non_ascii_text():
    records = {"a-1.0-h0_0.conda": encode_record(record("a", summary="Ünïcode ✓"))}

    assert json.loads(render_repodata("noarch", records))["packages.conda"]["a-1.0-h0_0.conda"][
        "summary"
    ] == ("Ünïcode ✓")


def test_compress_repodata_round_trips_through_a_streaming_decompressor():
    raw = render_repodata("linux-64", TEXTS)

    assert zstd_decompress(compress_repodata(raw)) == raw


def test_parse_repodata_reads_both_sections():
    assert parse_repodata(render_repodata("linux-64", TEXTS)) == RECORDS


def test_parse_repodata_tolerates_junk_entries():
    raw = json.dumps(
        {
            "packages": {
                "a-1.0-h0_0.tar.bz2": record("a"),
                "junk-1-0.tar.bz2": "nope",
                "x-1-0.tar.bz2": None,
            },
            "packages.conda": ["not", "a", "mapping"],
            "removed": "whatever",
        }
    ).encode()

    assert parse_repodata(raw) == {"a-1.0-h0_0.tar.bz2": record("a")}


@pytest.mark.parametrize("raw", [b"[]", b"null", b"3", b"{}"])
def test_parse_repodata_of_a_document_without_sections_has_no_records(raw):
    assert parse_repodata(raw) == {}


# --- shards -------------------------------------------------------------------------------------------


def test_group_by_name_takes_the_name_from_the_file_name():
    groups = group_by_name({"python-dateutil-2.8.2-pyhd8ed1ab_0.conda": "{}"})

    assert list(groups) == ["python-dateutil"]


def test_group_by_name_refuses_a_file_name_that_is_no_package():
    with pytest.raises(ValueError, match="not a package file name"):
        group_by_name({"README.md": "{}"})


def test_group_by_name_makes_one_group_per_package_name():
    groups = group_by_name(TEXTS)

    assert sorted(groups) == ["a", "b"]
    assert sorted(groups["b"]) == ["b-1.0-h0_0.tar.bz2", "b-2.0-h0_0.conda"]


def test_render_shard_is_deterministic_whatever_the_input_order():
    group = group_by_name(TEXTS)["b"]
    reordered = dict(reversed(list(group.items())))

    assert render_shard(group) == render_shard(reordered)


def test_render_shard_holds_digests_as_raw_bytes():
    group = group_by_name(TEXTS)["b"]

    shard = decode_msgpack_zst(render_shard(group))

    assert set(shard) == {"packages", "packages.conda", "removed"}
    assert shard["removed"] == []
    assert list(shard["packages"]) == ["b-1.0-h0_0.tar.bz2"]
    assert list(shard["packages.conda"]) == ["b-2.0-h0_0.conda"]
    entry = shard["packages.conda"]["b-2.0-h0_0.conda"]
    source = decode_record(group["b-2.0-h0_0.conda"])
    assert entry["md5"] == bytes.fromhex(source["md5"]) and len(entry["md5"]) == 16
    assert entry["sha256"] == bytes.fromhex(source["sha256"]) and len(entry["sha256"]) == 32
    assert {k: v for k, v in entry.items() if k not in ("md5", "sha256")} == {
        k: v for k, v in source.items() if k not in ("md5", "sha256")
    }


def test_shard_digest_is_sha256_of_the_compressed_bytes():
    shard = render_shard(group_by_name(TEXTS)["a"])

    assert shard_digest(shard) == hashlib.sha256(shard).hexdigest()
    assert shard_path(shard_digest(shard)) == f"shards/{hashlib.sha256(shard).hexdigest()}.msgpack.zst"


def test_render_shard_index_structure():
    digests = {name: shard_digest(render_shard(group)) for name, group in group_by_name(TEXTS).items()}

    index = decode_msgpack_zst(render_shard_index("linux-64", digests, CREATED_AT))

    assert index["info"] == {
        "subdir": "linux-64",
        "base_url": "",
        "shards_base_url": "./shards/",
        "created_at": "2024-05-06T07:08:09.123456Z",
    }
    assert set(index["shards"]) == {"a", "b"}
    for name, digest in index["shards"].items():
        assert isinstance(digest, bytes) and len(digest) == 32
        assert digest.hex() == digests[name]


def test_render_shard_index_created_at_is_rfc3339_utc():
    index = decode_msgpack_zst(render_shard_index("noarch", {}, CREATED_AT))

    created_at = index["info"]["created_at"]
    assert created_at.endswith("Z")
    assert datetime.fromisoformat(created_at) == CREATED_AT


def test_render_shard_index_converts_created_at_to_utc():
    # A 'Z' suffix claims UTC: an aware time in another zone must be converted, not relabelled.
    local = CREATED_AT.astimezone(timezone(timedelta(hours=2)))

    index = decode_msgpack_zst(render_shard_index("noarch", {}, local))

    assert datetime.fromisoformat(index["info"]["created_at"]) == CREATED_AT


def test_render_shard_index_of_an_empty_subdir_has_no_shards():
    index = decode_msgpack_zst(render_shard_index("noarch", {}, CREATED_AT))

    assert index["shards"] == {}


# --- regrouping only what changed ---------------------------------------------------------------------

BASE = {
    "foo-1.0-h0_0.conda": '{"name":"foo","v":1}',
    "foo-2.0-h0_0.conda": '{"name":"foo","v":2}',
    "foo-bar-1.0-h0_0.conda": '{"name":"foo-bar","v":1}',
    "baz-1.0-h0_0.tar.bz2": '{"name":"baz","v":1}',
}
BASE_DIGESTS = {"foo": "d-foo", "foo-bar": "d-foo-bar", "baz": "d-baz"}


def test_groups_to_render_keeps_every_digest_when_nothing_changed():
    kept, render = groups_to_render(BASE, BASE, BASE_DIGESTS)

    assert kept == BASE_DIGESTS
    assert render == {}


def test_groups_to_render_regroups_a_changed_name_whole_and_not_a_name_sharing_its_prefix():
    records = {**BASE, "foo-3.0-h0_0.conda": '{"name":"foo","v":3}'}

    kept, render = groups_to_render(records, BASE, BASE_DIGESTS)

    assert kept == {"foo-bar": "d-foo-bar", "baz": "d-baz"}
    assert render == {"foo": {f: t for f, t in records.items() if f.startswith("foo-") and "bar" not in f}}


def test_groups_to_render_drops_a_name_whose_last_file_is_gone():
    records = {f: t for f, t in BASE.items() if not f.startswith("baz-")}

    kept, render = groups_to_render(records, BASE, BASE_DIGESTS)

    assert kept == {"foo": "d-foo", "foo-bar": "d-foo-bar"}
    assert render == {}


def test_groups_to_render_many_changes_give_the_same_groups_as_a_full_regroup():
    records = {f"pkg{i}-1.0-h0_0.conda": f'{{"name":"pkg{i}"}}' for i in range(100)}

    kept, render = groups_to_render(records, BASE, BASE_DIGESTS)

    assert kept == {}
    assert render == group_by_name(records)


@pytest.mark.parametrize("previous_digests", [{}, BASE_DIGESTS])
def test_groups_to_render_everything_or_no_previous_digests_renders_every_group(previous_digests):
    kept, render = groups_to_render(BASE, BASE, previous_digests, everything=bool(previous_digests))

    assert kept == {}
    assert render == group_by_name(BASE)
