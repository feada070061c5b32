"""Repodata records: a package's info/index.json checked against its file name and folder, plus its digests.

A record that clients would choke on (wrong types, a name that disagrees with the file) is refused here, so
one bad package can never make a whole repodata.json unreadable.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .layout import PackageFilename
from .package_reader import ArchiveDigests, BadPackageError, PackageMetadata

Record = dict[str, Any]
# A record as compact, key-sorted JSON text. Records stay in this form between runs: a subdir of 100,000
# packages is re-published by joining texts, and only the records of changed shards are ever parsed.
RecordJson = str

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9_.+!*]+$")
_BUILD = re.compile(r"^[A-Za-z0-9_.+!]+$")
_STRING_FIELDS = ("license", "license_family", "arch", "platform", "python_site_packages_path")


def build_record(
    filename: PackageFilename, subdir: str, metadata: PackageMetadata, digests: ArchiveDigests
) -> Record:
    """Return the repodata record for one package, or raise BadPackageError with a one-line reason."""
    index = metadata.index
    identity = _check_identity(index)
    if identity != (filename.name, filename.version, filename.build):
        raise BadPackageError(f"file name says {filename.stem} but info/index.json says {'-'.join(identity)}")
    declared_subdir = index.get("subdir")
    if declared_subdir is not None and declared_subdir != subdir:
        raise BadPackageError(
            f"info/index.json says subdir {declared_subdir!r} but the file is in {subdir!r}"
        )
    _check_types(index)

    record: Record = dict(index)
    record["subdir"] = subdir
    record.setdefault("depends", [])
    if metadata.run_exports:
        record["run_exports"] = metadata.run_exports
    record["md5"] = digests.md5
    record["sha256"] = digests.sha256
    record["size"] = digests.size
    return sort_record(record)


def encode_record(record: Record) -> RecordJson:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def decode_record(text: RecordJson) -> Record:
    record: Record = json.loads(text)
    return record


def sort_record(record: Record) -> Record:
    """Order keys so every serialisation (JSON, msgpack shards) is byte-for-byte reproducible."""
    return {key: record[key] for key in sorted(record)}


def _check_identity(index: dict[str, Any]) -> tuple[str, str, str]:
    values = []
    for field, pattern in (("name", _NAME), ("version", _VERSION), ("build", _BUILD)):
        value = index.get(field)
        if not isinstance(value, str) or not value:
            raise BadPackageError(f"info/index.json has no valid {field!r} (a non-empty string)")
        if not pattern.match(value):
            raise BadPackageError(f"info/index.json {field} {value!r} has characters conda does not allow")
        values.append(value)
    return values[0], values[1], values[2]


def _check_types(index: dict[str, Any]) -> None:
    build_number = index.get("build_number", 0)
    if isinstance(build_number, bool) or not isinstance(build_number, int) or build_number < 0:
        raise BadPackageError(
            f"info/index.json build_number must be a non-negative integer, not {build_number!r}"
        )
    for field in ("depends", "constrains"):
        value = index.get(field, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise BadPackageError(f"info/index.json {field} must be a list of strings")
    timestamp = index.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0
    ):
        raise BadPackageError(f"info/index.json timestamp must be a non-negative integer, not {timestamp!r}")
    noarch = index.get("noarch")
    if noarch is not None and not isinstance(noarch, (str, bool)):
        raise BadPackageError(f"info/index.json noarch must be a string, not {noarch!r}")
    for field in ("features", "track_features"):
        value = index.get(field)
        valid = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if value is not None and not valid:
            raise BadPackageError(f"info/index.json {field} must be a string")
    for field in _STRING_FIELDS:
        value = index.get(field)
        if value is not None and not isinstance(value, str):
            raise BadPackageError(f"info/index.json {field} must be a string")
