"""A full reindex in three steps that a Step Functions Distributed Map fans out: plan (the packages to read,
as a manifest), read (one batch of them, into one result object) and commit (every subdir as a full run does,
taking the batches' verdicts instead of reading those packages again).

The commit surveys each subdir again under its lease, so what the event path committed while the batches
read is kept, and a package uploaded or replaced since the plan is read by the commit itself. Result objects
are read back as untrusted input: a record that is not what today's rules make is read again, not published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .clock import utc_now
from .contract import (
    RUN_EXPIRY_DAYS,
    RUN_MANIFEST,
    RUN_RESULTS_FOLDER,
    RUNS_FOLDER,
    join_key,
)
from .indexer import index_channel, packages_to_read
from .layout import KNOWN_SUBDIRS, parse_package_filename
from .options import IndexOptions
from .package_fetch import Deferred, Failed, Gone, Prefetched, read_packages
from .record_schema import RecordError, checked_about
from .records import checked_stored_record, decode_about, decode_record, encode_about, encode_record
from .reports import ChannelReport, Rejection, one_line_reason
from .shards import check_shardable
from .state import IndexedPackage, RejectedFile
from .store import NotFoundError, Store, StoredObject
from .strict_json import StrictJsonError, load_strict_json
from .subdir_ref import SubdirRef

logger = logging.getLogger(__name__)

RESULT_FORMAT = 1
# A result object holds one batch's records (a few KiB each); anything larger was not written by a read step.
MAX_RESULT_BYTES = 64 * 1024 * 1024
MAX_ETAG_LENGTH = 256
MAX_FILENAME_LENGTH = 1024
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_RUN_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9_-]{1,96}$")
JSON_TYPE = "application/json"


class RunInputError(ValueError):
    """A run name, item or result object that is not what the steps make; the message is one line."""


@dataclass(frozen=True)
class RunItem:
    """One package a run reads: where it is, and the upload (ETag, size) the plan saw."""

    subdir: str
    name: str
    etag: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"subdir": self.subdir, "file": self.name, "etag": self.etag, "size": self.size}

    @classmethod
    def from_json(cls, value: Any) -> RunItem:
        if not isinstance(value, dict) or set(value) != {"subdir", "file", "etag", "size"}:
            raise RunInputError('an item must be {"subdir", "file", "etag", "size"}')
        subdir, name, etag, size = value["subdir"], value["file"], value["etag"], value["size"]
        if subdir not in KNOWN_SUBDIRS:
            raise RunInputError("an item's subdir is not a known conda subdir")
        if (
            not isinstance(name, str)
            or parse_package_filename(name) is None
            or len(name) > MAX_FILENAME_LENGTH
        ):
            raise RunInputError("an item's file is not a package file name")
        if not isinstance(etag, str) or len(etag) > MAX_ETAG_LENGTH:
            raise RunInputError("an item's etag is not text")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RunInputError("an item's size is not a non-negative integer")
        return cls(subdir, name, etag, size)


def run_name(execution: str, clock_now: datetime) -> str:
    """The run folder's name for an execution: its start time (so expired runs are found from a listing)
    then the execution's name, kept to key-safe characters (a digest stands in for the others)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", execution)[:80]
    if safe != execution:
        safe = f"{safe[:63]}-{hashlib.sha256(execution.encode()).hexdigest()[:16]}"
    return f"{clock_now.strftime(_TIME_FORMAT)}-{safe or 'run'}"


def check_run_name(run: Any) -> str:
    if not isinstance(run, str) or not _RUN_NAME.match(run):
        raise RunInputError("the run name is not one a plan step made")
    return run


def run_folder(channel: str, run: str) -> str:
    return join_key(channel, RUNS_FOLDER, run)


@dataclass
class RunPlan:
    """What a run will read: `items` packages, listed in the manifest (None when there are none)."""

    run: str
    items: int
    by_subdir: dict[str, int]
    manifest_key: str | None
    expired_runs_deleted: int = 0


def plan_run(store: Store, channel: str, run: str, options: IndexOptions) -> RunPlan:
    """List the channel and each subdir's state, and write the packages to read as the run's manifest (a
    JSON array of RunItem, the Distributed Map's ItemReader); a run with nothing to read writes nothing.
    Folders of runs that expired without committing are deleted first."""
    check_run_name(run)
    expired = delete_expired_runs(store, channel, options)
    work = packages_to_read(store, channel, options)
    items = [RunItem(subdir, obj.name, obj.etag, obj.size) for subdir, objs in work.items() for obj in objs]
    plan = RunPlan(
        run, len(items), {subdir: len(objs) for subdir, objs in work.items() if objs}, None, expired
    )
    if items:
        plan.manifest_key = join_key(run_folder(channel, run), RUN_MANIFEST)
        document = json.dumps([item.to_json() for item in items], separators=(",", ":"))
        store.write(plan.manifest_key, document.encode(), content_type=JSON_TYPE)
    return plan


@dataclass
class BatchResult:
    """What one read step did: verdicts (records, rejections, packages gone) stored in `key`, and the
    packages still to read (not fetched now, or not started in time) with the reasons."""

    key: str
    indexed: int = 0
    rejected: int = 0
    gone: int = 0
    resumed: int = 0
    failed: list[Rejection] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed and not self.deferred

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.key,
            "indexed": self.indexed,
            "rejected": self.rejected,
            "gone": self.gone,
            "resumed": self.resumed,
            "failed": [failure.to_dict() for failure in self.failed],
            "deferred": self.deferred,
        }


def result_key(channel: str, run: str, items: Sequence[RunItem]) -> str:
    """One key per batch, the same for every attempt at it (a retry resumes from the earlier attempt)."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda item: (item.subdir, item.name)):
        digest.update(f"{item.subdir}/{item.name}\n".encode())
    return join_key(run_folder(channel, run), RUN_RESULTS_FOLDER, f"{digest.hexdigest()[:32]}.json")


def read_batch(
    store: Store, channel: str, run: str, items: Sequence[RunItem], options: IndexOptions
) -> BatchResult:
    """Read a batch's packages with the event path's reader and write their verdicts as one result object.

    A package not read this time (a fetch failure, the deadline) is left out of the object and listed in
    the result: the step is retried, and the retry reads only what the earlier attempts did not."""
    check_run_name(run)
    key = result_key(channel, run, items)
    verdicts = _load_result(store, key) if store.head(key) is not None else {}
    result = BatchResult(key, resumed=sum(len(names) for names in verdicts.values()))
    by_subdir: dict[str, list[StoredObject]] = {}
    for item in items:
        if item.name not in verdicts.get(item.subdir, {}):
            obj = StoredObject(SubdirRef(store, channel, item.subdir).key(item.name), item.etag, item.size)
            by_subdir.setdefault(item.subdir, []).append(obj)
    gone: list[tuple[str, str]] = []
    for subdir, objects in sorted(by_subdir.items()):
        for obj, outcome in read_packages(SubdirRef(store, channel, subdir), objects, options):
            if isinstance(outcome, IndexedPackage | RejectedFile):
                verdicts.setdefault(subdir, {})[obj.name] = outcome
            elif isinstance(outcome, Gone):
                gone.append((subdir, obj.name))
            elif isinstance(outcome, Failed):
                result.failed.append(Rejection(f"{subdir}/{obj.name}", outcome.reason))
            elif isinstance(outcome, Deferred):
                result.deferred.append(f"{subdir}/{obj.name}")
    found = [verdict for names in verdicts.values() for verdict in names.values()]
    result.indexed = sum(isinstance(verdict, IndexedPackage) for verdict in found)
    result.rejected = len(found) - result.indexed
    result.gone = len(gone)
    if len(found) > result.resumed:
        store.write(key, _render_result(verdicts), content_type=JSON_TYPE)
    return result


def _render_result(verdicts: Mapping[str, Prefetched]) -> bytes:
    packages, rejected = [], []
    for subdir, names in sorted(verdicts.items()):
        for name, verdict in sorted(names.items()):
            entry: dict[str, Any] = {
                "subdir": subdir,
                "file": name,
                "etag": verdict.etag,
                "size": verdict.size,
            }
            if isinstance(verdict, IndexedPackage):
                packages.append({**entry, "record": verdict.record, "about": verdict.about})
            else:
                rejected.append({**entry, "reason": verdict.reason})
    document = {"format": RESULT_FORMAT, "packages": packages, "rejected": rejected}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _load_result(store: Store, key: str) -> dict[str, dict[str, IndexedPackage | RejectedFile]]:
    """A result object's verdicts by subdir and file; a verdict that is not what a read step makes today
    is left out (its package is read again), and an object that is not a result at all gives none."""
    try:
        data, _ = store.read(key)
        if len(data) > MAX_RESULT_BYTES:
            raise RunInputError(f"larger than {MAX_RESULT_BYTES} bytes")
        document = load_strict_json(data)
        if not isinstance(document, dict) or document.get("format") != RESULT_FORMAT:
            raise RunInputError(f"not a result object of format {RESULT_FORMAT}")
        entries = [(entry, True) for entry in _list(document, "packages")]
        entries += [(entry, False) for entry in _list(document, "rejected")]
    except NotFoundError:
        return {}
    except (RunInputError, StrictJsonError) as error:
        logger.warning("ignoring %s: %s", store.describe(key), one_line_reason(str(error)))
        return {}
    verdicts: dict[str, dict[str, IndexedPackage | RejectedFile]] = {}
    for entry, indexed in entries:
        try:
            item = RunItem.from_json({k: entry.get(k) for k in ("subdir", "file", "etag", "size")})
            verdict = _checked_verdict(item, entry, indexed)
        except (RunInputError, RecordError, ValueError, TypeError, AttributeError) as error:
            logger.warning("ignoring an entry of %s: %s", store.describe(key), one_line_reason(str(error)))
            continue
        verdicts.setdefault(item.subdir, {})[item.name] = verdict
    return verdicts


def _list(document: dict[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise RunInputError(f'"{name}" is not a list')
    return value


def _checked_verdict(item: RunItem, entry: Any, indexed: bool) -> IndexedPackage | RejectedFile:
    if indexed:
        record, about = entry.get("record"), entry.get("about")
        if not isinstance(record, str) or not isinstance(about, str):
            raise RunInputError("a record entry needs record and about text")
        filename = parse_package_filename(item.name)
        assert filename is not None  # RunItem checked it
        checked = checked_stored_record(decode_record(record), filename, item.subdir)
        check_shardable(checked)
        if encode_record(checked) != record or encode_about(checked_about(decode_about(about))) != about:
            raise RunInputError(f"{item.name}: the record is not what the reader makes")
        return IndexedPackage(item.etag, item.size, record, about)
    reason = entry.get("reason")
    if not isinstance(reason, str) or one_line_reason(reason) != reason:
        raise RunInputError(f"{item.name}: the rejection's reason is not one line of text")
    return RejectedFile(item.etag, item.size, reason)


def load_run_results(
    store: Store, channel: str, run: str
) -> dict[str, dict[str, IndexedPackage | RejectedFile]]:
    """Every batch's verdicts, by subdir and file."""
    verdicts: dict[str, dict[str, IndexedPackage | RejectedFile]] = {}
    listing = store.list_folder(join_key(run_folder(channel, run), RUN_RESULTS_FOLDER))
    for obj in listing.objects:
        if obj.size > MAX_RESULT_BYTES:
            logger.warning("ignoring %s: larger than %d bytes", store.describe(obj.key), MAX_RESULT_BYTES)
            continue
        for subdir, names in _load_result(store, obj.key).items():
            verdicts.setdefault(subdir, {}).update(names)
    return verdicts


def commit_run(store: Store, channel: str, run: str, options: IndexOptions) -> ChannelReport:
    """Index the channel as a full run, taking the batches' verdicts for the packages they read; once every
    subdir is committed, the run's objects are deleted (a subdir that failed keeps them for a retry)."""
    check_run_name(run)
    report = index_channel(store, channel, options, load_run_results(store, channel, run))
    if report.ok:
        delete_run(store, channel, run)
    return report


def delete_run(store: Store, channel: str, run: str) -> int:
    """Delete a run's manifest and result objects; the number deleted."""
    folder = run_folder(channel, run)
    keys = [obj.key for obj in store.list_folder(join_key(folder, RUN_RESULTS_FOLDER)).objects]
    keys += [obj.key for obj in store.list_folder(folder).objects]
    for key in keys:
        store.delete(key)
    return len(keys)


def delete_expired_runs(store: Store, channel: str, options: IndexOptions) -> int:
    """Delete the folders of runs started more than RUN_EXPIRY_DAYS ago (executions that never committed);
    the number of runs deleted."""
    oldest = utc_now(options.clock) - timedelta(days=RUN_EXPIRY_DAYS)
    expired = [
        run for run in store.list_folder(join_key(channel, RUNS_FOLDER)).folders if _started(run) < oldest
    ]
    for run in expired:
        delete_run(store, channel, run)
    return len(expired)


def _started(run: str) -> datetime:
    try:
        return datetime.strptime(run.split("-", 1)[0], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # not a run folder the plan made: never deleted


def items_of(values: Iterable[Any]) -> list[RunItem]:
    """A batch's items as the Map passes them, checked."""
    return [RunItem.from_json(value) for value in values]
