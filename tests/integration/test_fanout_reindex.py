"""The fan-out full reindex end to end on moto: the state machine as the stack synthesizes it, run by the
local driver (reindexer_cli.state_machine) over a channel of 5,000+ packages, its Distributed Map at
concurrency > 1, the steps' real handlers reading through S3Store over loopback HTTP from moto's server in a
child process.

Three executions, with what goes wrong on AWS injected: throttled invocations and package reads (retried),
package events committed while a run reads (kept), a batch that fails for good (the map fails; the commit
reads what it left and the execution fails with the reason), a crash before a commit (the execution fails,
the published index stays as it was) and a last run that reads what is left. The end: exactly the bucket's
packages indexed, the broken ones rejected, no run folder left but the crashed run's (until it expires).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.fast_upload import Uploader
from devtools.state_machine_template import SynthesizedStateMachine, state_machines
from reindexer.channel_events import CollectingSink
from reindexer.config import HandlerSettings
from reindexer.contract import (
    RUN_COMMIT_HANDLER,
    RUN_PLAN_HANDLER,
    RUN_READ_HANDLER,
    RUNS_FOLDER,
    join_key,
)
from reindexer.handlers import package_events, reindex_steps
from reindexer.handlers.wiring import Handler, Wiring
from reindexer.publication import load_state
from reindexer.store import Store, TransientStoreError
from reindexer.subdir_ref import SubdirRef
from reindexer_cli.embedded_s3 import EmbeddedS3
from reindexer_cli.lambda_events import LocalLambdaContext, s3_message, sqs_event, sqs_record
from reindexer_cli.state_machine import Execution, LocalStateMachine, StatesError
from tests.infra.test_conda_channel import template
from tests.support.archives import index_json, package_bytes
from tests.support.stores import StoreWrapper, s3_store

pytestmark = pytest.mark.slow

CHANNEL = "dev"  # the "public" template's first channel
BIG = ("linux-64", "osx-arm64", "win-64")
# Small subdirs: package events on a subdir (or noarch) with no index yet make the event path index it whole.
SMALL = {"noarch": 30, "linux-aarch64": 10}
SUBDIRS = (*BIG, *SMALL)
PACKAGES = 5000
BROKEN = ("linux-64/broken-1.0-h0_0.conda", "noarch/truncated-1.0-h0_0.tar.bz2")
BATCH = 100  # the synthesized ItemBatcher's MaxItemsPerBatch (the default setting)
BUILDERS: dict[str, Callable[[Wiring], Handler]] = {
    RUN_PLAN_HANDLER: reindex_steps.build_plan_handler,
    RUN_READ_HANDLER: reindex_steps.build_read_handler,
    RUN_COMMIT_HANDLER: reindex_steps.build_commit_handler,
}


def package_paths() -> list[str]:
    paths = [
        f"{subdir}/small{number:02d}-1.0-h0_0.conda"
        for subdir, count in SMALL.items()
        for number in range(count)
    ]
    for number in range(PACKAGES - len(paths)):
        suffix = ".conda" if number % 3 else ".tar.bz2"
        paths.append(f"{BIG[number % 3]}/pkg{number // 30:03d}-1.{number % 30}-h{number:05x}_0{suffix}")
    return paths


def archive(path: str) -> bytes:
    subdir, name = path.split("/")
    package, version, build = name.removesuffix(".conda").removesuffix(".tar.bz2").rsplit("-", 2)
    return package_bytes(name, index_json(package, version, build, subdir=subdir))


class FlakyReads(StoreWrapper):
    """Fails the first read of each chosen package, as a throttling store answers 503 SlowDown."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.throttled: set[str] = set()
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def _around(self, operation: str, key: str, call: Callable[[], Any]) -> Any:
        with self._lock:
            refuse = operation == "download" and key in self.throttled
            if refuse:
                self.throttled.discard(key)
                self.refused.append(key)
        if refuse:
            raise TransientStoreError(f"{key}: SlowDown (503), injected")
        return call()


@dataclass
class Lambda:
    """The three step functions as the driver invokes them: their real handlers over one wiring, with
    failures injected before a handler runs (Lambda's own errors, a crash)."""

    machine: SynthesizedStateMachine
    wiring: Wiring
    # function handler -> how many invocations to refuse, and with which error
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    # a read whose batch holds this package crashes every time (a batch that fails for good)
    poisoned: str | None = None
    # called once, before the n-th read invocation runs: package events while the map reads
    during_reads: tuple[int, Callable[[], None]] | None = None
    # the first read waits for a second one to start: the map's concurrency, shown without timing
    gate: bool = False
    invocations: list[str] = field(default_factory=list)
    _handlers: dict[str, Handler] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _second_read: threading.Event = field(default_factory=threading.Event)
    _reads_run: int = 0

    def invoke(self, function: str, payload: Any) -> Any:
        handler = self.machine.handlers[function]
        with self._lock:
            self.invocations.append(handler)
            count, error = self.refuse.get(handler, (0, ""))
            if count:
                self.refuse[handler] = (count - 1, error)
                raise StatesError(error, json.dumps({"errorMessage": "injected", "errorType": error}))
            if handler not in self._handlers:
                self._handlers[handler] = BUILDERS[handler](self.wiring)
            built = self._handlers[handler]
            hook = None
            if handler == RUN_READ_HANDLER:
                self._reads_run += 1
                first = self._reads_run == 1
                if self.during_reads is not None and self._reads_run == self.during_reads[0]:
                    hook, self.during_reads = self.during_reads[1], None
        if handler == RUN_READ_HANDLER:
            if self.gate and first:
                assert self._second_read.wait(60), "no second batch ran while the first did"
            self._second_read.set()
            files = {f"{item['subdir']}/{item['file']}" for item in payload["Items"]}
            if self.poisoned in files:
                raise StatesError("Runtime.ExitError", '{"errorMessage": "the function crashed (injected)"}')
        if hook is not None:
            hook()
        return built(payload, LocalLambdaContext(timeout=900))


@dataclass
class Channel:
    client: Any
    bucket: str
    store: FlakyReads
    wiring: Wiring
    machine: SynthesizedStateMachine
    files: set[str]

    def put(self, *paths: str) -> None:
        for path in paths:
            body = b"not a zip file" if path == BROKEN[0] else archive(path)
            if path == BROKEN[1]:
                body = body[:200]
            self.client.put_object(Bucket=self.bucket, Key=join_key(CHANNEL, path), Body=body)
            self.files.add(path)

    def delete(self, *paths: str) -> None:
        for path in paths:
            self.client.delete_object(Bucket=self.bucket, Key=join_key(CHANNEL, path))
            self.files.discard(path)

    def notify(self, *paths: str, removed: bool = False) -> None:
        records = [sqs_record(s3_message(self.bucket, join_key(CHANNEL, p), removed=removed)) for p in paths]
        event = sqs_event(*records)
        answer = package_events.build_handler(self.wiring)(event, LocalLambdaContext(timeout=60))
        assert answer == {"batchItemFailures": []}

    def run(self, name: str, functions: Lambda, delays: list[float]) -> Execution:
        def read_object(bucket: str, key: str) -> bytes:
            body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body

        driver = LocalStateMachine(
            self.machine.definition, functions.invoke, read_object, sleep=delays.append, max_threads=6
        )
        return driver.run({"channel": CHANNEL, "bucket": self.bucket}, name=name)

    def indexed(self) -> dict[str, set[str]]:
        names: dict[str, set[str]] = {}
        for subdir in SUBDIRS:
            key = join_key(CHANNEL, subdir, "repodata.json")
            document = json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            names[subdir] = {
                f"{subdir}/{name}" for name in (*document["packages"], *document["packages.conda"])
            }
        return names

    def expected(self) -> dict[str, set[str]]:
        return {
            subdir: {path for path in self.files if path.startswith(f"{subdir}/") and path not in BROKEN}
            for subdir in SUBDIRS
        }

    def run_folders(self) -> list[str]:
        return self.store.list_folder(join_key(CHANNEL, RUNS_FOLDER)).folders


@pytest.fixture
def channel(embedded_s3: EmbeddedS3, http_s3_client: Any, http_bucket: str) -> Channel:
    (machine,) = state_machines(template("public")).values()
    store = FlakyReads(s3_store(http_bucket, embedded_s3.endpoint_url))
    wiring = Wiring(
        HandlerSettings(bucket=http_bucket), open_store=lambda bucket: store, events=CollectingSink()
    )
    ready = Channel(http_s3_client, http_bucket, store, wiring, machine, set())
    uploader = Uploader(embedded_s3.endpoint_url, "testing", "testing", "us-east-1")
    paths = package_paths()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda path: uploader.put(http_bucket, join_key(CHANNEL, path), archive(path)), paths))
    ready.files.update(paths)
    ready.put(*BROKEN)
    return ready


def test_a_fanout_reindex_survives_throttling_concurrent_events_a_failed_batch_and_a_crash(channel: Channel):
    delays: list[float] = []
    total = PACKAGES + len(BROKEN)

    # 1. Throttled invocations and package reads are retried; package events commit while the map reads; one
    #    batch crashes for good: the map fails, the commit reads what it left, the execution fails, saying so.
    early, late = "linux-aarch64/late-1.0-h0_0.conda", "linux-aarch64/later-2.0-h0_0.tar.bz2"
    gone = "linux-aarch64/small03-1.0-h0_0.conda"

    def meanwhile() -> None:
        channel.put(early, late)
        channel.notify(early, late)
        channel.delete(gone)
        channel.notify(gone, removed=True)

    first = Lambda(channel.machine, channel.wiring, gate=True)
    first.refuse = {RUN_READ_HANDLER: (3, "Lambda.TooManyRequestsException")}
    # The last batch of the manifest (subdirs and names in listing order): every other batch runs first.
    first.poisoned = max(path for path in package_paths() if path.startswith("win-64/"))
    first.during_reads = (10, meanwhile)
    linux = sorted(path for path in package_paths() if path.startswith("linux-64/"))
    channel.store.throttled = {join_key(CHANNEL, path) for path in linux[100:1500:500]}
    incomplete = channel.run("first", first, delays)

    assert (incomplete.status, incomplete.error) == ("FAILED", "ReindexIncomplete"), incomplete
    assert incomplete.cause is not None
    assert "the read map failed (States.ExceedToleratedFailureThreshold" in incomplete.cause
    (map_run,) = incomplete.stats.map_runs
    assert map_run.items == total and map_run.batches == -(-total // BATCH)
    assert map_run.failed == 1 and map_run.errors == {"Runtime.ExitError": 1}
    assert 1 < map_run.max_concurrency <= 6
    assert len(channel.store.refused) == 3
    # Throttled invocations and the batches whose reads were throttled were retried, each after a backoff.
    assert incomplete.stats.retries["ReadBatch"] == 3 + 3 == len(delays)
    assert all(0 <= delay <= 300 for delay in delays)
    # The commit read what the failed batch left, and kept what the events committed meanwhile.
    assert channel.indexed() == channel.expected()
    assert early in channel.files and gone not in channel.files

    # 2. Uploads and deletions nobody was told of; a run that crashes before its commit publishes nothing.
    added = [f"osx-arm64/new{number}-1.0-h0_0.conda" for number in range(12)]
    removed = [path for path in package_paths() if path.startswith("linux-64/")][:2]
    channel.put(*added)
    channel.delete(*removed)
    before = channel.indexed()
    second = Lambda(channel.machine, channel.wiring)
    second.refuse = {RUN_COMMIT_HANDLER: (1, "Runtime.ExitError")}
    crashed = channel.run("second", second, delays)

    assert (crashed.status, crashed.error) == ("FAILED", "Runtime.ExitError"), crashed
    assert second.invocations == [RUN_PLAN_HANDLER, RUN_READ_HANDLER, RUN_COMMIT_HANDLER]
    assert channel.indexed() == before
    channel.notify(added[0])  # a late notice: the event path indexes one of them meanwhile

    # 3. The next run reads what is left and commits.
    third = Lambda(channel.machine, channel.wiring)
    done = channel.run("third", third, delays)

    assert (done.status, done.output["complete"]) == ("SUCCEEDED", True), done
    (map_run,) = done.stats.map_runs
    assert map_run.items == len(added) - 1
    assert channel.indexed() == channel.expected()
    assert sum(len(names) for names in channel.indexed().values()) == PACKAGES + 2 - 1 + len(added) - 2
    for path in BROKEN:
        subdir, name = path.split("/")
        state, _ = load_state(SubdirRef(channel.store, CHANNEL, subdir))
        assert state is not None and name in state.rejected, path
    # Only the crashed run's folder is left, until RUN_EXPIRY_DAYS have passed.
    (left,) = channel.run_folders()
    assert left.endswith("-second")
