"""The indexer on every store, quirky ones included: it converges, takes over a dead lease and keeps every
package through a race, or refuses a store it cannot use safely with one line naming the reason.

The quirks are modelled by the in-memory store's switches: Ceph RGW's (a quoted If-Match always refused,
If-Match on DELETE ignored) and s3rver's (every condition ignored). Races and crashes are made
deterministic with its hooks.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from devtools.sample_channel import SamplePackage, package_files
from reindexer.contract import REPODATA_FROM_PACKAGES, REPODATA_JSON, RUN_EXPORTS_JSON, STATE_FILE, join_key
from reindexer.indexer import index_channel
from reindexer.lease import LEASE_FILE, LeaseTerms
from reindexer.operations import yank
from reindexer.options import IndexOptions
from reindexer.reports import ChannelReport
from reindexer.storage.memory import CEPH_LIKE, IGNORES_CONDITIONS, MemoryStore
from reindexer.store import Store, StoredObject, UnsafeStoreError
from reindexer.store_conditions import QUOTED, UNQUOTED, StoreConditions
from reindexer.subdir_ref import SubdirRef
from reindexer_cli.status_commands import channel_status, wait_for_upload
from tests.contract.conftest import S3_KINDS, make_store
from tests.support.checks import assert_noop_run, check_channel, sha256_hex
from tests.support.stores import index_ignoring_lease

CHANNEL = "ch"
TYPE = "application/octet-stream"
SHORT_LEASE = LeaseTerms(lifetime=1.0, wait=30.0)


class Crash(BaseException):
    """The process died: no `except Exception` stops it."""


def upload(store: Store, folder: Path, *, skip: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    """Put the channel's packages into the store; {`<subdir>/<file>`: sha256} of what was put."""
    expected = {}
    for path in package_files(folder):
        name = f"{path.parent.name}/{path.name}"
        if name in skip:
            continue
        data = path.read_bytes()
        store.write(join_key(CHANNEL, name), data, content_type=TYPE)
        expected[name] = sha256_hex(data)
    return expected


def index(store: Store, **options: object) -> None:
    report = index_channel(store, CHANNEL, IndexOptions(**options))  # type: ignore[arg-type]
    assert report.ok, report.to_dict()


def dead_lease(store: Store, subdir: str, *, expires_in: float) -> StoredObject:
    """A lease another indexer left on the subdir (it crashed), expiring `expires_in` seconds from now."""
    key = join_key(CHANNEL, subdir, LEASE_FILE)
    body = json.dumps({"owner": "crashed-indexer", "expires_at": time.time() + expires_in}).encode()
    store.write(key, body, content_type="application/json")
    found = store.head(key)
    assert found is not None
    return found


@pytest.fixture(params=["memory", "memory-ceph-like", "local", *S3_KINDS])
def usable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Every store the indexer can work on with more than one writer about."""
    if request.param == "memory-ceph-like":
        return MemoryStore(quirks=CEPH_LIKE)
    return make_store(request.param, request, tmp_path)


def test_indexing_converges_and_a_second_run_writes_nothing(
    usable_store: Store, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    folder, _ = small_channel
    expected = upload(usable_store, folder)
    index(usable_store)
    check_channel(usable_store, CHANNEL, expected)
    assert_noop_run(usable_store, CHANNEL)


def test_a_lease_left_by_a_crashed_indexer_is_taken_over_once_expired(
    usable_store: Store, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    folder, _ = small_channel
    expected = upload(usable_store, folder)
    dead_lease(usable_store, "noarch", expires_in=-1.0)
    started = time.monotonic()
    index(usable_store)
    assert time.monotonic() - started < 20, "the expired lease was waited for instead of taken over"
    check_channel(usable_store, CHANNEL, expected)


def test_a_live_lease_of_another_indexer_is_reported_with_how_long_it_still_runs(
    usable_store: Store, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    folder, _ = small_channel
    upload(usable_store, folder)
    dead_lease(usable_store, "noarch", expires_in=600.0)
    report = index_channel(usable_store, CHANNEL, IndexOptions(lease=LeaseTerms(lifetime=5.0, wait=0.3)))
    error = report.subdirs["noarch"].error or ""
    assert "another indexer held the subdir" in error
    assert "its lease runs 6" in error or "its lease runs 5" in error, error  # ~600 s more
    assert "\n" not in error


# --- the Ceph and s3rver models ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quirks", "expected"),
    [
        (None, StoreConditions(create_only=True, if_match=QUOTED, conditional_delete=True)),
        (CEPH_LIKE, StoreConditions(create_only=True, if_match=UNQUOTED, conditional_delete=False)),
        (IGNORES_CONDITIONS, StoreConditions(create_only=False, if_match=None, conditional_delete=False)),
    ],
    ids=["s3", "ceph-like", "ignores-conditions"],
)
def test_the_probe_finds_what_the_store_honours_and_leaves_no_scratch_object(
    quirks: object, expected: StoreConditions
) -> None:
    store = MemoryStore(quirks=quirks)  # type: ignore[arg-type]
    found = store.conditional.conditions()
    assert (found.create_only, found.if_match, found.conditional_delete) == (
        expected.create_only,
        expected.if_match,
        expected.conditional_delete,
    )
    assert list(store.objects) == [".reindexer/store-conditions.json"]


def test_on_a_ceph_like_store_a_released_lease_is_marked_expired_and_the_next_run_does_not_wait(
    small_channel: tuple[Path, list[SamplePackage]],
) -> None:
    store = MemoryStore(quirks=CEPH_LIKE)
    folder, _ = small_channel
    expected = upload(store, folder)
    index(store, lease=LeaseTerms(lifetime=600.0, wait=1.0))
    lease_key = join_key(CHANNEL, "noarch", LEASE_FILE)
    assert json.loads(store.read(lease_key)[0])["expires_at"] == 0.0, "released by an expired mark"
    (extra,) = [p for p in package_files(folder) if p.parent.name == "noarch"][:1]
    store.delete(join_key(CHANNEL, "noarch", extra.name))
    del expected[f"noarch/{extra.name}"]
    index(store, lease=LeaseTerms(lifetime=600.0, wait=1.0))  # would fail after 1 s if it waited
    check_channel(store, CHANNEL, expected)


def test_a_store_that_ignores_conditions_is_refused_before_anything_is_written(
    small_channel: tuple[Path, list[SamplePackage]],
) -> None:
    store = MemoryStore(quirks=IGNORES_CONDITIONS)
    folder, _ = small_channel
    upload(store, folder)
    before = dict(store.objects)
    with pytest.raises(UnsafeStoreError) as refused:
        index_channel(store, CHANNEL, IndexOptions())
    message = str(refused.value)
    assert "ignores If-None-Match" in message and "If-Match" in message
    assert "--single-writer" in message
    assert "\n" not in message
    written = set(store.objects) - set(before)
    assert written == {".reindexer/store-conditions.json"}, "only the probe's answer may be written"


def test_single_writer_mode_indexes_a_store_that_ignores_conditions(
    small_channel: tuple[Path, list[SamplePackage]],
) -> None:
    store = MemoryStore(quirks=IGNORES_CONDITIONS, single_writer=True)
    folder, _ = small_channel
    expected = upload(store, folder)
    index(store)
    check_channel(store, CHANNEL, expected)
    assert_noop_run(store, CHANNEL)


# --- deterministic races and crashes on the in-memory store -----------------------------------------------


@pytest.mark.parametrize("quirks", [None, CEPH_LIKE], ids=["s3", "ceph-like"])
def test_a_writer_that_commits_while_another_is_about_to_loses_nothing(
    quirks: object, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    store = MemoryStore(quirks=quirks)  # type: ignore[arg-type]
    folder, _ = small_channel
    linux = [p for p in package_files(folder) if p.parent.name == "linux-64"]
    late = linux[0]
    expected = upload(store, folder, skip={f"linux-64/{late.name}"})
    index(store)

    # Our run is held just before its state commit; meanwhile a package lands and a writer that ignores
    # the lease indexes it and commits first. Only the state's compare-and-swap stands between us and a
    # lost update: ours must lose it, run again, and keep the late package.
    state_key = join_key(CHANNEL, "linux-64", STATE_FILE)
    paused = store.pause("PutObject", state_key)
    ours_removed = linux[1]
    store.delete(join_key(CHANNEL, "linux-64", ours_removed.name))
    del expected[f"linux-64/{ours_removed.name}"]
    reports: list[ChannelReport] = []
    ours = threading.Thread(
        target=lambda: reports.append(index_channel(store, CHANNEL, IndexOptions(subdirs=["linux-64"])))
    )
    ours.start()
    paused.wait_reached()
    data = late.read_bytes()
    store.write(join_key(CHANNEL, "linux-64", late.name), data, content_type=TYPE)
    expected[f"linux-64/{late.name}"] = sha256_hex(data)
    assert index_ignoring_lease(store, CHANNEL, "linux-64").error is None
    paused.release()
    ours.join(timeout=60)
    assert not ours.is_alive()
    (report,) = reports
    assert report.ok, report.to_dict()
    assert report.subdirs["linux-64"].attempts == 2, "our commit must have lost the race once"

    check_channel(store, CHANNEL, expected)
    assert_noop_run(store, CHANNEL)


@pytest.mark.parametrize("quirks", [None, CEPH_LIKE], ids=["s3", "ceph-like"])
@pytest.mark.parametrize("crash_before", ["repodata.json", "repodata.json.zst", STATE_FILE])
def test_a_crash_between_writes_is_repaired_by_the_next_run(
    quirks: object, crash_before: str, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    store = MemoryStore(quirks=quirks)  # type: ignore[arg-type]
    folder, _ = small_channel
    expected = upload(store, folder)
    index(store, lease=SHORT_LEASE)
    gone = next(p for p in package_files(folder) if p.parent.name == "win-64")
    store.delete(join_key(CHANNEL, "win-64", gone.name))
    del expected[f"win-64/{gone.name}"]

    def die(operation: str, key: str) -> None:
        # From now on the process is dead: every request, the lease's release included, fails.
        store.fail("*", "*", Crash(f"dead after {operation} {key}"), times=None)
        raise Crash(f"killed before {operation} {key}")

    store.on("PutObject", join_key(CHANNEL, "win-64", crash_before), die, times=1)
    with pytest.raises(Crash):
        index_channel(store, CHANNEL, IndexOptions(subdirs=["win-64"], lease=SHORT_LEASE, jobs=1))
    store.hooks.clear()
    time.sleep(SHORT_LEASE.lifetime + 0.1)  # the dead run's lease expires

    index(store, lease=SHORT_LEASE)
    check_channel(store, CHANNEL, expected)
    assert_noop_run(store, CHANNEL)


def test_patches_run_exports_status_and_wait_work_alike_on_every_store(
    usable_store: Store, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    """Issue 11 and 12's features through the Store interface only: a yank publishes the patched view with
    the unpatched one beside it, run_exports.json follows, `reindexer status` reads it all back, and `wait`
    sees an indexed upload with conditional reads."""
    folder, packages = small_channel
    upload(usable_store, folder)
    index(usable_store)
    target = next(p for p in packages if p.subdir == "linux-64")
    subdir = SubdirRef(usable_store, CHANNEL, "linux-64")

    edit = yank(subdir, [target.filename], "broken", IndexOptions())

    assert edit.report is not None and edit.report.written, edit
    published = json.loads(usable_store.read(subdir.key(REPODATA_JSON))[0])
    unpatched = json.loads(usable_store.read(subdir.key(REPODATA_FROM_PACKAGES))[0])
    assert published["removed"] == [target.filename]
    assert target.filename in {**unpatched["packages"], **unpatched["packages.conda"]}
    exports = json.loads(usable_store.read(subdir.key(RUN_EXPORTS_JSON))[0])
    assert target.filename in {**exports["packages"], **exports["packages.conda"]}, "run_exports is unpatched"
    status = {s.name: s for s in channel_status(usable_store, CHANNEL).subdirs}
    assert status["linux-64"].yanked == [(target.filename, "broken")]
    assert wait_for_upload(subdir, target.filename, timeout=5).outcome == "indexed"
