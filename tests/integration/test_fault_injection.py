"""Fault injection: random transient errors, a crash between any two writes, and failures inside the
package-event handler that SQS redelivers. After the faults, one ordinary run (or the redelivery) must
leave every subdir consistent with the bucket and its outputs consistent with each other."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import boto3
import pytest
from moto import mock_aws

from devtools.sample_channel import SamplePackage, build_packages, plan_channel
from reindexer.contract import CHANNEL_LEASE_FILE, join_key
from reindexer.handlers import package_events
from reindexer.handlers.wiring import Wiring
from reindexer.indexer import index_channel
from reindexer.lease import LEASE_FILE, LeaseTerms
from reindexer.options import IndexOptions
from reindexer.reports import SubdirReport
from reindexer.storage.local import LocalStore
from reindexer.store import PreconditionFailedError, Store, TransientStoreError
from reindexer.updater import update_subdir
from reindexer_cli.lambda_events import LocalLambdaContext
from reindexer_cli.sqs_worker import poll_once, queue_arn, to_lambda_event
from tests.support.checks import (
    assert_noop_run,
    channel_subdirs,
    check_channel,
    check_channel_files,
    sha256_hex,
)
from tests.support.events import queue_counts
from tests.support.stores import Crash, CrashingStore, FlakyStore, StoreWrapper, s3_store

CHANNEL = "org/dev"
BUCKET = "fault-bucket"

# An invocation that fails before adding a metric makes Powertools warn that it has none to publish.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


# --- a small channel in a bucket or a folder -------------------------------------------------------------


class Bucket(Protocol):
    """Where the packages live: the test uploads and deletes directly, the indexer goes through `store`."""

    def store(self) -> Store: ...

    def put(self, key: str, data: bytes) -> None: ...

    def remove(self, key: str) -> None: ...


class FolderBucket:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def store(self) -> Store:
        return LocalStore(self.root)

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-upload-{path.name}")
        temporary.write_bytes(data)
        temporary.replace(path)

    def remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class MotoBucket:
    def __init__(self, client: Any, name: str, endpoint_url: str) -> None:
        self.client = client
        self.name = name
        self.endpoint_url = endpoint_url

    def store(self) -> Store:
        return s3_store(self.name, self.endpoint_url)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)


@pytest.fixture(params=["local", "moto"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str) -> Iterator[Bucket]:
    if request.param == "local":
        yield FolderBucket(tmp_path / "channel")
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield MotoBucket(client, BUCKET, moto_endpoint)


@dataclasses.dataclass
class Pool:
    """Built packages, and for some of them a second build with other content under the same file name."""

    packages: list[SamplePackage]
    files: dict[str, bytes]  # package.key -> bytes
    variants: dict[str, bytes]  # package.key -> other bytes, same file name


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    packages = plan_channel(36, subdirs=("noarch", "linux-64", "osx-arm64"), seed=11)
    folder = tmp_path_factory.mktemp("fault-pool")
    paths = build_packages(packages, folder)
    again = [dataclasses.replace(p, payload=f"rebuilt {p.filename}\n") for p in packages[::4]]
    other = tmp_path_factory.mktemp("fault-pool-variants")
    variant_paths = build_packages(again, other)
    return Pool(
        packages=packages,
        files={p.key: path.read_bytes() for p, path in zip(packages, paths, strict=True)},
        variants={p.key: path.read_bytes() for p, path in zip(again, variant_paths, strict=True)},
    )


# --- (a) random transient errors ------------------------------------------------------------------------

FAULT_RATE = 0.2
LIGHT_FAULT_RATE = 0.05
FAULT_ROUNDS = 14
REDELIVERIES = 3


def test_random_transient_errors_during_runs_converge_once_they_stop(bucket: Bucket, pool: Pool) -> None:
    rng = random.Random(20240601)
    flaky = FlakyStore(bucket.store(), rate=FAULT_RATE, seed=99)
    # A short lease lifetime, so a lease left behind by a failed release (or a lost response) expires
    # quickly: the next run waits for it and takes it over, as a later invocation would.
    options = IndexOptions(jobs=2, lease=LeaseTerms(lifetime=1.0, wait=30))
    expected: dict[str, str] = {}  # <subdir>/<file> -> sha256 of what the bucket holds
    runs = {"event": 0, "full": 0, "succeeded": 0, "failed": 0, "escaped": 0}

    def count(report: SubdirReport) -> bool:
        ok = report.error is None and not report.failed
        runs["succeeded" if ok else "failed"] += 1
        return ok

    for round_number in range(FAULT_ROUNDS):
        # About one run in five fails at 20 % per request, so every other round is a lighter storm, to
        # interleave committed updates with failed ones.
        flaky.rate = FAULT_RATE if round_number % 2 == 0 else LIGHT_FAULT_RATE
        touched: dict[str, set[str]] = {}
        absent = [p for p in pool.packages if p.key not in expected]
        for package in rng.sample(absent, k=min(len(absent), rng.randint(2, 5))):
            bucket.put(join_key(CHANNEL, package.key), pool.files[package.key])
            expected[package.key] = sha256_hex(pool.files[package.key])
            touched.setdefault(package.subdir, set()).add(package.filename)
        present = [p for p in pool.packages if p.key in expected]
        for package in rng.sample(present, k=min(len(present), rng.randint(0, 2))):
            bucket.remove(join_key(CHANNEL, package.key))
            del expected[package.key]
            touched.setdefault(package.subdir, set()).add(package.filename)
        reuploads = [p for p in pool.packages if p.key in expected and p.key in pool.variants]
        for package in rng.sample(reuploads, k=min(len(reuploads), rng.randint(0, 1))):
            data = pool.variants[package.key] if rng.random() < 0.5 else pool.files[package.key]
            bucket.put(join_key(CHANNEL, package.key), data)
            expected[package.key] = sha256_hex(data)
            touched.setdefault(package.subdir, set()).add(package.filename)

        if rng.random() < 0.3:
            runs["full"] += 1
            try:
                report = index_channel(flaky, CHANNEL, options)
            except TransientStoreError:
                # index_channel lets a transient error of one subdir's survey escape (see
                # test_a_transient_error_in_one_subdir_is_reported_on_it_while_the_others_are_indexed).
                runs["escaped"] += 1
                continue
            for sub in report.subdirs.values():
                count(sub)
            continue
        for subdir, names in sorted(touched.items()):
            # An event whose update failed is delivered again, a few times, while the faults go on.
            for _ in range(1 + REDELIVERIES):
                runs["event"] += 1
                try:
                    if count(update_subdir(flaky, CHANNEL, subdir, names, options)):
                        break
                except TransientStoreError:
                    # The noarch check after bootstrapping a subdir runs outside the transaction (see
                    # test_a_transient_error_after_bootstrapping_a_subdir_becomes_a_batch_item_failure).
                    runs["escaped"] += 1

    flaky.enabled = False
    store = bucket.store()
    # Leases that failed runs left behind (a release that failed, a create whose response was lost). The
    # final run takes over those of subdirs it must update; in a subdir with nothing to do it takes no
    # lease, so a dead one stays untouched until the next writer: harmless, and allowed below.
    dead_leases = [
        lease
        for subdir in channel_subdirs(store, CHANNEL)
        if (lease := store.head(join_key(CHANNEL, subdir, LEASE_FILE))) is not None
    ]
    final = index_channel(flaky, CHANNEL, options)
    print(f"\nfaults injected: {dict(flaky.injected)}; runs: {runs}; dead leases {len(dead_leases)}")

    assert sum(flaky.injected.values()) > 20, "the scenario injected too few faults to mean anything"
    assert runs["failed"] > 0 and runs["succeeded"] > 0, runs
    assert final.ok and final.complete, final.to_dict()
    check_channel(store, CHANNEL, expected, dead_leases=dead_leases)
    assert_noop_run(store, CHANNEL)


class FailingListing(StoreWrapper):
    """One subdir's folder cannot be listed right now (throttling, a dropped connection)."""

    def __init__(self, inner: Store, folder: str) -> None:
        super().__init__(inner)
        self.folder = folder

    def _around(self, operation: str, key: str, call: Callable[[], Any]) -> Any:
        if operation == "list" and key == self.folder:
            raise TransientStoreError(f"{self.describe(key)}: SlowDown")
        return call()


def test_a_transient_error_in_one_subdir_is_reported_on_it_while_the_others_are_indexed(
    tmp_path: Path, pool: Pool
) -> None:
    # index_channel's contract: "a subdir that fails on its own is reported with its error while the
    # others are still indexed". The survey of a subdir (its listing and state read) runs before
    # run_transaction, outside the per-subdir error handling.
    channel = FolderBucket(tmp_path / "channel")
    for package in pool.packages[:12]:
        channel.put(join_key(CHANNEL, package.key), pool.files[package.key])
    store = FailingListing(channel.store(), join_key(CHANNEL, "linux-64"))

    report = index_channel(store, CHANNEL, IndexOptions())

    assert report.subdirs["linux-64"].error
    assert report.subdirs["noarch"].error is None and report.subdirs["noarch"].written
    assert report.subdirs["osx-arm64"].error is None and report.subdirs["osx-arm64"].written


# --- (b) a crash between any two writes -----------------------------------------------------------------

CRASH_SUBDIRS = ("noarch", "linux-64")
CRASH_PLAN = plan_channel(16, subdirs=CRASH_SUBDIRS, seed=3)
CRASH_INITIAL = CRASH_PLAN[:12]
CRASH_ADDED = CRASH_PLAN[12:]  # a new package name in each subdir
# A file of an existing name in each subdir, and every file of one linux-64 name (its shard goes away).
CRASH_DELETED = [CRASH_PLAN[number] for number in (0, 1, 7, 9, 11)]
# Writes and deletes of the change run, in each subdir: lease, 2 shards, 4 outputs (shard index,
# run_exports.json, repodata.json.zst, repodata.json), state, lease release (9). Then the channel files: their
# lease, channeldata.json, index.html, the channel state, lease release (5), once after a full run's
# subdirs, after each subdir on the event path.
SUBDIR_MUTATIONS = 9
CHANNEL_FILES_MUTATIONS = 5
CRASH_MUTATIONS = {
    "full": 2 * SUBDIR_MUTATIONS + CHANNEL_FILES_MUTATIONS,
    "event": 2 * (SUBDIR_MUTATIONS + CHANNEL_FILES_MUTATIONS),
}
# The crashed run leaves its lease behind. The runs use a lease lifetime of half a second, so the repair
# run meets a live or recently expired lease, waits for it to expire, and takes it over with If-Match,
# exactly as a later invocation does after a killed one (no lease file is deleted by hand).
CRASH_LEASE = LeaseTerms(lifetime=0.5, wait=30)


@pytest.fixture(scope="module")
def crash_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("crash-pool")
    paths = build_packages(CRASH_PLAN, folder)
    return {package.key: path for package, path in zip(CRASH_PLAN, paths, strict=True)}


def crash_channel(root: Path, files: dict[str, Path]) -> dict[str, str]:
    """Index the initial channel, then add and delete packages; return the expected sha256 by key."""
    for package in CRASH_INITIAL:
        _copy(files[package.key], root / CHANNEL / package.key)
    assert index_channel(LocalStore(root), CHANNEL, IndexOptions()).ok
    for package in CRASH_ADDED:
        _copy(files[package.key], root / CHANNEL / package.key)
    for package in CRASH_DELETED:
        (root / CHANNEL / package.key).unlink()
    return {
        package.key: sha256_hex(files[package.key].read_bytes())
        for package in CRASH_INITIAL + CRASH_ADDED
        if package not in CRASH_DELETED
    }


def full_run(store: Store) -> None:
    report = index_channel(store, CHANNEL, IndexOptions(jobs=1, lease=CRASH_LEASE))
    assert report.ok and report.complete, report.to_dict()


def event_run(store: Store) -> None:
    """What the package-event handler does with one batch naming every changed file."""
    for subdir in CRASH_SUBDIRS:
        names = [p.filename for p in CRASH_ADDED + CRASH_DELETED if p.subdir == subdir]
        report = update_subdir(store, CHANNEL, subdir, names, IndexOptions(jobs=1, lease=CRASH_LEASE))
        assert report.error is None and report.complete, report.to_dict()


RUNS: dict[str, Callable[[Store], None]] = {"full": full_run, "event": event_run}


@pytest.mark.parametrize("path", sorted(RUNS))
def test_the_change_run_makes_the_expected_number_of_writes(
    path: str, tmp_path: Path, crash_files: dict[str, Path]
) -> None:
    # Guards the parametrisation below: every mutation index of the run gets its own crash.
    crash_channel(tmp_path, crash_files)
    store = CrashingStore(LocalStore(tmp_path), crash_at=None)

    RUNS[path](store)

    assert len(store.mutations) == CRASH_MUTATIONS[path], store.mutations
    assert sum(mutation.endswith(LEASE_FILE) for mutation in store.mutations) == 2 * len(CRASH_SUBDIRS)
    channel_lease = sum(mutation.endswith(CHANNEL_LEASE_FILE) for mutation in store.mutations)
    assert channel_lease == 2 * (len(CRASH_SUBDIRS) if path == "event" else 1)


@pytest.mark.parametrize(
    ("path", "crash_at"), [(path, at) for path in sorted(RUNS) for at in range(CRASH_MUTATIONS[path] + 1)]
)
def test_a_crash_before_any_write_is_repaired_by_the_next_run(
    path: str, crash_at: int, tmp_path: Path, crash_files: dict[str, Path]
) -> None:
    expected = crash_channel(tmp_path, crash_files)
    crashing = CrashingStore(LocalStore(tmp_path), crash_at)

    # crash_at == CRASH_MUTATIONS: the run completes, and the "crash" comes after its last write.
    with pytest.raises(Crash) if crash_at < CRASH_MUTATIONS[path] else nullcontext():
        RUNS[path](crashing)

    assert len(crashing.mutations) == crash_at
    dead_leases = [
        lease
        for subdir in CRASH_SUBDIRS
        if (lease := LocalStore(tmp_path).head(join_key(CHANNEL, subdir, LEASE_FILE))) is not None
    ]
    # The repair: the next full run, or for events the redelivery of the unacknowledged batch.
    started = time.monotonic()
    RUNS[path](LocalStore(tmp_path))
    repair_seconds = time.monotonic() - started
    store = LocalStore(tmp_path)
    # A crash just before a lease release leaves a committed state and the lease. The full path's repair
    # run then has nothing to do in that subdir and takes no lease, so the dead writer's lease stays
    # until the next writer takes it over on expiry: harmless, and allowed here.
    check_channel(store, CHANNEL, expected, dead_leases=dead_leases if path == "full" else ())
    # The channel files list exactly what the subdirs publish: the event path's redelivery makes them again
    # when a crash cut their regeneration short (the subdir had committed), as the full run does.
    check_channel_files(store, CHANNEL)
    assert_noop_run(store, CHANNEL)
    assert repair_seconds < 10


# --- (c) transient errors in the package-event handler, retried through SQS -----------------------------

SQS_VISIBILITY = 1
HANDLER_TIMEOUT = 5.0


def _notify(s3: Any, bucket: str, arn: str) -> None:
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": suffix}]}},
                }
                for suffix in (".conda", ".tar.bz2")
            ]
        },
    )


@pytest.fixture
def handler_wiring(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> Wiring:
    """The handlers' wiring from the deployed function's environment on moto, without lease slack: the
    lease outlives an invocation by `lease_slack` (60 s by default), so a lease a failed release left
    behind would block the subdir for a minute. Without slack it lives for the 5 s invocation."""
    monkeypatch.setenv("CHANNEL_BUCKET", BUCKET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.delenv("CHANNEL_PREFIXES", raising=False)
    wiring = Wiring.from_environment(os.environ)
    wiring.lease_slack = 0.0
    return wiring


def test_transient_errors_in_the_event_handler_become_batch_failures_and_redelivery_converges(
    handler_wiring: Wiring, pool: Pool
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)  # unversioned: moto sends no removal event on a versioned bucket
        url = sqs.create_queue(QueueName="events", Attributes={"VisibilityTimeout": str(SQS_VISIBILITY)})[
            "QueueUrl"
        ]
        _notify(s3, BUCKET, queue_arn(sqs, url))
        flaky = FlakyStore(handler_wiring.open_store(BUCKET), rate=FAULT_RATE, seed=5)
        handler_wiring.open_store = lambda bucket: flaky
        package_event_handler = package_events.build_handler(handler_wiring)

        responses: list[dict[str, Any]] = []

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            response: dict[str, Any] = package_event_handler(event, context)
            responses.append(response)
            return response

        raised: list[str] = []

        def poll() -> int:
            try:
                return poll_once(
                    sqs,
                    url,
                    handler,
                    wait_seconds=1,
                    context_factory=lambda: LocalLambdaContext(timeout=HANDLER_TIMEOUT),
                )
            except TransientStoreError as error:
                # The handler let a transient error escape (see
                # test_a_transient_error_after_bootstrapping_a_subdir_becomes_a_batch_item_failure): Lambda
                # then fails the whole batch, which comes back after the visibility timeout.
                raised.append(str(error))
                return 1

        def failures() -> int:
            return sum(len(response["batchItemFailures"]) for response in responses)

        # Uploads and deletes arrive in waves while the handler runs with faults, then the outage ends.
        expected: dict[str, str] = {}
        chosen = pool.packages[:20]
        for wave in range(4):
            for package in chosen[wave::4]:
                s3.put_object(Bucket=BUCKET, Key=join_key(CHANNEL, package.key), Body=pool.files[package.key])
                expected[package.key] = sha256_hex(pool.files[package.key])
            if wave:
                gone = chosen[wave - 1 :: 8]
                for package in gone:
                    s3.delete_object(Bucket=BUCKET, Key=join_key(CHANNEL, package.key))
                    expected.pop(package.key, None)
            for _ in range(3):
                poll()
        flaky.enabled = False
        faulty_invocations = len(responses)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not poll() and queue_counts(sqs, url) == (0, 0):
                break
        print(
            f"\n{len(responses)} invocations ({faulty_invocations} with faults), "
            f"{failures()} batch item failures, {len(raised)} raised; faults {dict(flaky.injected)}"
        )

        assert queue_counts(sqs, url) == (0, 0), "the queue did not drain"
        assert failures() > 0, "no transient error ever reached the handler's batch response"
        store = s3_store(BUCKET, os.environ["AWS_ENDPOINT_URL_S3"])
        check_channel(store, CHANNEL, expected)
        assert_noop_run(store, CHANNEL)


# --- the lease and a lost response ----------------------------------------------------------------------


class LostLeaseCreateResponse(StoreWrapper):
    """The first lease create takes effect but its response is lost; botocore's retry of the same
    `PUT If-None-Match: *` then meets the lease it just created and gets 412 Precondition Failed."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.lost = False

    def _around(self, operation: str, key: str, call: Callable[[], Any]) -> Any:
        if operation == "write" and key.endswith(LEASE_FILE) and not self.lost:
            self.lost = True
            call()
            raise PreconditionFailedError(f"{self.describe(key)} changed while it was being updated (412)")
        return call()


def test_a_lost_response_to_the_lease_create_does_not_lock_the_subdir_until_the_lease_expires(
    tmp_path: Path, pool: Pool
) -> None:
    channel = FolderBucket(tmp_path / "channel")
    package = pool.packages[0]
    channel.put(join_key(CHANNEL, package.key), pool.files[package.key])
    store = LostLeaseCreateResponse(channel.store())
    # A Lambda's lease lives for its timeout plus a minute and it waits half its timeout for a busy one.
    options = IndexOptions(lease=LeaseTerms(lifetime=60, wait=2))

    report = update_subdir(store, CHANNEL, package.subdir, [package.filename], options)

    assert store.lost
    assert report.error is None, f"our own lease locked us out: {report.error}"


class FailingHead(StoreWrapper):
    """HEAD requests on one key fail with a transient error (throttling, a dropped connection)."""

    def __init__(self, inner: Store, key: str) -> None:
        super().__init__(inner)
        self.key = key
        self.failed = 0

    def _around(self, operation: str, key: str, call: Callable[[], Any]) -> Any:
        if operation == "head" and key == self.key:
            self.failed += 1
            raise TransientStoreError(f"{self.describe(key)}: SlowDown")
        return call()


def test_a_transient_error_after_bootstrapping_a_subdir_becomes_a_batch_item_failure(
    handler_wiring: Wiring, pool: Pool
) -> None:
    # The first event of a new channel's linux-64 bootstraps that subdir; update_subdir then checks for
    # noarch/repodata.json (and may index noarch) outside run_transaction, so a transient error there
    # escapes update_subdir, and package_events._update (which catches only FatalStoreError) lets it out
    # of the handler: the whole SQS batch fails instead of the documented batch item failures.
    package = next(p for p in pool.packages if p.subdir == "linux-64")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        key = join_key(CHANNEL, package.key)
        s3.put_object(Bucket=BUCKET, Key=key, Body=pool.files[package.key])
        store = FailingHead(handler_wiring.open_store(BUCKET), join_key(CHANNEL, "noarch", "repodata.json"))
        handler_wiring.open_store = lambda bucket: store
        body = json.dumps(
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "eventTime": "2024-06-01T00:00:00.000Z",
                        "s3": {"bucket": {"name": BUCKET}, "object": {"key": quote(key, safe="")}},
                    }
                ]
            }
        )
        message = {"MessageId": "message-1", "ReceiptHandle": "handle-1", "Body": body, "MD5OfBody": ""}
        event = to_lambda_event([message], "arn:aws:sqs:us-east-1:123456789012:events", "us-east-1")

        response = package_events.build_handler(handler_wiring)(event, LocalLambdaContext(timeout=30))

        assert store.failed == 1
        assert set(response) == {"batchItemFailures"}
