"""The event use case: apply what S3 notifications report to one subdir, without listing it.

The event is a hint and the bucket is the truth: each named file is looked at as it is now, so duplicate,
late and out-of-order notifications all converge on what the bucket holds. A file the state knows is
checked with a HEAD and re-read only if its ETag or size changed; an unknown file is read with one GET;
a file that is gone loses its record. Apart from writing the outputs, an update costs a fixed number of
requests whatever the size of the subdir: lease PUT, state GET, one HEAD or GET per file, changed shards,
the outputs, state PUT, lease DELETE. A publication then makes the channel files again
(reindexer.channel_files): channel lease PUT, channel state GET, one GET per subdir state, the changed files,
channel state PUT, lease DELETE. An update with nothing to publish reads the channel state (one GET) to make
them again if a regeneration was cut short after this subdir's last commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .channel_files import channel_files_behind, refresh_channel_files
from .contract import PATCH_INSTRUCTIONS, REPODATA_JSON
from .indexer import index_subdir, index_subdir_locked
from .lease import Lease
from .options import IndexOptions
from .package_fetch import Gone, read_packages, recheck_records
from .patch_sources import patch_changed, refresh_patch_file
from .planner import listing_rejection
from .publication import (
    commit_state,
    fold_outcomes,
    load_state,
    publish_outputs,
    run_transaction,
    state_changed,
)
from .record_schema import RECORD_SCHEMA
from .reports import SubdirReport, one_line_reason
from .state import RejectedFile
from .store import Store, StoredObject, TransientStoreError, UnreadableObjectError
from .subdir_ref import SubdirRef


def update_subdir(
    store: Store, channel: str, subdir: str, filenames: Iterable[str], options: IndexOptions
) -> SubdirReport:
    """Bring the records of `filenames` (names inside the subdir folder) in line with the bucket."""
    ref = SubdirRef(store, channel, subdir)
    names = sorted(set(filenames))
    report = run_transaction(ref, options, lambda lease: _update_locked(ref, names, options, lease))
    if report.error is None and (
        report.written or channel_files_behind(store, channel, subdir, report.state_etag)
    ):
        # Committed: now the channel files, which read every subdir's state (noarch may be new too). An
        # update with nothing to publish makes them again only when they were not made from this subdir's
        # state: a redelivery after a publication whose regeneration was cut short.
        report.channel_files = refresh_channel_files(store, channel, options, subdirs={subdir, "noarch"})
    return report


def _update_locked(subdir: SubdirRef, names: list[str], options: IndexOptions, lease: Lease) -> SubdirReport:
    previous, state_etag = load_state(subdir)
    if previous is None:
        # A subdir seen for the first time, or whose state was lost: one full index from a listing builds it.
        # A new channel also needs noarch/repodata.json; it is made first, so if that fails this subdir is
        # not committed either and the redelivered event tries both again.
        noarch = _ensure_noarch(subdir, options)
        report = index_subdir_locked(subdir, options, lease)
        report.noarch_first = noarch
        return report

    state = replace(
        previous,
        packages=dict(previous.packages),
        rejected=dict(previous.rejected),
        schema=RECORD_SCHEMA,
    )
    # Records kept under older rules are checked again first; what the events report then overrides them.
    outcomes = recheck_records(previous.packages, subdir.name, previous.schema)
    to_read: list[StoredObject] = []
    for name in (name for name in names if name != PATCH_INSTRUCTIONS):
        key = subdir.key(name)
        known = previous.packages.get(name) or previous.rejected.get(name)
        reason = listing_rejection(name)
        if known is None and reason is None:
            to_read.append(StoredObject(key, "", 0))  # new: one GET reads it, no HEAD first
            continue
        try:
            current = subdir.store.head(key)
        except UnreadableObjectError as error:
            outcomes.append((StoredObject(key, "", 0), RejectedFile("", 0, one_line_reason(str(error)))))
            continue
        if current is None:
            outcomes.append((StoredObject(key, "", 0), Gone()))
        elif known is not None and (known.etag, known.size) == (current.etag, current.size):
            continue
        elif reason is not None:
            outcomes.append((current, RejectedFile(current.etag, current.size, reason)))
        else:
            to_read.append(current)
    outcomes += read_packages(subdir, to_read, options)

    report = SubdirReport(subdir.name)
    fold_outcomes(state, previous, outcomes, report)
    # After the records are folded: new instructions are checked against the records they will patch.
    if PATCH_INSTRUCTIONS in names:
        refresh_patch_file(subdir, state, subdir.store.head(subdir.key(PATCH_INSTRUCTIONS)))
    report.unchanged = len(state.packages) - len(report.added) - len(report.updated)
    if state.packages != previous.packages or patch_changed(state, previous):
        publish_outputs(subdir, state, previous, options)
        report.written = True
    report.patch_problems = state.patch_problems()
    if not report.written and not state_changed(state, previous):
        report.state_etag = state_etag
        return report
    commit_state(subdir, state, state_etag, lease)
    return report


def _ensure_noarch(subdir: SubdirRef, options: IndexOptions) -> SubdirReport | None:
    """Publish the (possibly empty) noarch index of a channel that has none yet; its report, if it did."""
    noarch = SubdirRef(subdir.store, subdir.channel, "noarch")
    if subdir.name == "noarch" or subdir.store.head(noarch.key(REPODATA_JSON)) is not None:
        return None
    report = index_subdir(noarch, options)
    if report.error is not None:
        raise TransientStoreError(f"could not create the noarch index first: {report.error}")
    return report
