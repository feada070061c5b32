"""The fan-out full reindex's steps (reindexer.reindex_runs) on a MemoryStore: plan → read batches → commit
publishes what one full run publishes; a retried batch reads only what it left; the commit keeps what the
event path committed meanwhile and reads what was uploaded since the plan; result objects are untrusted."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reindexer.contract import RUN_EXPIRY_DAYS, RUNS_FOLDER, STATE_FILE, join_key
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.reindex_runs import (
    RunInputError,
    RunItem,
    check_run_name,
    commit_run,
    plan_run,
    read_batch,
    result_key,
    run_name,
)
from reindexer.state import SubdirState
from reindexer.storage.memory import MemoryStore
from reindexer.store import TransientStoreError
from reindexer.updater import update_subdir
from tests.support.archives import index_json, package_bytes
from tests.support.clock import FakeClock

CHANNEL = "team/ch"
RUN = "20261202T120000Z-test"


def put(store: MemoryStore, subdir: str, name: str, data: bytes | None = None) -> None:
    stem = name.removesuffix(".conda").removesuffix(".tar.bz2")
    package, version, build = stem.rsplit("-", 2)
    data = (
        data if data is not None else package_bytes(name, index_json(package, version, build, subdir=subdir))
    )
    store.write(join_key(CHANNEL, subdir, name), data, content_type="application/octet-stream")


CLOCK = FakeClock()


def channel(count: int = 12) -> MemoryStore:
    store = MemoryStore(clock=CLOCK)
    for i in range(count):
        put(store, "linux-64" if i % 2 else "noarch", f"p{i}-1.0-h0_0.conda")
    put(store, "linux-64", "broken-1.0-h0_0.conda", b"not a zip")
    return store


def options(store: MemoryStore) -> IndexOptions:
    del store
    return IndexOptions(clock=CLOCK)


def package_reads(store: MemoryStore) -> list[str]:
    """Every GetObject of a package file from now on."""
    seen: list[str] = []
    store.on("GetObject", "*.conda", lambda operation, key: seen.append(key))
    return seen


def manifest(store: MemoryStore, key: str) -> list[RunItem]:
    return [RunItem.from_json(value) for value in json.loads(store.read(key)[0])]


def published(store: MemoryStore) -> dict[str, bytes]:
    return {
        key: store.read(key)[0]
        for key in sorted(store.objects)
        if key.endswith(("repodata.json", "run_exports.json", "channeldata.json"))
    }


def records(store: MemoryStore, subdir: str) -> dict[str, str]:
    state = SubdirState.from_bytes(store.read(join_key(CHANNEL, subdir, STATE_FILE))[0])
    return {name: package.record for name, package in state.packages.items()}


def run_steps(store: MemoryStore, batch: int = 5) -> None:
    plan = plan_run(store, CHANNEL, RUN, options(store))
    assert plan.manifest_key is not None
    items = manifest(store, plan.manifest_key)
    for start in range(0, len(items), batch):
        assert read_batch(store, CHANNEL, RUN, items[start : start + batch], options(store)).complete
    report = commit_run(store, CHANNEL, RUN, options(store))
    assert report.ok


def test_the_steps_publish_what_one_full_run_publishes_and_leave_no_run_object() -> None:
    by_steps, by_one_run = channel(), channel()

    run_steps(by_steps)
    index_channel(by_one_run, CHANNEL, options(by_one_run))

    assert published(by_steps) == published(by_one_run)
    assert records(by_steps, "linux-64") == records(by_one_run, "linux-64")
    assert not [key for key in by_steps.objects if f"/{RUNS_FOLDER}/" in f"/{key}"]


def test_the_commit_takes_the_batches_verdicts_and_reads_no_package_again() -> None:
    store = channel()
    plan = plan_run(store, CHANNEL, RUN, options(store))
    assert plan.manifest_key is not None
    read_batch(store, CHANNEL, RUN, manifest(store, plan.manifest_key), options(store))
    reads = package_reads(store)

    commit_run(store, CHANNEL, RUN, options(store))

    assert reads == []


def test_a_commit_past_its_read_deadline_still_commits_every_subdir_the_batches_read() -> None:
    store = channel()
    plan = plan_run(store, CHANNEL, RUN, options(store))
    assert plan.manifest_key is not None
    items = manifest(store, plan.manifest_key)
    read_batch(
        store, CHANNEL, RUN, [item for item in items if item.name != "p1-1.0-h0_0.conda"], options(store)
    )
    reads = package_reads(store)

    late = replace(options(store), deadline=CLOCK.monotonic() - 1)
    report = commit_run(store, CHANNEL, RUN, late)

    # Nothing read past the deadline: the one package the batches left is deferred, not the subdirs skipped.
    assert reads == [] and report.skipped == []
    assert report.subdirs["linux-64"].deferred == ["p1-1.0-h0_0.conda"]
    assert report.subdirs["noarch"].complete and len(records(store, "noarch")) == 6
    assert len(records(store, "linux-64")) == 5


def test_a_run_with_nothing_to_read_writes_nothing() -> None:
    store = channel()
    index_channel(store, CHANNEL, options(store))
    writes = store.requests["PutObject"]

    plan = plan_run(store, CHANNEL, RUN, options(store))
    report = commit_run(store, CHANNEL, RUN, options(store))

    assert (plan.items, plan.manifest_key) == (0, None)
    assert report.complete and not any(subdir.written for subdir in report.subdirs.values())
    assert store.requests["PutObject"] == writes


def test_a_retried_batch_reads_only_the_packages_its_first_attempt_left() -> None:
    store = channel(6)
    plan = plan_run(store, CHANNEL, RUN, options(store))
    assert plan.manifest_key is not None
    items = manifest(store, plan.manifest_key)
    throttled = join_key(CHANNEL, items[0].subdir, items[0].name)
    store.fail("GetObject", throttled, TransientStoreError("SlowDown"))

    first = read_batch(store, CHANNEL, RUN, items, options(store))
    reads = package_reads(store)
    second = read_batch(store, CHANNEL, RUN, items, options(store))

    assert [failure.file for failure in first.failed] == [f"{items[0].subdir}/{items[0].name}"]
    assert second.complete and second.resumed == len(items) - 1
    assert reads == [throttled]


def test_the_commit_keeps_event_updates_and_reads_uploads_made_after_the_plan() -> None:
    store = channel(4)
    plan = plan_run(store, CHANNEL, RUN, options(store))
    assert plan.manifest_key is not None
    read_batch(store, CHANNEL, RUN, manifest(store, plan.manifest_key), options(store))
    put(store, "linux-64", "late-1.0-h0_0.conda")  # after the plan, indexed by the event path
    update_subdir(store, CHANNEL, "linux-64", ["late-1.0-h0_0.conda"], options(store))
    put(store, "linux-64", "later-1.0-h0_0.conda")  # after the plan, its notification not handled yet
    store.delete(join_key(CHANNEL, "noarch", "p0-1.0-h0_0.conda"))  # deleted while the batches read

    report = commit_run(store, CHANNEL, RUN, options(store))

    assert report.complete
    assert {"late-1.0-h0_0.conda", "later-1.0-h0_0.conda", "p1-1.0-h0_0.conda"} <= set(
        records(store, "linux-64")
    )
    assert "p0-1.0-h0_0.conda" not in records(store, "noarch")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda doc: doc["packages"][0].update(record='{"name": "evil"}'),
        lambda doc: doc["packages"][0].update(etag=5),
        lambda doc: doc.update(format=99),
        lambda doc: doc["rejected"].append(
            {"subdir": "linux-64", "file": "x-1-0.conda", "etag": "e", "size": 1}
        ),
    ],
)
def test_a_tampered_result_object_is_not_published_and_its_packages_are_read_again(
    tamper: Callable[[dict[str, Any]], None],
) -> None:
    store, reference = channel(4), channel(4)
    plan = plan_run(store, CHANNEL, RUN, options(store))
    assert plan.manifest_key is not None
    items = manifest(store, plan.manifest_key)
    read_batch(store, CHANNEL, RUN, items, options(store))
    key = result_key(CHANNEL, RUN, items)
    document = json.loads(store.read(key)[0])
    tamper(document)
    store.write(key, json.dumps(document).encode(), content_type="application/json")

    commit_run(store, CHANNEL, RUN, options(store))
    index_channel(reference, CHANNEL, options(reference))

    assert records(store, "linux-64") == records(reference, "linux-64")
    assert records(store, "noarch") == records(reference, "noarch")


def test_run_names_are_key_safe_and_checked() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert run_name("nightly-1", now) == "20261202T120000Z-nightly-1"
    odd = run_name("../ü x", now)
    assert check_run_name(odd) == odd and "/" not in odd
    for bad in ("../x", "", None, "20261202T120000Z-a/b"):
        with pytest.raises(RunInputError):
            check_run_name(bad)


def test_expired_runs_are_deleted_by_the_next_plan_and_fresh_ones_kept() -> None:
    store = channel(2)
    now = datetime.fromtimestamp(CLOCK.time(), UTC)
    old = run_name("crashed", now - timedelta(days=RUN_EXPIRY_DAYS, seconds=1))
    fresh = run_name("running", now - timedelta(days=RUN_EXPIRY_DAYS - 1))
    for run in (old, fresh):
        store.write(
            join_key(CHANNEL, RUNS_FOLDER, run, "manifest.json"), b"[]", content_type="application/json"
        )

    plan = plan_run(store, CHANNEL, RUN, options(store))

    assert plan.expired_runs_deleted == 1
    assert join_key(CHANNEL, RUNS_FOLDER, old, "manifest.json") not in store.objects
    assert join_key(CHANNEL, RUNS_FOLDER, fresh, "manifest.json") in store.objects
