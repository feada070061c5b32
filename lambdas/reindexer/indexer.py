"""The full indexing use case: bring a channel's published index in line with the packages it holds.

Per subdir, under the subdir's lease: list the folder, load the state, plan, read only new or changed
packages (in parallel), publish and commit (see reindexer.publication). With a deadline, reading stops in
time to commit what was read, and the report says the run is not complete; the next run continues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .contract import (
    DEFAULT_MAX_PACKAGE_MB,
    DEFAULT_READ_JOBS,
    PUBLISHED_FILES,
    REPODATA_JSON,
    STATE_FILE,
    join_key,
)
from .layout import KNOWN_SUBDIRS, package_extension
from .lease import Lease, LeaseTerms
from .package_fetch import ProgressFactory, no_progress, read_packages, recheck_records
from .planner import SubdirPlan, adopt_repodata, plan_subdir
from .publication import (
    PublishSettings,
    commit_state,
    fold_outcomes,
    load_state,
    publish_outputs,
    run_transaction,
)
from .record_schema import RECORD_SCHEMA
from .repodata import parse_repodata
from .reports import ChannelReport, Rejection, SubdirReport, one_line_reason
from .state import SubdirState
from .store import FatalStoreError, NotFoundError, Store, StoredObject, StoreError

logger = logging.getLogger(__name__)

DEFAULT_JOBS = DEFAULT_READ_JOBS


@dataclass
class IndexOptions:
    subdirs: Sequence[str] | None = None
    force: bool = False
    dry_run: bool = False
    jobs: int = DEFAULT_JOBS
    settings: PublishSettings = field(default_factory=PublishSettings)
    progress: ProgressFactory = no_progress
    lease: LeaseTerms = field(default_factory=LeaseTerms)
    # time.monotonic() value after which no new package read starts; None for no limit.
    deadline: float | None = None
    # Package files larger than this are rejected before they are downloaded.
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_MB * 1024 * 1024


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
        if options.deadline is not None and time.monotonic() >= options.deadline:
            report.skipped.append(subdir)
            continue
        try:
            report.subdirs[subdir] = index_subdir(store, channel, subdir, options)
        except FatalStoreError:
            raise
        except Exception as error:
            # A bug must cost one subdir, not the channel: the others are still indexed, and this one
            # reports the error (the traceback goes to the log only).
            logger.exception("indexing %s failed", store.describe(join_key(channel, subdir)))
            reason = one_line_reason(f"unexpected {type(error).__name__}: {error}")
            report.subdirs[subdir] = SubdirReport(subdir, error=reason)
    report.requests = dict(store.requests)
    report.seconds = time.monotonic() - started
    return report


def index_subdir(store: Store, channel: str, subdir: str, options: IndexOptions) -> SubdirReport:
    """Index one subdir from a listing of its folder, retrying when a concurrent indexer commits first.

    A survey (listing, state, plan: reads only) comes first, so a run with nothing to do takes no lease
    and writes nothing at all; otherwise the work is redone under the lease.
    """
    prefix = join_key(channel, subdir)
    started = time.monotonic()
    try:
        survey = _survey(store, prefix, subdir, options)
    except FatalStoreError:
        raise
    except StoreError as error:
        return SubdirReport(subdir, error=str(error), seconds=time.monotonic() - started)
    if options.dry_run or not survey.has_work(options):
        report = survey.planned_report(subdir)
        report.seconds = time.monotonic() - started
        return report
    surveys = [survey]

    def locked(lease: Lease) -> SubdirReport:
        # The survey still holds if nobody committed since: one HEAD instead of a new listing.
        current = store.head(join_key(prefix, STATE_FILE))
        if (current.etag if current else None) != surveys[-1].state_etag:
            surveys.append(_survey(store, prefix, subdir, options))
        return _index_surveyed(store, prefix, subdir, options, lease, surveys[-1])

    return run_transaction(store, prefix, subdir, options.lease, locked)


def index_subdir_locked(
    store: Store, prefix: str, subdir: str, options: IndexOptions, lease: Lease
) -> SubdirReport:
    """The body of a full subdir index; the caller holds the subdir's lease."""
    return _index_surveyed(store, prefix, subdir, options, lease, _survey(store, prefix, subdir, options))


def _index_surveyed(
    store: Store, prefix: str, subdir: str, options: IndexOptions, lease: Lease, survey: _Survey
) -> SubdirReport:
    previous, plan = survey.previous, survey.plan
    report = SubdirReport(subdir, removed=list(plan.removed), unchanged=len(plan.keep))
    # The outputs, shard digests and settings carry over until publish_outputs replaces them.
    state = replace(previous, packages=dict(plan.keep), rejected=dict(plan.rejected), schema=RECORD_SCHEMA)
    outcomes = recheck_records(plan.keep, subdir, previous.schema)
    outcomes += read_packages(
        store,
        subdir,
        plan.read,
        jobs=options.jobs,
        max_size=options.max_package_bytes,
        progress=options.progress,
        deadline=options.deadline,
    )
    fold_outcomes(state, previous, outcomes, report)
    if state.packages != previous.packages or not survey.outputs_current(options) or options.force:
        publish_outputs(
            store,
            prefix,
            subdir,
            state,
            previous,
            options.settings,
            jobs=options.jobs,
            rewrite_shards=options.force,
        )
        report.written = True
    elif survey.stored_state is not None and (state.rejected, state.schema) == (
        previous.rejected,
        previous.schema,
    ):
        return report
    commit_state(store, prefix, state, survey.state_etag, lease)
    return report


@dataclass
class _Survey:
    """What a subdir looks like before any change: its listing, its state and the resulting plan."""

    listed: dict[str, StoredObject]
    stored_state: SubdirState | None
    state_etag: str | None
    previous: SubdirState
    plan: SubdirPlan

    def outputs_current(self, options: IndexOptions) -> bool:
        """The outputs are the ones the state recorded, written with today's settings."""
        return self.previous.settings == options.settings.fingerprint() and all(
            name in self.listed and self.listed[name].etag == self.previous.outputs.get(name)
            for name in PUBLISHED_FILES
        )

    def has_work(self, options: IndexOptions) -> bool:
        plan = self.plan
        return (
            options.force
            or self.stored_state is None
            or bool(plan.read or plan.removed)
            or plan.rejected != self.previous.rejected
            or self.previous.schema != RECORD_SCHEMA
            or not self.outputs_current(options)
        )

    def planned_report(self, subdir: str) -> SubdirReport:
        plan = self.plan
        return SubdirReport(
            subdir,
            added=plan.added,
            updated=sorted(plan.replaced),
            removed=plan.removed,
            unchanged=len(plan.keep),
            rejected=[Rejection(name, rejected.reason) for name, rejected in sorted(plan.rejected.items())],
        )


def _survey(store: Store, prefix: str, subdir: str, options: IndexOptions) -> _Survey:
    listing = store.list_folder(prefix)
    listed = {obj.name: obj for obj in listing.objects}
    stored_state, state_etag = load_state(store, prefix)
    previous = stored_state
    if previous is None:
        previous = _adopt_published(store, prefix, subdir, listed)
    plan = plan_subdir(listing.objects, previous, force=options.force)
    return _Survey(listed, stored_state, state_etag, previous, plan)


def _adopt_published(store: Store, prefix: str, subdir: str, listed: dict[str, StoredObject]) -> SubdirState:
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
    return adopt_repodata(records, listed.values(), subdir)


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
    return rejections
