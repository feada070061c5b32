"""Change planning: compare a subdir's listing with its state and decide what to read, keep and drop.

A package is read only when it is new or its ETag or size changed, so a same-name re-upload is re-read.
A channel another tool indexed is adopted from its repodata.json wherever the listing proves a record
still describes the file (single-part ETag equal to the record's md5, same size).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .contract import PUBLISHED_FILES
from .layout import FOREIGN_INDEX_FILES, package_extension, parse_package_filename
from .record_schema import RECORD_SCHEMA, RecordError
from .records import Record, checked_stored_record, encode_record
from .state import IndexedPackage, RejectedFile, SubdirState
from .store import StoredObject

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class SubdirPlan:
    """What one run will do to a subdir; `read` holds the packages whose content must be fetched."""

    keep: dict[str, IndexedPackage] = field(default_factory=dict)
    read: list[StoredObject] = field(default_factory=list)
    replaced: set[str] = field(default_factory=set)
    removed: list[str] = field(default_factory=list)
    rejected: dict[str, RejectedFile] = field(default_factory=dict)

    @property
    def added(self) -> list[str]:
        return sorted(obj.name for obj in self.read if obj.name not in self.replaced)


def plan_subdir(objects: Iterable[StoredObject], previous: SubdirState, *, force: bool = False) -> SubdirPlan:
    """Diff the files in a subdir folder against the previous state."""
    plan = SubdirPlan()
    present: set[str] = set()
    for obj in objects:
        filename = obj.name
        if filename in PUBLISHED_FILES or filename in FOREIGN_INDEX_FILES:
            continue
        present.add(filename)
        reason = listing_rejection(filename)
        if reason is not None:
            plan.rejected[filename] = RejectedFile(obj.etag, obj.size, reason)
            continue
        known = previous.packages.get(filename)
        if known is not None and not force and (known.etag, known.size) == (obj.etag, obj.size):
            plan.keep[filename] = known
            continue
        refused = previous.rejected.get(filename)
        if refused is not None and not force and (refused.etag, refused.size) == (obj.etag, obj.size):
            plan.rejected[filename] = refused
            continue
        if known is not None:
            plan.replaced.add(filename)
        plan.read.append(obj)
    plan.removed = sorted(name for name in previous.packages if name not in present)
    plan.read.sort(key=lambda obj: obj.name)
    return plan


def listing_rejection(filename: str) -> str | None:
    """Why a file in a subdir folder cannot be a package, judged from its name alone (None if it may be)."""
    if package_extension(filename) is None:
        return "not a conda package (expected a .conda or .tar.bz2 file)"
    if parse_package_filename(filename) is None:
        return "file name is not <name>-<version>-<build>.conda|.tar.bz2"
    return None


def adopt_repodata(
    records: Mapping[str, Record], objects: Iterable[StoredObject], subdir: str
) -> SubdirState:
    """A state built from another indexer's repodata.json, keeping only records the listing vouches for.

    The ETag of a single-part upload is the MD5 of its bytes; a multipart ETag proves nothing, so such a
    package is read again, and so is one whose record today's rules refuse. The outputs are left unrecorded,
    so the first run rewrites them in our format.
    """
    state = SubdirState(schema=RECORD_SCHEMA)
    for obj in objects:
        record = records.get(obj.name)
        filename = parse_package_filename(obj.name)
        if record is None or filename is None or not _PLAIN_MD5.match(obj.etag):
            continue
        if record.get("md5") != obj.etag or record.get("size") != obj.size:
            continue
        try:
            checked = checked_stored_record(record, filename, subdir)
        except RecordError:
            continue  # read like a new package, and judged by what it holds
        state.packages[obj.name] = IndexedPackage(obj.etag, obj.size, encode_record(checked))
    return state
