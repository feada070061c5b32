"""Publishing a subdir: how a new state becomes visible to clients, safely under concurrency.

Every update of a subdir, whether a full index or an event, runs as one transaction:
1. take the subdir's lease (reindexer.lease), so at most one writer publishes at a time;
2. load the state and remember its ETag;
3. write new shards, then repodata_shards.msgpack.zst, repodata.json.zst and repodata.json;
4. commit the state with `If-Match: <ETag read in 2>` (or `If-None-Match: *` for a new subdir), after
   checking the lease is still ours;
5. release the lease.
The state is the commit point. A writer that stops after 3 leaves outputs whose ETags differ from those
the state recorded, and it did not acknowledge its work, so the work is redone and the outputs rewritten
(a full run compares the listed ETags with the recorded ones). Shards are content-addressed and written
before anything points at them, so no reader ever sees a shard index naming a missing shard. A commit that
loses its compare-and-swap (a lease taken over after expiry, a writer that ignores leases) raises
PreconditionFailedError and the whole transaction is retried from 1, so no update is ever lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .clock import utc_now
from .contract import (
    REPODATA_FROM_PACKAGES,
    REPODATA_FROM_PACKAGES_ZST,
    REPODATA_JSON,
    REPODATA_ZST,
    RUN_EXPORTS_JSON,
    SHARD_INDEX,
    SHARDS_FOLDER,
    STATE_FILE,
    UNPATCHED_FILES,
)
from .lease import Lease
from .options import IndexOptions
from .package_fetch import Deferred, Failed, Gone, Outcome
from .patch_sources import APPLY_FAILURE, Views, views_of
from .repodata import compress_repodata, render_repodata, render_run_exports
from .reports import Rejection, SubdirReport
from .shards import SHARD_SUFFIX, groups_to_render, render_shard, render_shard_index, shard_digest, shard_path
from .state import IndexedPackage, RejectedFile, SubdirState
from .store import FatalStoreError, NotFoundError, PreconditionFailedError, StoredObject, StoreError
from .subdir_ref import SubdirRef

logger = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5
SHARD_CACHE_CONTROL = "public, max-age=31536000, immutable"
STATE_CACHE_CONTROL = "no-store"
JSON_TYPE = "application/json"
ZSTD_TYPE = "application/zstd"


def run_transaction(
    subdir: SubdirRef, options: IndexOptions, body: Callable[[Lease], SubdirReport]
) -> SubdirReport:
    """Run `body` under the subdir's lease, again from the start whenever its commit loses a race."""
    clock = options.clock
    started = clock.monotonic()
    report = SubdirReport(subdir.name)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            with Lease(subdir, options.lease, clock=clock).hold() as lease:
                report = body(lease)
            report.attempts = attempt
            break
        except PreconditionFailedError as error:
            logger.info("%s changed under us (attempt %d): %s", subdir.describe(), attempt, error)
            report = SubdirReport(
                subdir.name,
                attempts=attempt,
                error=f"gave up after {attempt} conflicting updates (last: {error})",
            )
        except FatalStoreError:
            raise
        except StoreError as error:
            report = SubdirReport(subdir.name, attempts=attempt, error=str(error))
            break
    report.seconds = clock.monotonic() - started
    return report


def load_state(subdir: SubdirRef) -> tuple[SubdirState | None, str | None]:
    """The stored state and its ETag; an unreadable state is rebuilt (its ETag kept for the overwrite)."""
    try:
        data, etag = subdir.store.read(subdir.key(STATE_FILE))
    except NotFoundError:
        return None, None
    try:
        return SubdirState.from_bytes(data), etag
    except ValueError as error:
        logger.warning("ignoring %s and rebuilding it: %s", subdir.describe(STATE_FILE), error)
        return None, etag


def fold_outcomes(
    state: SubdirState,
    previous: SubdirState,
    outcomes: list[tuple[StoredObject, Outcome]],
    report: SubdirReport,
) -> None:
    """Apply what reading packages gave to the state the run will commit, and count it in the report.

    Per-file lines are the caller's to print (the CLI's summary, the handlers' one line per subdir).
    """
    for obj, outcome in outcomes:
        name = obj.name
        if isinstance(outcome, IndexedPackage):
            state.packages[name] = outcome
            state.rejected.pop(name, None)
            (report.updated if name in previous.packages else report.added).append(name)
        elif isinstance(outcome, RejectedFile):
            state.packages.pop(name, None)
            state.rejected[name] = outcome
            if name in previous.packages:
                report.removed.append(name)
        elif isinstance(outcome, Gone):
            state.rejected.pop(name, None)
            state.packages.pop(name, None)
            if name in previous.packages:
                report.removed.append(name)
        elif isinstance(outcome, Failed | Deferred):
            # Keep the last good record (if any) rather than let the file vanish from the index.
            if name in previous.packages:
                state.packages.setdefault(name, previous.packages[name])
            if isinstance(outcome, Failed):
                report.failed.append(Rejection(name, outcome.reason))
            else:
                report.deferred.append(name)
    for names in (report.added, report.updated, report.removed, report.deferred):
        names.sort()
    report.rejected = [Rejection(name, rejected.reason) for name, rejected in sorted(state.rejected.items())]
    report.rejected_now = sorted(
        name for name, new in state.rejected.items() if previous.rejected.get(name) != new
    )


def publish_outputs(
    subdir: SubdirRef,
    state: SubdirState,
    previous: SubdirState,
    options: IndexOptions,
    *,
    rewrite_shards: bool = False,
) -> None:
    """Write shards that are new, then the shard index, repodata.json.zst and repodata.json: the patched
    view, with the unpatched one beside it as repodata_from_packages.json while instructions are in force."""
    settings = options.settings
    views = views_of(state, subdir.name)
    _note_patch_problems(state, views)
    records = views.patched.records
    digests, render = groups_to_render(
        records, views_of(previous, subdir.name).patched.records, previous.shards, everything=rewrite_shards
    )
    published = set(previous.shards.values())
    new_shards: dict[str, bytes] = {}
    for name, group in render.items():
        shard = render_shard(group)
        digests[name] = shard_digest(shard)
        if rewrite_shards or digests[name] not in published:
            new_shards[digests[name]] = shard
    _write_shards(subdir, new_shards, options.jobs)

    base_url = settings.subdir_base_url(subdir.name)
    repodata = render_repodata(subdir.name, records, base_url, removed=views.patched.removed)
    shard_index = render_shard_index(subdir.name, digests, utc_now(options.clock), base_url)
    run_exports = render_run_exports(subdir.name, views.unpatched)
    outputs: dict[str, tuple[bytes, str]] = {
        SHARD_INDEX: (shard_index, ZSTD_TYPE),
        RUN_EXPORTS_JSON: (run_exports, JSON_TYPE),
        REPODATA_ZST: (compress_repodata(repodata), ZSTD_TYPE),
        REPODATA_JSON: (repodata, JSON_TYPE),
    }
    if not views.instructions.is_empty():
        unpatched = render_repodata(subdir.name, views.unpatched, base_url)
        outputs[REPODATA_FROM_PACKAGES_ZST] = (compress_repodata(unpatched), ZSTD_TYPE)
        outputs[REPODATA_FROM_PACKAGES] = (unpatched, JSON_TYPE)
    # The patched view goes out before the unpatched one's removal, repodata.json last of all.
    written = {
        name: subdir.store.write(
            subdir.key(name), data, content_type=content_type, cache_control=settings.repodata_cache_control
        )
        for name, (data, content_type) in sorted(outputs.items(), key=lambda item: item[0] == REPODATA_JSON)
    }
    for name in UNPATCHED_FILES:
        if name in previous.outputs and name not in written:
            subdir.store.delete(subdir.key(name))
    state.outputs = written
    _track_orphans(state, previous, set(digests.values()), options.clock.time())
    state.shards = digests
    state.settings = settings.fingerprint()
    state.published_at = options.clock.time()


def state_changed(state: SubdirState, previous: SubdirState) -> bool:
    """Whether the state holds news beyond its records and outputs (rejections, patch sources, orphans)."""

    def memory(of: SubdirState) -> tuple[object, ...]:
        return (
            of.rejected,
            of.schema,
            of.patch_file,
            of.patch_file_etag,
            of.patch_package,
            of.patch_package_instructions,
            of.patch_file_problem,
            of.patch_package_problem,
            of.orphans,
        )

    return memory(state) != memory(previous)


def listed_shards(subdir: SubdirRef) -> set[str]:
    """The digests of the shard files under the subdir's shards/ folder."""
    return {
        obj.name.removesuffix(SHARD_SUFFIX)
        for obj in subdir.store.list_folder(subdir.key(SHARDS_FOLDER)).objects
        if obj.name.endswith(SHARD_SUFFIX)
    }


def shards_to_clean(state: SubdirState, listed: set[str], options: IndexOptions) -> bool:
    """Whether a full run has shards to delete now, or shard files to start counting (left by a crash)."""
    return bool(
        _expired_orphans(state, listed, options) or listed - set(state.shards.values()) - state.orphans.keys()
    )


def clean_shards(subdir: SubdirRef, state: SubdirState, listed: set[str], options: IndexOptions) -> int:
    """Delete the shards no index has named for the retention; start counting shard files nobody tracks
    (a writer that stopped before its commit). Returns how many were deleted. Runs under the lease."""
    now = options.clock.time()
    referenced = set(state.shards.values())
    orphans = {digest: since for digest, since in state.orphans.items() if digest in listed}
    for digest in listed - referenced - orphans.keys():
        orphans[digest] = now
    state.orphans = orphans
    expired = _expired_orphans(state, listed, options)
    for digest in expired:
        subdir.store.delete(subdir.key(shard_path(digest)))
        del state.orphans[digest]
    return len(expired)


def _expired_orphans(state: SubdirState, listed: set[str], options: IndexOptions) -> list[str]:
    if options.shard_retention is None:
        return []
    now, referenced = options.clock.time(), set(state.shards.values())
    return sorted(
        digest
        for digest, since in state.orphans.items()
        if digest in listed and digest not in referenced and now - since >= options.shard_retention
    )


def _note_patch_problems(state: SubdirState, views: Views) -> None:
    """Keep why a patch source is left out of the view; a source that applies again loses its problem."""
    for field, problem in (
        ("patch_file_problem", views.file_problem),
        ("patch_package_problem", views.package_problem),
    ):
        current: str = getattr(state, field)
        if problem:
            setattr(state, field, problem)
        elif APPLY_FAILURE in current:
            setattr(state, field, "")


def _track_orphans(state: SubdirState, previous: SubdirState, referenced: set[str], now: float) -> None:
    """Shards the new index no longer names start their retention now; shards named again leave it."""
    orphans = {digest: since for digest, since in state.orphans.items() if digest not in referenced}
    for digest in set(previous.shards.values()) - referenced:
        orphans.setdefault(digest, now)
    state.orphans = orphans


def commit_state(subdir: SubdirRef, state: SubdirState, state_etag: str | None, lease: Lease) -> None:
    """Make the new state current, unless another writer committed since we loaded it."""
    lease.check()
    subdir.store.write(
        subdir.key(STATE_FILE),
        state.to_bytes(),
        content_type=ZSTD_TYPE,
        cache_control=STATE_CACHE_CONTROL,
        if_match=state_etag,
        if_none_match=state_etag is None,
    )


def _write_shards(subdir: SubdirRef, shards: dict[str, bytes], jobs: int) -> None:
    def write(digest: str) -> None:
        subdir.store.write(
            subdir.key(shard_path(digest)),
            shards[digest],
            content_type=ZSTD_TYPE,
            cache_control=SHARD_CACHE_CONTROL,
        )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(write, digest) for digest in shards]:
            future.result()
