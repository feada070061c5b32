"""The indexing use case: bring a channel's published index in line with the packages it holds.

Per subdir: list the folder, load the state, plan, read only new or changed packages (in parallel), then
publish. Outputs go out in dependency order (shards, shard index, repodata.json.zst, repodata.json) and
the state is written last with a conditional write, so it is the commit point: a run that stops half-way
leaves outputs whose ETags disagree with the state, and the next run notices and rewrites them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .layout import (
    KNOWN_SUBDIRS,
    OUR_OUTPUT_FILES,
    REPODATA_JSON,
    REPODATA_ZST,
    SHARD_INDEX,
    STATE_FILE,
    join_key,
    package_extension,
    parse_package_filename,
)
from .package_reader import BadPackageError, PackageSpool
from .planner import SubdirPlan, adopt_repodata, plan_subdir
from .records import build_record, encode_record
from .repodata import compress_repodata, parse_repodata, render_repodata
from .shards import group_by_name, render_shard, render_shard_index, shard_digest, shard_path
from .state import IndexedPackage, RejectedFile, SubdirState
from .store import FatalStoreError, NotFoundError, PreconditionFailedError, Store, StoredObject, StoreError

logger = logging.getLogger(__name__)

DEFAULT_REPODATA_MAX_AGE = 60
DEFAULT_JOBS = 8
COMMIT_ATTEMPTS = 3
SHARD_CACHE_CONTROL = "public, max-age=31536000, immutable"
STATE_CACHE_CONTROL = "no-store"
JSON_TYPE = "application/json"
ZSTD_TYPE = "application/zstd"
# Bump when the bytes we publish for the same records change, so existing channels get rewritten.
OUTPUT_FORMAT = 1


@dataclass(frozen=True)
class PublishSettings:
    """How outputs are written; a change of settings rewrites the outputs on the next run."""

    base_url: str | None = None
    repodata_max_age: int = DEFAULT_REPODATA_MAX_AGE

    def subdir_base_url(self, subdir: str) -> str | None:
        """Clients fetch `base_url + filename`, so the channel-level URL gets the subdir appended."""
        return f"{self.base_url.rstrip('/')}/{subdir}/" if self.base_url else None

    @property
    def repodata_cache_control(self) -> str:
        return f"public, max-age={self.repodata_max_age}"

    def fingerprint(self) -> str:
        return json.dumps(
            {"format": OUTPUT_FORMAT, "base_url": self.base_url, "max_age": self.repodata_max_age},
            sort_keys=True,
        )


class ProgressFactory(Protocol):
    """Opens a progress display for `total` package reads and yields the function that advances it."""

    def __call__(self, label: str, total: int) -> AbstractContextManager[Callable[[], None]]: ...


@contextmanager
def no_progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    del label, total
    yield lambda: None


@dataclass
class IndexOptions:
    subdirs: Sequence[str] | None = None
    force: bool = False
    dry_run: bool = False
    jobs: int = DEFAULT_JOBS
    settings: PublishSettings = field(default_factory=PublishSettings)
    progress: ProgressFactory = no_progress


@dataclass(frozen=True)
class Rejection:
    file: str
    reason: str


@dataclass
class SubdirReport:
    """What one subdir run did. `failed` files could not be fetched this time and are retried next run."""

    subdir: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    failed: list[Rejection] = field(default_factory=list)
    written: bool = False
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "rejected": [{"file": r.file, "reason": r.reason} for r in self.rejected],
            "failed": [{"file": r.file, "reason": r.reason} for r in self.failed],
            "written": self.written,
            "error": self.error,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ChannelReport:
    target: str
    dry_run: bool
    subdirs: dict[str, SubdirReport] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(report.error is None for report in self.subdirs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "subdirs": {name: report.to_dict() for name, report in sorted(self.subdirs.items())},
            "rejected": [{"file": r.file, "reason": r.reason} for r in self.rejected],
            "requests": dict(sorted(self.requests.items())),
            "seconds": round(self.seconds, 3),
        }


def index_channel(store: Store, channel: str, options: IndexOptions) -> ChannelReport:
    """Index every subdir of a channel (or the requested ones); noarch is always indexed.

    Raises FatalStoreError when the channel cannot be reached at all; a subdir that fails on its own is
    reported with its error while the others are still indexed.
    """
    started = time.monotonic()
    report = ChannelReport(target=store.describe(channel), dry_run=options.dry_run)
    root = store.list_folder(channel)
    folders = set(root.folders)
    if options.subdirs:
        subdirs = set(options.subdirs) | {"noarch"}
    else:
        subdirs = (folders & KNOWN_SUBDIRS) | {"noarch"}
        report.rejected = _packages_outside_subdirs(store, channel, root.objects, folders - KNOWN_SUBDIRS)
        if not folders & KNOWN_SUBDIRS:
            logger.warning("no subdir folders under %s: indexing it as an empty channel", report.target)
    for subdir in sorted(subdirs):
        report.subdirs[subdir] = index_subdir(store, channel, subdir, options)
    report.requests = dict(store.requests)
    report.seconds = time.monotonic() - started
    return report


def index_subdir(store: Store, channel: str, subdir: str, options: IndexOptions) -> SubdirReport:
    """Index one subdir, retrying when a concurrent indexer commits first."""
    started = time.monotonic()
    prefix = join_key(channel, subdir)
    report = SubdirReport(subdir)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            report = _index_subdir_once(store, prefix, subdir, options)
            report.attempts = attempt
            break
        except PreconditionFailedError as error:
            logger.info("%s changed under us (attempt %d): %s", store.describe(prefix), attempt, error)
            report = SubdirReport(
                subdir, attempts=attempt, error=f"gave up after {attempt} conflicting updates"
            )
        except FatalStoreError:
            raise
        except StoreError as error:
            report = SubdirReport(subdir, attempts=attempt, error=str(error))
            break
    report.seconds = time.monotonic() - started
    if report.error:
        logger.error("could not index %s: %s", store.describe(prefix), report.error)
    return report


def _index_subdir_once(store: Store, prefix: str, subdir: str, options: IndexOptions) -> SubdirReport:
    listing = store.list_folder(prefix)
    listed = {obj.name: obj for obj in listing.objects}
    stored_state, state_etag = _load_state(store, prefix)
    previous = stored_state if stored_state is not None else _adopt_published(store, prefix, listed)
    plan = plan_subdir(listing.objects, previous, force=options.force)
    report = SubdirReport(
        subdir,
        added=plan.added,
        updated=sorted(plan.replaced),
        removed=plan.removed,
        unchanged=len(plan.keep),
    )
    if options.dry_run:
        report.rejected = [Rejection(name, r.reason) for name, r in sorted(plan.rejected.items())]
        return report

    state = _next_state(store, prefix, subdir, plan, previous, options, report)
    settings = options.settings
    outputs_current = previous.settings == settings.fingerprint() and all(
        name in listed and listed[name].etag == previous.outputs.get(name) for name in OUR_OUTPUT_FILES
    )
    if state.packages != previous.packages or not outputs_current or options.force:
        _publish(store, prefix, subdir, state, previous, options)
        report.written = True
    elif state.rejected == previous.rejected and stored_state is not None:
        return report
    _commit_state(store, prefix, state, state_etag)
    return report


def _next_state(
    store: Store,
    prefix: str,
    subdir: str,
    plan: SubdirPlan,
    previous: SubdirState,
    options: IndexOptions,
    report: SubdirReport,
) -> SubdirState:
    """Read the planned packages and fold the outcomes into the state the run will commit."""
    state = SubdirState(
        packages=dict(plan.keep),
        rejected=dict(plan.rejected),
        outputs=dict(previous.outputs),
        shards=dict(previous.shards),
        settings=previous.settings,
    )
    outcomes = _read_packages(store, subdir, plan.read, options)
    for obj, outcome in outcomes:
        if isinstance(outcome, IndexedPackage):
            state.packages[obj.name] = outcome
        elif isinstance(outcome, RejectedFile):
            state.rejected[obj.name] = outcome
        else:
            report.failed.append(Rejection(obj.name, outcome))
            logger.warning(
                "could not read %s (will retry on the next run): %s", store.describe(obj.key), outcome
            )
            # A file we could not fetch keeps its last good record rather than vanishing from the index.
            if obj.name in previous.packages:
                state.packages[obj.name] = previous.packages[obj.name]
    failed = {failure.file for failure in report.failed}
    report.added = [name for name in report.added if name in state.packages and name not in failed]
    report.updated = [name for name in report.updated if name in state.packages and name not in failed]
    for name, rejected in sorted(state.rejected.items()):
        report.rejected.append(Rejection(name, rejected.reason))
        if previous.rejected.get(name) != rejected:
            logger.warning("rejected %s: %s", store.describe(join_key(prefix, name)), rejected.reason)
    return state


def _read_packages(
    store: Store, subdir: str, objects: list[StoredObject], options: IndexOptions
) -> list[tuple[StoredObject, IndexedPackage | RejectedFile | str]]:
    if not objects:
        return []
    results: list[tuple[StoredObject, IndexedPackage | RejectedFile | str]] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool,
        options.progress(subdir, len(objects)) as advance,
    ):
        futures = {pool.submit(read_package, store, subdir, obj): obj for obj in objects}
        for future in as_completed(futures):
            results.append((futures[future], future.result()))
            advance()
    return results


def read_package(store: Store, subdir: str, obj: StoredObject) -> IndexedPackage | RejectedFile | str:
    """Fetch one package and build its record: an IndexedPackage, a RejectedFile, or why it failed."""
    filename = parse_package_filename(obj.name)
    if filename is None:
        return RejectedFile(obj.etag, obj.size, "file name is not <name>-<version>-<build>.conda|.tar.bz2")
    with PackageSpool() as spool:
        try:
            fetched = store.download(obj.key, spool.write)
        except StoreError as error:
            return str(error)
        try:
            if fetched.size == 0:
                raise BadPackageError("empty file (0 bytes)")
            metadata = spool.read_metadata(obj.name)
            record = encode_record(build_record(filename, subdir, metadata, spool.digests()))
        except BadPackageError as error:
            return RejectedFile(fetched.etag, fetched.size, str(error))
        except Exception as error:
            # Not a verdict on the package: an unforeseen failure is logged in full and retried next run,
            # and never stops the packages beside it.
            logger.exception("unexpected error while reading %s", store.describe(obj.key))
            return f"unexpected {type(error).__name__}: {error}"
    return IndexedPackage(fetched.etag, fetched.size, record)


def _publish(
    store: Store, prefix: str, subdir: str, state: SubdirState, previous: SubdirState, options: IndexOptions
) -> None:
    """Write shards that are new, then the shard index, repodata.json.zst and repodata.json."""
    settings = options.settings
    groups = group_by_name(state.records())
    previous_groups = group_by_name(previous.records())
    published = set(previous.shards.values())
    digests: dict[str, str] = {}
    new_shards: dict[str, bytes] = {}
    for name, group in groups.items():
        known = previous.shards.get(name)
        if known and not options.force and previous_groups.get(name) == group:
            digests[name] = known
            continue
        shard = render_shard(group)
        digests[name] = shard_digest(shard)
        if options.force or digests[name] not in published:
            new_shards[digests[name]] = shard
    _write_shards(store, prefix, new_shards, options.jobs)

    cache_control = settings.repodata_cache_control
    base_url = settings.subdir_base_url(subdir)
    repodata = render_repodata(subdir, state.records(), base_url)
    shard_index = render_shard_index(subdir, digests, datetime.now(UTC), base_url)
    outputs = {}
    for name, data, content_type in (
        (SHARD_INDEX, shard_index, ZSTD_TYPE),
        (REPODATA_ZST, compress_repodata(repodata), ZSTD_TYPE),
        (REPODATA_JSON, repodata, JSON_TYPE),
    ):
        outputs[name] = store.write(
            join_key(prefix, name), data, content_type=content_type, cache_control=cache_control
        )
    state.outputs = outputs
    state.shards = digests
    state.settings = settings.fingerprint()


def _write_shards(store: Store, prefix: str, shards: dict[str, bytes], jobs: int) -> None:
    def write(digest: str) -> None:
        store.write(
            join_key(prefix, shard_path(digest)),
            shards[digest],
            content_type=ZSTD_TYPE,
            cache_control=SHARD_CACHE_CONTROL,
        )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(write, digest) for digest in shards]:
            future.result()


def _commit_state(store: Store, prefix: str, state: SubdirState, state_etag: str | None) -> None:
    store.write(
        join_key(prefix, STATE_FILE),
        state.to_bytes(),
        content_type=ZSTD_TYPE,
        cache_control=STATE_CACHE_CONTROL,
        if_match=state_etag,
        if_none_match=state_etag is None,
    )


def _load_state(store: Store, prefix: str) -> tuple[SubdirState | None, str | None]:
    """The stored state and its ETag; an unreadable state is rebuilt (its ETag kept for the overwrite)."""
    key = join_key(prefix, STATE_FILE)
    try:
        data, etag = store.read(key)
    except NotFoundError:
        return None, None
    try:
        return SubdirState.from_bytes(data), etag
    except ValueError as error:
        logger.warning("ignoring %s and rebuilding it: %s", store.describe(key), error)
        return None, etag


def _adopt_published(store: Store, prefix: str, listed: dict[str, StoredObject]) -> SubdirState:
    """Start from the repodata.json another tool left, when there is one and it parses."""
    if REPODATA_JSON not in listed:
        return SubdirState()
    key = join_key(prefix, REPODATA_JSON)
    try:
        data, _ = store.read(key)
        records = parse_repodata(data)
    except NotFoundError:
        return SubdirState()
    except (ValueError, UnicodeDecodeError) as error:
        logger.warning("ignoring unreadable %s: %s", store.describe(key), error)
        return SubdirState()
    return adopt_repodata(records, listed.values())


def _packages_outside_subdirs(
    store: Store, channel: str, root_objects: list[StoredObject], folders: set[str]
) -> list[Rejection]:
    """Packages no client will ever look for: in the channel root, or in a folder that is no subdir."""
    misplaced = [(obj, "not inside a subdir folder") for obj in root_objects]
    for folder in sorted(folders):
        if not folder.startswith("."):
            reason = f"{folder!r} is not a known conda subdir"
            misplaced += [(obj, reason) for obj in store.list_folder(join_key(channel, folder)).objects]
    rejections = []
    for obj, reason in misplaced:
        if package_extension(obj.name) is not None:
            rejections.append(Rejection(obj.key.removeprefix(f"{channel}/") if channel else obj.key, reason))
            logger.warning("rejected %s: %s", store.describe(obj.key), reason)
    return rejections
