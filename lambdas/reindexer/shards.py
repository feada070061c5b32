"""Sharded repodata (CEP-16): one content-addressed msgpack shard per package name and the shard index."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgpack
import zstandard

from .contract import CONDA_SUFFIX, SHARDS_FOLDER
from .layout import parse_package_filename
from .records import Record, RecordJson, decode_record

# A shard is a few KB and a subdir has thousands, so each one's compression counts: level 6 takes ~50-80 us
# a shard, level 19 ~1.6-2.9 ms, for 1-2.5 % more bytes (the shard index: 1-2 % more bytes in a tenth to a
# sixth of the CPU). Only shards rendered anew get the level: unchanged ones keep their bytes and address.
SHARD_ZST_LEVEL = 6
# Beyond this many changed names, one pass over all file names is cheaper than a scan per name.
TARGETED_REGROUP_LIMIT = 32
SHARD_SUFFIX = ".msgpack.zst"


def group_by_name(records: Mapping[str, RecordJson]) -> dict[str, dict[str, RecordJson]]:
    """Split a subdir's records into one group per package name, the unit of a shard.

    The name comes from the file name: an indexed package's file name always agrees with its record.
    """
    groups: dict[str, dict[str, RecordJson]] = {}
    for filename in sorted(records):
        groups.setdefault(_name_of(filename), {})[filename] = records[filename]
    return groups


def _name_of(filename: str) -> str:
    parsed = parse_package_filename(filename)
    if parsed is None:
        raise ValueError(f"{filename!r} is not a package file name")
    return parsed.name


def groups_to_render(
    records: Mapping[str, RecordJson],
    previous_records: Mapping[str, RecordJson],
    previous_digests: Mapping[str, str],
    *,
    everything: bool = False,
) -> tuple[dict[str, str], dict[str, dict[str, RecordJson]]]:
    """The shard digests that still hold, and the groups whose shard must be rendered (anew or again).

    Only names with an added, removed or changed record are regrouped, so an event touching one package in
    a subdir of 100,000 records parses a handful of file names, not all of them twice.
    """
    if everything or not previous_digests:
        return {}, group_by_name(records)
    changed = {
        _name_of(filename)
        for filename in records.keys() | previous_records.keys()
        if records.get(filename) != previous_records.get(filename)
    }
    kept = {name: digest for name, digest in previous_digests.items() if name not in changed}
    if len(changed) > TARGETED_REGROUP_LIMIT:
        groups = group_by_name(records)
        return kept, {name: groups[name] for name in changed if name in groups}
    render = {}
    for name in changed:
        stem = f"{name}-"
        group = {f: text for f, text in records.items() if f.startswith(stem) and _name_of(f) == name}
        if group:
            render[name] = group
    return kept, render


def render_shard(records: Mapping[str, RecordJson]) -> bytes:
    """Compressed shard for one package name; identical records always give identical bytes."""
    tar_bz2: dict[str, dict[str, Any]] = {}
    conda: dict[str, dict[str, Any]] = {}
    for filename in sorted(records):
        section = conda if filename.endswith(CONDA_SUFFIX) else tar_bz2
        section[filename] = _shard_record(decode_record(records[filename]))
    packed = msgpack.packb({"packages": tar_bz2, "packages.conda": conda, "removed": []}, use_bin_type=True)
    return zstandard.ZstdCompressor(level=SHARD_ZST_LEVEL).compress(packed)


def check_shardable(record: Record) -> None:
    """Raise if the record cannot go into a shard (msgpack refuses it), before it is accepted at all."""
    msgpack.packb(_shard_record(record), use_bin_type=True)


def shard_digest(shard: bytes) -> str:
    """A shard's address: the sha256 of its compressed bytes."""
    return hashlib.sha256(shard).hexdigest()


def shard_path(digest: str) -> str:
    return f"{SHARDS_FOLDER}/{digest}{SHARD_SUFFIX}"


def render_shard_index(
    subdir: str, digests: Mapping[str, str], created_at: datetime, base_url: str | None = None
) -> bytes:
    """Compressed shard index mapping each package name to the raw sha256 of its shard."""
    index = {
        "info": {
            "subdir": subdir,
            "base_url": base_url or "",
            "shards_base_url": f"./{SHARDS_FOLDER}/",
            "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        "shards": {name: bytes.fromhex(digests[name]) for name in sorted(digests)},
    }
    return zstandard.ZstdCompressor(level=SHARD_ZST_LEVEL).compress(msgpack.packb(index, use_bin_type=True))


def _shard_record(record: Record) -> dict[str, Any]:
    # CEP-16 stores the digests as raw bytes rather than hex strings.
    packed = dict(record)
    for field in ("md5", "sha256"):
        value = packed.get(field)
        if isinstance(value, str):
            try:
                packed[field] = bytes.fromhex(value)
            except ValueError:
                del packed[field]
    return packed
