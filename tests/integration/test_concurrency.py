"""Concurrency end to end over real HTTP: S3 notifications feed an SQS queue that several workers drain
through the package-event handler, while uploaders, a deleter and full reindexes run at the same time.
When the queue is drained every subdir must hold exactly the packages in the bucket, consistently."""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

import reindexer.indexer
import reindexer.updater
from devtools.sample_channel import SamplePackage, build_packages, plan_channel
from reindexer.contract import join_key
from reindexer.handlers import full_reindex, package_events
from reindexer.handlers.wiring import Handler, Wiring
from reindexer.lease import Lease
from reindexer.options import IndexOptions
from reindexer.reports import SubdirReport
from reindexer.subdir_ref import SubdirRef
from reindexer_cli.embedded_s3 import EmbeddedS3
from reindexer_cli.lambda_events import LocalLambdaContext
from reindexer_cli.sqs_worker import queue_arn, run_worker
from tests.support.checks import assert_noop_run, check_channel, sha256_hex
from tests.support.events import queue_counts
from tests.support.stores import s3_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(170),
    # The s3:TestEvent message makes one invocation with no metric to publish.
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

CHANNEL = "org/stable"
SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "osx-arm64", "win-64")
PACKAGE_COUNT = 240
UPLOADERS = 4
WORKERS = 3
VISIBILITY_TIMEOUT = 10
HANDLER_TIMEOUT = 60.0
DRAIN_TIMEOUT = 90.0
FULL_REINDEX_AT = (0.25, 0.65)  # shares of the uploads done when a full reindex starts


@dataclasses.dataclass
class Channel:
    packages: list[SamplePackage]
    files: dict[str, bytes]  # package.key -> bytes
    variants: dict[str, bytes]  # package.key -> other bytes under the same file name


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Channel:
    packages = plan_channel(PACKAGE_COUNT, subdirs=SUBDIRS, seed=7)
    assert sum("+" in p.version for p in packages) >= 20
    paths = build_packages(packages, tmp_path_factory.mktemp("concurrency-channel"))
    rebuilt = [dataclasses.replace(p, payload=f"rebuilt {p.filename}\n") for p in packages[5::40]]
    variant_paths = build_packages(rebuilt, tmp_path_factory.mktemp("concurrency-variants"))
    return Channel(
        packages=packages,
        files={p.key: Path(path).read_bytes() for p, path in zip(packages, paths, strict=True)},
        variants={p.key: Path(path).read_bytes() for p, path in zip(rebuilt, variant_paths, strict=True)},
    )


@pytest.fixture
def handler_wiring(monkeypatch: pytest.MonkeyPatch, embedded_s3: EmbeddedS3) -> Wiring:
    """The handlers' wiring as a deployed function builds it from its environment: a bucket on the HTTP
    server, named in CHANNEL_BUCKET, reached through AWS_ENDPOINT_URL_S3 as the AWS SDKs do. One wiring
    for every worker and full reindex, as in one warm container."""
    bucket = f"conc-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("CHANNEL_BUCKET", bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", embedded_s3.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("READ_JOBS", "4")
    monkeypatch.delenv("CHANNEL_PREFIXES", raising=False)
    return Wiring.from_environment(os.environ)


class Transactions:
    """Wraps run_transaction where the indexer and the updater call it, to count commit conflicts, and
    the lease's acquisition attempts, to count how often a writer found the subdir busy."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reports: list[tuple[str, SubdirReport]] = []
        self.busy = 0
        self._lock = threading.Lock()
        for module, path in ((reindexer.updater, "event"), (reindexer.indexer, "full")):
            monkeypatch.setattr(module, "run_transaction", self._wrap(module.run_transaction, path))
        try_acquire = Lease._try_acquire

        def counted(lease: Lease) -> bool:
            acquired = try_acquire(lease)
            if not acquired:
                with self._lock:
                    self.busy += 1
            return acquired

        monkeypatch.setattr(Lease, "_try_acquire", counted)

    def _wrap(self, original: Callable[..., SubdirReport], path: str) -> Callable[..., SubdirReport]:
        def run_transaction(
            subdir: SubdirRef, options: IndexOptions, body: Callable[[Lease], SubdirReport]
        ) -> SubdirReport:
            report = original(subdir, options, body)
            with self._lock:
                self.reports.append((path, report))
            return report

        return run_transaction

    def summary(self) -> dict[str, Any]:
        with self._lock:
            reports = list(self.reports)
        return {
            "transactions": len(reports),
            "conflicted": sum(1 for _, report in reports if report.attempts > 1),
            "extra attempts": sum(report.attempts - 1 for _, report in reports),
            "errors": sorted({report.error for _, report in reports if report.error}),
            "busy lease attempts": self.busy,
            "by path": {
                path: sum(1 for p, _ in reports if p == path) for path in sorted({p for p, _ in reports})
            },
        }


class Workers:
    """SQS workers calling the package-event handler; knows when none of them is inside the handler."""

    def __init__(self, handler: Handler, client_factory: Callable[[], Any], queue_url: str) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.active = 0
        self.invocations = 0
        self.batch_failures = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(client_factory(), queue_url), name=f"worker-{n}")
            for n in range(WORKERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not stop"

    def idle(self) -> bool:
        with self._lock:
            return self.active == 0

    def _handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self._lock:
            self.active += 1
            self.invocations += 1
        try:
            response: dict[str, Any] = self.handler(event, context)
        except BaseException as error:
            with self._lock:
                self.errors.append(error)
            raise
        finally:
            with self._lock:
                self.active -= 1
        with self._lock:
            self.batch_failures += len(response.get("batchItemFailures", []))
        return response

    def _run(self, sqs: Any, queue_url: str) -> None:
        run_worker(
            self.stop,
            sqs,
            queue_url,
            self._handler,
            wait_seconds=1,
            context_factory=lambda: LocalLambdaContext(
                function_name="package-events", timeout=HANDLER_TIMEOUT
            ),
        )


class Progress:
    """How many uploads are done; lets other threads wait for a share of them or for one key."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done: set[str] = set()
        self._changed = threading.Condition()

    def mark(self, key: str) -> None:
        with self._changed:
            self.done.add(key)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 120) -> None:
        with self._changed:
            assert self._changed.wait_for(predicate, timeout), "uploads stalled"

    def share(self, share: float) -> None:
        self.wait_for(lambda: len(self.done) >= share * self.total)

    def key(self, key: str) -> None:
        self.wait_for(lambda: key in self.done)


def test_uploads_deletes_workers_and_full_reindexes_converge(
    monkeypatch: pytest.MonkeyPatch, embedded_s3: EmbeddedS3, handler_wiring: Wiring, channel: Channel
) -> None:
    started = time.monotonic()
    bucket = handler_wiring.settings.bucket
    endpoint = embedded_s3.endpoint_url

    def s3_client() -> Any:
        return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def sqs_client() -> Any:
        return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")

    s3, sqs = s3_client(), sqs_client()
    s3.create_bucket(Bucket=bucket)  # unversioned: moto sends no removal event for a versioned bucket
    queue_url: str = sqs.create_queue(
        QueueName=f"events-{uuid.uuid4().hex[:12]}", Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT)}
    )["QueueUrl"]
    arn = queue_arn(sqs, queue_url)
    # Event types of the two configurations overlap, so each must filter a distinct suffix.
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": f"packages{suffix}",
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": suffix}]}},
                }
                for suffix in (".conda", ".tar.bz2")
            ]
        },
    )
    transactions = Transactions(monkeypatch)

    rng = random.Random(42)
    order = list(channel.packages)
    rng.shuffle(order)
    reuploaded = [p for p in order if p.key in channel.variants]
    candidates = [p for p in order if p.key not in channel.variants]
    # Some deleted as soon as their upload is done (their creation event may find them gone), some long
    # after they were indexed.
    by_subdir = {subdir: [p for p in candidates if p.subdir == subdir] for subdir in SUBDIRS}
    deleted_early = [by_subdir[subdir][3] for subdir in SUBDIRS]
    deleted_late = [by_subdir[subdir][number] for subdir in SUBDIRS for number in (10, 30)]
    deleted = deleted_early + deleted_late
    assert len({p.key for p in deleted}) == len(deleted) >= 10
    assert {p.subdir for p in deleted} == set(SUBDIRS)
    progress = Progress(len(order))
    errors: list[BaseException] = []
    full_results: list[dict[str, Any]] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as error:
                errors.append(error)
                raise

        return run

    def upload(share: list[SamplePackage]) -> None:
        uploader = s3_client()
        for package in share:
            uploader.put_object(
                Bucket=bucket, Key=join_key(CHANNEL, package.key), Body=channel.files[package.key]
            )
            progress.mark(package.key)

    def delete() -> None:
        deleter = s3_client()
        for package in deleted_early:
            progress.key(package.key)
            deleter.delete_object(Bucket=bucket, Key=join_key(CHANNEL, package.key))
        progress.share(0.8)
        for package in deleted_late:
            progress.key(package.key)
            deleter.delete_object(Bucket=bucket, Key=join_key(CHANNEL, package.key))

    def reupload() -> None:
        uploader = s3_client()
        progress.share(0.5)
        for package in reuploaded:
            progress.key(package.key)
            uploader.put_object(
                Bucket=bucket, Key=join_key(CHANNEL, package.key), Body=channel.variants[package.key]
            )

    def reindex() -> None:
        handler = full_reindex.build_handler(handler_wiring)
        for share in FULL_REINDEX_AT:
            progress.share(share)
            context = LocalLambdaContext(function_name="full-reindex", timeout=120)
            full_results.append(handler({"channel": CHANNEL}, context))

    workers = Workers(package_events.build_handler(handler_wiring), sqs_client, queue_url)
    workers.start()
    producers = [
        threading.Thread(target=guarded(functools.partial(upload, order[n::UPLOADERS])), name=f"uploader-{n}")
        for n in range(UPLOADERS)
    ]
    producers += [
        threading.Thread(target=guarded(delete), name="deleter"),
        threading.Thread(target=guarded(reupload), name="reuploader"),
        threading.Thread(target=guarded(reindex), name="full-reindex"),
    ]
    try:
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join(timeout=120)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        uploads_done = time.monotonic()
        assert errors == []

        # Drained: nothing queued or in flight, and no worker inside the handler, twice in a row.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        quiet = 0
        while quiet < 2:
            assert time.monotonic() < deadline, f"queue not drained: {queue_counts(sqs, queue_url)}"
            quiet = quiet + 1 if workers.idle() and queue_counts(sqs, queue_url) == (0, 0) else 0
            time.sleep(0.5)
    finally:
        workers.join()
    drained = time.monotonic()

    summary = transactions.summary()
    print(
        f"\nuploads {uploads_done - started:.1f} s, drained {drained - uploads_done:.1f} s later; "
        f"{workers.invocations} handler invocations, {workers.batch_failures} batch item failures; "
        f"commit conflicts (attempts > 1): {summary['conflicted']} transactions, "
        f"{summary['extra attempts']} extra attempts; transactions {summary['by path']}; "
        f"lease found busy {summary['busy lease attempts']} times; "
        f"errors {summary['errors']}"
    )
    assert workers.errors == []
    assert len(full_results) == len(FULL_REINDEX_AT)
    for result in full_results:
        assert result["ok"], result

    expected = {p.key: sha256_hex(channel.files[p.key]) for p in channel.packages if p not in deleted}
    expected |= {p.key: sha256_hex(channel.variants[p.key]) for p in reuploaded}
    store = s3_store(bucket, endpoint)
    check_channel(store, CHANNEL, expected)
    assert_noop_run(store, CHANNEL)
