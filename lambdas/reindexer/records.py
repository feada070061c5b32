"""Repodata records: a package's info/index.json checked against its file name, folder and the record
schema (reindexer.record_schema), plus its digests; and records kept from earlier runs checked again.

A record that clients would choke on is refused here, so one bad package can never make a whole
repodata.json, or the records of a good package of the same name, unreadable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .layout import PackageFilename
from .package_reader import ArchiveDigests, BadPackageError, PackageMetadata
from .record_schema import INT64_MAX, RecordError, checked_index_fields, checked_run_exports, show
from .strict_json import dump_json

Record = dict[str, Any]
# A record as compact, key-sorted JSON text. Records stay in this form between runs: a subdir of 100,000
# packages is re-published by joining texts, and only the records of changed shards are ever parsed.
RecordJson = str
# A package's info/about.json fields (record_schema.checked_about) as compact, key-sorted JSON; "" for none.
AboutJson = str

_HEX = re.compile(r"[0-9a-f]+")


def build_record(
    filename: PackageFilename, subdir: str, metadata: PackageMetadata, digests: ArchiveDigests
) -> Record:
    """Return the repodata record for one package, or raise BadPackageError with a one-line reason."""
    try:
        record = _checked_fields(metadata.index, metadata.run_exports, filename, subdir)
    except RecordError as error:
        raise BadPackageError(str(error)) from None
    record["md5"] = digests.md5
    record["sha256"] = digests.sha256
    record["size"] = digests.size
    return sort_record(record)


def checked_stored_record(record: Mapping[str, Any], filename: PackageFilename, subdir: str) -> Record:
    """A record kept from an earlier run or another indexer's repodata.json, under today's rules.

    Raises RecordError when it holds something clients would refuse; digests and size must be well-formed.
    """
    if not isinstance(record, Mapping):
        raise RecordError(f"a record must be a JSON object, not {type(record).__name__}")
    checked = _checked_fields(record, record.get("run_exports"), filename, subdir)
    for field, length in (("md5", 32), ("sha256", 64)):
        value = record.get(field)
        if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) != length:
            raise RecordError(f"{field} must be {length} lowercase hex digits, not {show(value)}")
        checked[field] = value
    size = record.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= INT64_MAX:
        raise RecordError(f"size must be a whole number of bytes, not {show(size)}")
    checked["size"] = size
    return sort_record(checked)


def _checked_fields(
    index: Mapping[str, Any], run_exports: Any, filename: PackageFilename, subdir: str
) -> Record:
    record: Record = checked_index_fields(index, filename, subdir)
    if run_exports is not None and (checked := checked_run_exports(run_exports)):
        record["run_exports"] = checked
    return record


def encode_record(record: Record) -> RecordJson:
    """Compact, key-sorted JSON; NaN and Infinity are refused (ValueError), as clients refuse them."""
    return dump_json(record)


def encode_about(about: Mapping[str, str]) -> AboutJson:
    """Compact JSON of checked about.json fields: never a raw tab or newline (JSON escapes them)."""
    return dump_json(dict(about)) if about else ""


def decode_about(text: AboutJson) -> dict[str, str]:
    """The about fields kept in a state; {} for none (or for text that is not an object of strings)."""
    if not text:
        return {}
    try:
        about = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(about, dict):
        return {}
    return {key: value for key, value in about.items() if isinstance(key, str) and isinstance(value, str)}


def decode_record(text: RecordJson) -> Record:
    record: Record = json.loads(text)
    return record


def sort_record(record: Record) -> Record:
    """Order keys so every serialisation (JSON, msgpack shards) is byte-for-byte reproducible."""
    return {key: record[key] for key in sorted(record)}
