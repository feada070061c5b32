"""The full indexing use case: bring a channel's published index in line with the packages it holds.

Per subdir, under the subdir's lease: list the folder, load the state, plan, read only new or changed
packages (in parallel), publish and commit (see reindexer.publication). With a deadline, reading stops in
time to commit what was read, and the report says the run is not complete; the next run continues. Then the
channel files (reindexer.channel_files), when a subdir was published or they are not current.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .channel_files import channel_files_current, refresh_channel_files, subdirs_in_listing
from .contract import PATCH_INSTRUCTIONS, PUBLISHED_FILES, REPODATA_JSON, SHARDS_FOLDER, STATE_FILE, join_key
from .layout import KNOWN_SUBDIRS, package_extension
from .lease import Lease
from .options import IndexOptions
from .package_fetch import Prefetched, read_packages, recheck_records, take_prefetched
from .patch_sources import PatchPackageSource, patch_changed, refresh_patch_file, refresh_patch_package
from .planner import SubdirPlan, adopt_repodata, plan_subdir
from .publication import (
    clean_shards,
    commit_state,
    fold_outcomes,
    listed_shards,
    load_state,
    publish_outputs,
    run_transaction,
    shards_to_clean,
    state_changed,
)
from .record_schema import RECORD_SCHEMA
from .repodata import parse_repodata
from .reports import ChannelFilesReport, ChannelReport, Rejection, SubdirReport, one_line_reason
from .state import SubdirState
from .store import FatalStoreError, NotFoundError, Store, StoredObject, StoreError
from .subdir_ref import SubdirRef

logger = logging.getLogger(__name__)


def index_channel(
    store: Store, channel: str, options: IndexOptions, prefetched: Mapping[str, Prefetched] | None = None
) -> ChannelReport:
    """Index every subdir of a channel (or the requested ones); noarch is always indexed. `prefetched`: by
    subdir, packages read earlier (a fan-out run's batches), taken instead of read while still current.

    Raises FatalStoreError when the channel cannot be reached at all; a subdir that fails on its own is
    reported with its error while the others are still indexed.
    """
    clock = options.clock
    started = clock.monotonic()
    report = ChannelReport(target=store.describe(channel), dry_run=options.dry_run)
    root = store.list_folder(channel)
    folders = set(root.folders)
    subdirs = _subdirs_to_index(folders, options)
    if not options.subdirs:
        report.rejected = _packages_outside_subdirs(store, channel, root.objects, folders - KNOWN_SUBDIRS)
        if not folders & KNOWN_SUBDIRS:
            logger.warning("no subdir folders under %s: indexing it as an empty channel", report.target)
    patch_package = PatchPackageSource.find(
        store, channel, options.repodata_patch, max_size=options.max_package_bytes
    )
    for subdir in sorted(subdirs):
        # Past the read deadline a subdir is left for the next run, unless verdicts read beforehand are
        # waiting (a fan-out commit): those are committed, and what is still unread is deferred.
        late = options.deadline is not None and clock.monotonic() >= options.deadline
        if late and not (prefetched or {}).get(subdir):
            report.skipped.append(subdir)
            continue
        try:
            report.subdirs[subdir] = index_subdir(
                SubdirRef(store, channel, subdir), options, patch_package, (prefetched or {}).get(subdir, {})
            )
        except FatalStoreError:
            raise
        except Exception as error:
            # A bug must cost one subdir, not the channel: the others are still indexed, and this one
            # reports the error (the traceback goes to the log only).
            logger.exception("indexing %s failed", store.describe(join_key(channel, subdir)))
            reason = one_line_reason(f"unexpected {type(error).__name__}: {error}")
            report.subdirs[subdir] = SubdirReport(subdir, error=reason)
    if not options.dry_run:
        report.channel_files = _update_channel_files(store, channel, options, report, folders, root.objects)
    report.requests = dict(store.requests)
    report.seconds = clock.monotonic() - started
    return report


def packages_to_read(store: Store, channel: str, options: IndexOptions) -> dict[str, list[StoredObject]]:
    """By subdir, the packages a full run would read now (new or changed ones; with force, all of them):
    the work of a fan-out run (reindexer.reindex_runs). Reads only: the listings and the states."""
    subdirs = _subdirs_to_index(set(store.list_folder(channel).folders), options)
    return {name: _survey(SubdirRef(store, channel, name), options).plan.read for name in sorted(subdirs)}


def _subdirs_to_index(folders: set[str], options: IndexOptions) -> set[str]:
    """The requested subdirs, or every known subdir folder of the channel; noarch always."""
    if options.subdirs:
        return set(options.subdirs) | {"noarch"}
    return (folders & KNOWN_SUBDIRS) | {"noarch"}


def _update_channel_files(
    store: Store,
    channel: str,
    options: IndexOptions,
    report: ChannelReport,
    folders: set[str],
    listed: list[StoredObject],
) -> ChannelFilesReport | None:
    """Make the channel files again when a subdir was published, or when they are not what the subdirs'
    states make (a regeneration that failed after a publication, files deleted, new formats or settings);
    a run that changed nothing and finds them current writes nothing (None)."""
    subdirs = subdirs_in_listing(folders) | report.subdirs.keys()
    published = any(subdir.written for subdir in report.subdirs.values())
    if not published:
        # The states the subdirs' surveys read: only the others are looked at again (a HEAD each).
        seen = {name: subdir.state_etag for name, subdir in report.subdirs.items() if subdir.state_etag}
        try:
            if channel_files_current(store, channel, options, subdirs=subdirs, listed=listed, seen=seen):
                return None
        except FatalStoreError:
            raise
        except StoreError as error:
            return ChannelFilesReport(error=one_line_reason(str(error)))
    return refresh_channel_files(store, channel, options, subdirs=subdirs)


def index_subdir(
    subdir: SubdirRef,
    options: IndexOptions,
    patch_package: PatchPackageSource | None = None,
    prefetched: Prefetched | None = None,
) -> SubdirReport:
    """Index one subdir from a listing of its folder, retrying when a concurrent indexer commits first.

    A survey (listing, state, plan: reads only) comes first, so a run with nothing to do takes no lease
    and writes nothing at all; otherwise the work is redone under the lease.
    """
    clock = options.clock
    started = clock.monotonic()
    try:
        survey = _survey(subdir, options, patch_package)
    except FatalStoreError:
        raise
    except StoreError as error:
        return SubdirReport(subdir.name, error=str(error), seconds=clock.monotonic() - started)
    if options.dry_run or not survey.has_work(options):
        report = survey.planned_report(subdir.name)
        report.seconds = clock.monotonic() - started
        report.state_etag = survey.state_etag
        return report
    surveys = [survey]

    def locked(lease: Lease) -> SubdirReport:
        # The survey still holds if nobody committed since: one HEAD instead of a new listing.
        current = subdir.store.head(subdir.key(STATE_FILE))
        if (current.etag if current else None) != surveys[-1].state_etag:
            surveys.append(_survey(subdir, options, patch_package))
        return _index_surveyed(subdir, options, lease, surveys[-1], prefetched or {})

    return run_transaction(subdir, options, locked)


def index_subdir_locked(subdir: SubdirRef, options: IndexOptions, lease: Lease) -> SubdirReport:
    """The body of a full subdir index; the caller holds the subdir's lease."""
    return _index_surveyed(subdir, options, lease, _survey(subdir, options), {})


def _index_surveyed(
    subdir: SubdirRef, options: IndexOptions, lease: Lease, survey: _Survey, prefetched: Prefetched
) -> SubdirReport:
    previous, plan = survey.previous, survey.plan
    report = SubdirReport(subdir.name, removed=list(plan.removed), unchanged=len(plan.keep))
    # The outputs, shard digests and settings carry over until publish_outputs replaces them.
    state = replace(previous, packages=dict(plan.keep), rejected=dict(plan.rejected), schema=RECORD_SCHEMA)
    outcomes = recheck_records(plan.keep, subdir.name, previous.schema)
    taken, to_read = take_prefetched(plan.read, prefetched)
    outcomes += taken + read_packages(subdir, to_read, options)
    fold_outcomes(state, previous, outcomes, report)
    refresh_patch_file(subdir, state, survey.listed.get(PATCH_INSTRUCTIONS))
    refresh_patch_package(subdir, state, survey.patch_package)
    if (
        state.packages != previous.packages
        or patch_changed(state, previous)
        or not survey.outputs_current(options)
        or options.force
    ):
        publish_outputs(subdir, state, previous, options, rewrite_shards=options.force)
        report.written = True
    if options.shard_retention is not None and survey.shards is not None:
        report.shards_deleted = clean_shards(subdir, state, survey.shards, options)
    report.patch_problems = state.patch_problems()
    if survey.stored_state is not None and not report.written and not state_changed(state, previous):
        return report
    commit_state(subdir, state, survey.state_etag, lease)
    return report


@dataclass
class _Survey:
    """What a subdir looks like before any change: its listing, its state and the resulting plan."""

    listed: dict[str, StoredObject]
    stored_state: SubdirState | None
    state_etag: str | None
    previous: SubdirState
    plan: SubdirPlan
    # The digests of the shard files listed under shards/ (full runs that clean shards only).
    shards: set[str] | None = None
    # The patch package as this full run found it (None: not looked for, as on the event path).
    patch_package: PatchPackageSource | None = None

    def outputs_current(self, options: IndexOptions) -> bool:
        """The outputs are the ones the state recorded, written with today's settings."""
        return self.previous.settings == options.settings.fingerprint() and all(
            name in self.listed and self.listed[name].etag == self.previous.outputs.get(name)
            for name in {*PUBLISHED_FILES, *self.previous.outputs}
        )

    def patch_file_changed(self) -> bool:
        listed = self.listed.get(PATCH_INSTRUCTIONS)
        return (listed.etag if listed else "") != self.previous.patch_file_etag

    def has_work(self, options: IndexOptions) -> bool:
        plan = self.plan
        return (
            options.force
            or self.stored_state is None
            or bool(plan.read or plan.removed)
            or plan.rejected != self.previous.rejected
            or self.previous.schema != RECORD_SCHEMA
            or not self.outputs_current(options)
            or self.patch_file_changed()
            or (self.patch_package is not None and self.patch_package.identity != self.previous.patch_package)
            or (
                options.shard_retention is not None
                and self.shards is not None
                and shards_to_clean(self.previous, self.shards, options)
            )
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
            # A bad patch file stays reported by the runs that have nothing to do.
            patch_problems=self.previous.patch_problems(),
        )


def _survey(
    subdir: SubdirRef, options: IndexOptions, patch_package: PatchPackageSource | None = None
) -> _Survey:
    listing = subdir.store.list_folder(subdir.prefix)
    listed = {obj.name: obj for obj in listing.objects}
    stored_state, state_etag = load_state(subdir)
    previous = stored_state
    if previous is None:
        previous = _adopt_published(subdir, listed)
    plan = plan_subdir(listing.objects, previous, force=options.force)
    shards = None
    if options.shard_retention is not None and SHARDS_FOLDER in listing.folders:
        shards = listed_shards(subdir)
    return _Survey(listed, stored_state, state_etag, previous, plan, shards, patch_package)


def _adopt_published(subdir: SubdirRef, listed: dict[str, StoredObject]) -> SubdirState:
    """Start from the repodata.json another tool left, when there is one and it parses."""
    if REPODATA_JSON not in listed:
        return SubdirState()
    try:
        data, _ = subdir.store.read(subdir.key(REPODATA_JSON))
        records = parse_repodata(data)
    except NotFoundError:
        return SubdirState()
    except (ValueError, UnicodeDecodeError) as error:
        logger.warning("ignoring unreadable %s: %s", subdir.describe(REPODATA_JSON), error)
        return SubdirState()
    return adopt_repodata(records, listed.values(), subdir.name)


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
