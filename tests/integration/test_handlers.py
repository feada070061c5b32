"""The Lambda handlers called directly on in-process moto: package events in every shape, batch item failures,
what events and requests may not make them do, per-subdir isolation, the package-event handler's deadline,
and the full reindex with its request validation, dry runs and time budget."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage, package_files
from reindexer.clock import SYSTEM_CLOCK
from reindexer.config import ConfigurationError, HandlerSettings
from reindexer.contract import join_key
from reindexer.handlers import full_reindex, package_events, runtime
from reindexer.handlers.package_events import (
    END_MARGIN_SECONDS,
    MIN_UPDATE_SECONDS,
    READ_SHARE,
    WAIT_SHARE,
    TransientIndexingError,
)
from reindexer.handlers.wiring import Handler, LambdaEntry, Wiring
from reindexer.indexer import index_channel
from reindexer.notifications import MalformedEventError, parse_event
from reindexer.options import IndexOptions
from reindexer.reports import SubdirReport
from reindexer.storage.memory import MemoryStore
from reindexer.storage.s3 import S3Endpoint, S3Store
from reindexer.store import Store, StoredObject, TransientStoreError
from reindexer_cli.lambda_events import (
    LocalLambdaContext,
    direct_s3_event,
    eventbridge_event,
    s3_message,
    sqs_event,
    sqs_record,
)
from tests.integration.conftest import MOTO_BUCKET
from tests.support.checks import all_records, sha256_hex
from tests.support.clock import FakeClock
from tests.support.events import load_event
from tests.support.stores import get_repodata, s3_store

SmallChannel = tuple[Path, list[SamplePackage]]
SUBDIRS = ("linux-64", "noarch", "osx-arm64", "win-64")
ENV_VARIABLES = (
    "CHANNEL_BUCKET",
    "REPODATA_MAX_AGE",
    "READ_JOBS",
    "CHANNEL_PREFIXES",
    "MAX_PACKAGE_MB",
    "CHANNEL_ACCESS",
)
# The longest quote of event text a reason may hold (runtime.QUOTE_LIMIT), plus its fixed words.
LONGEST_REASON = 160

# Left out of the first index, "uploaded" by the tests. Three have a '+' in their version; the event
# fixtures in tests/events name the first three.
NEW_LINUX_PLUS = "linux-64/sample-linux64-0001-3.9.6+local-h0000015_0.tar.bz2"
NEW_NOARCH_PLUS = "noarch/sample-noarch-0000-1.6.6+local-h0000000_0.conda"
NEW_OSX_PLUS = "osx-arm64/sample-osxarm64-0001-1.8.4+local-h000000e_2.conda"
NEW_LINUX = "linux-64/sample-linux64-0001-2.3.4-h0000011_2.tar.bz2"
NEW_WIN = "win-64/sample-win64-0001-3.7.9-h0000017_2.tar.bz2"
HELD_BACK = (NEW_LINUX_PLUS, NEW_NOARCH_PLUS, NEW_OSX_PLUS, NEW_LINUX, NEW_WIN)
# Indexed from the start; the EventBridge "Object Deleted" fixture names it.
KNOWN_NOARCH = "noarch/sample-noarch-0000-2.2.1-h0000004_1.conda"


@pytest.fixture
def lambda_env(moto_client: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The deployed function's environment on in-process moto; the store reaches moto's HTTP face through
    AWS_ENDPOINT_URL_S3 as the AWS SDKs do. Each invocation builds its wiring from this environment."""
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHANNEL_BUCKET", MOTO_BUCKET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    yield moto_client


def configure(monkeypatch: pytest.MonkeyPatch, **variables: str | None) -> None:
    """Set (or, for None, unset) the function's environment variables, as the stack deploys them."""
    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


class Bucket:
    """The channel bucket seen through a plain client, with the sample packages at hand."""

    def __init__(self, client: Any, files: dict[str, Path]) -> None:
        self.client = client
        self.files = files  # channel-relative key -> local package file

    def upload(self, key: str, channel: str = "") -> None:
        self.client.put_object(
            Bucket=MOTO_BUCKET, Key=join_key(channel, key), Body=self.files[key].read_bytes()
        )

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=MOTO_BUCKET, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=MOTO_BUCKET, Key=key)

    def records(self, subdir: str, channel: str = "") -> dict[str, dict[str, Any]]:
        return all_records(get_repodata(self.client, MOTO_BUCKET, channel, subdir))

    def exists(self, key: str) -> bool:
        return key in self.snapshot()

    def snapshot(self) -> dict[str, str]:
        """Every object with its ETag, to prove that nothing was written."""
        objects: dict[str, str] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=MOTO_BUCKET):
            objects.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
        return objects

    def package_names(self, subdir: str) -> set[str]:
        prefix = f"{subdir}/"
        return {
            key.removeprefix(prefix)
            for key in self.snapshot()
            if key.startswith(prefix) and key.count("/") == 1 and key.endswith((".conda", ".tar.bz2"))
        }

    def assert_indexed(self, key: str, channel: str = "") -> None:
        subdir, filename = key.split("/")
        record = self.records(subdir, channel)[filename]
        assert record["sha256"] == sha256_hex(self.files[key].read_bytes())
        assert record["subdir"] == subdir


def files_of(folder: Path) -> dict[str, Path]:
    return {f"{path.parent.name}/{path.name}": path for path in package_files(folder)}


@pytest.fixture(scope="session")
def indexed_objects() -> dict[str, tuple[bytes, dict[str, str]]]:
    """Every object of the indexed bucket (filled by the first test that needs it), to restore it quickly."""
    return {}


@pytest.fixture
def bucket(
    lambda_env: Any,
    moto_endpoint: str,
    small_channel: SmallChannel,
    indexed_objects: dict[str, tuple[bytes, dict[str, str]]],
) -> Bucket:
    """The sample channel at the bucket root, indexed without the HELD_BACK packages.

    Indexed once; later tests get the same objects back (same bytes, so the same MD5 ETags the state
    recorded), which is what indexing again would give.
    """
    folder, _ = small_channel
    files = files_of(folder)
    assert set(HELD_BACK) <= set(files)
    if not indexed_objects:
        for key, path in files.items():
            if key not in HELD_BACK:
                lambda_env.put_object(Bucket=MOTO_BUCKET, Key=key, Body=path.read_bytes())
        assert index_channel(s3_store(MOTO_BUCKET, moto_endpoint), "", IndexOptions()).ok
        for page in lambda_env.get_paginator("list_objects_v2").paginate(Bucket=MOTO_BUCKET):
            for item in page["Contents"]:
                got = lambda_env.get_object(Bucket=MOTO_BUCKET, Key=item["Key"])
                headers = {"ContentType": got["ContentType"]}
                if "CacheControl" in got:
                    headers["CacheControl"] = got["CacheControl"]
                indexed_objects[item["Key"]] = (got["Body"].read(), headers)
    else:
        for key, (data, headers) in indexed_objects.items():
            lambda_env.put_object(Bucket=MOTO_BUCKET, Key=key, Body=data, **headers)
    return Bucket(lambda_env, files)


@pytest.fixture
def empty_bucket(lambda_env: Any, small_channel: SmallChannel) -> Bucket:
    folder, _ = small_channel
    return Bucket(lambda_env, files_of(folder))


def standing_context(seconds: float = 600.0) -> LocalLambdaContext:
    """A Lambda context whose time left stays at `seconds`: its clock is never advanced."""
    return LocalLambdaContext(timeout=seconds, clock=FakeClock().monotonic)


def invoke(
    build: Callable[[Wiring], Handler],
    event: Any,
    seconds: float,
    wiring: Wiring | None,
    context: LocalLambdaContext | None,
) -> dict[str, Any]:
    """One invocation of the handler `build` makes: over `wiring`, else as Lambda calls it (a LambdaEntry
    building its wiring from this test's environment, as a fresh container would)."""
    handler = LambdaEntry(build) if wiring is None else build(wiring)
    result: dict[str, Any] = handler(event, context or standing_context(seconds))
    return result


def package_event(
    event: dict[str, Any],
    seconds: float = 600.0,
    *,
    wiring: Wiring | None = None,
    context: LocalLambdaContext | None = None,
) -> dict[str, Any]:
    return invoke(package_events.build_handler, event, seconds, wiring, context)


def reindex(
    event: Any,
    seconds: float = 600.0,
    *,
    wiring: Wiring | None = None,
    context: LocalLambdaContext | None = None,
) -> dict[str, Any]:
    return invoke(full_reindex.build_handler, event, seconds, wiring, context)


def message_for(key: str, message_id: str, *, removed: bool = False) -> dict[str, Any]:
    return sqs_record(s3_message(MOTO_BUCKET, key, removed=removed), message_id=message_id)


def failures(result: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in result["batchItemFailures"]]


class LogRecorder:
    """What a handler's Powertools logger was asked to log, as (level, message, extra); for
    logger.exception also the exception being handled at the call, whose traceback the line would carry."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, logger: Any) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []
        self.exceptions: list[tuple[str, BaseException | None]] = []
        for level in ("info", "warning", "error", "exception"):
            monkeypatch.setattr(logger, level, self._recorder(level))

    def _recorder(self, level: str) -> Any:
        def record(message: object, *args: Any, extra: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.entries.append((level, str(message), extra or {}))
            if level == "exception":
                self.exceptions.append((str(message), sys.exc_info()[1]))

        return record

    def extras(self, message: str) -> list[dict[str, Any]]:
        return [extra for _, logged, extra in self.entries if logged == message]


class MetricRecorder:
    """The metrics a handler adds, summed by name (they are still added, so Powertools flushes them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.totals: dict[str, float] = {}
        original = runtime.metrics.add_metric

        def add_metric(name: str, unit: Any, value: float, **kwargs: Any) -> None:
            self.totals[name] = self.totals.get(name, 0) + value
            original(name=name, unit=unit, value=value, **kwargs)

        monkeypatch.setattr(runtime.metrics, "add_metric", add_metric)


def recording_wiring(opened: list[str]) -> Wiring:
    """The deployed wiring from the environment, noting in `opened` every bucket it opens a store for."""
    wiring = Wiring.from_environment(os.environ)
    open_store = wiring.open_store

    def open_and_note(bucket: str) -> Store:
        opened.append(bucket)
        return open_store(bucket)

    wiring.open_store = open_and_note
    return wiring


class ThrottledS3Store(S3Store):
    """An S3Store whose GETs of `throttled` keys fail as S3 throttling does, every time (botocore's own
    retries already gave up)."""

    def __init__(self, bucket: str, endpoint: S3Endpoint, throttled: set[str]) -> None:
        super().__init__(bucket, endpoint)
        self.throttled = throttled

    def download(self, key: str, sink: Any, **options: Any) -> StoredObject:
        if key in self.throttled:
            raise TransientStoreError(f"{self.describe(key)}: SlowDown Please reduce your request rate.")
        return super().download(key, sink, **options)


def throttling_wiring(*keys: str) -> Wiring:
    """The deployed wiring from the environment, with stores that are throttled on these keys."""
    endpoint = S3Endpoint.from_environment(os.environ)
    return Wiring(
        HandlerSettings.from_environment(os.environ),
        lambda bucket: ThrottledS3Store(bucket, endpoint, set(keys)),
    )


# --- package events from SQS -------------------------------------------------------------------------


def test_sqs_batch_indexes_every_new_package_and_reports_no_failures(bucket: Bucket) -> None:
    for key in HELD_BACK:
        bucket.upload(key)
    event = sqs_event(*(message_for(key, f"m{number}") for number, key in enumerate(HELD_BACK)))

    result = package_event(event)

    assert result == {"batchItemFailures": []}
    for key in HELD_BACK:
        bucket.assert_indexed(key)
    for subdir in SUBDIRS:
        assert set(bucket.records(subdir)) == bucket.package_names(subdir)


def test_sqs_fixture_key_with_encoded_plus_is_indexed(bucket: Bucket) -> None:
    """The fixture's first message names linux-64/…3.9.6%2Blocal…: the package with a '+' in its version."""
    bucket.upload(NEW_LINUX_PLUS)
    first = load_event("sqs_s3_object_created.json")["Records"][0]
    assert "%2Blocal" in first["body"]

    result = package_event(sqs_event(first))

    assert result == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX_PLUS)
    assert bucket.records("linux-64")[NEW_LINUX_PLUS.split("/")[1]]["version"] == "3.9.6+local"


def test_malformed_messages_are_acknowledged_and_logged_and_the_good_ones_processed(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = LogRecorder(monkeypatch, runtime.logger)
    bucket.upload(NEW_LINUX)
    malformed = load_event("sqs_malformed_bodies.json")["Records"][1:]
    test_event = load_event("sqs_s3_test_event.json")["Records"]
    event = sqs_event(message_for(NEW_LINUX, "good"), *malformed, *test_event)

    result = package_event(event)

    assert result == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)
    logged = {extra["message_id"] for extra in logs.extras("ignored a malformed message")}
    assert logged == {message["messageId"] for message in malformed}


def test_message_with_a_non_string_key_is_acknowledged_and_the_rest_of_the_batch_processed(
    bucket: Bucket,
) -> None:
    bucket.upload(NEW_LINUX)
    bad = load_event("sqs_key_not_a_string.json")["Records"][1]

    result = package_event(sqs_event(message_for(NEW_LINUX, "good"), bad))

    assert result == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)


def test_bad_package_is_acknowledged_and_logged_and_the_good_ones_indexed(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = LogRecorder(monkeypatch, runtime.logger)
    broken = "linux-64/broken-1.0-h0_0.tar.bz2"
    bucket.put(broken, b"this is not a bzip2 archive")
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_LINUX_PLUS)
    event = sqs_event(
        message_for(NEW_LINUX, "good-1"), message_for(broken, "bad"), message_for(NEW_LINUX_PLUS, "good-2")
    )

    result = package_event(event)

    assert result == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)
    bucket.assert_indexed(NEW_LINUX_PLUS)
    assert "broken-1.0-h0_0.tar.bz2" not in bucket.records("linux-64")
    (summary,) = [extra for extra in logs.extras("subdir updated") if extra["subdir"] == "linux-64"]
    assert [rejection["file"] for rejection in summary["rejected"]] == ["broken-1.0-h0_0.tar.bz2"]
    assert summary["rejected"][0]["reason"]


def test_transient_failure_returns_exactly_that_message_and_the_rest_succeed(bucket: Bucket) -> None:
    for key in (NEW_LINUX, NEW_LINUX_PLUS, NEW_NOARCH_PLUS):
        bucket.upload(key)
    event = sqs_event(
        message_for(NEW_LINUX, "throttled"),
        message_for(NEW_LINUX_PLUS, "same-subdir"),
        message_for(NEW_NOARCH_PLUS, "other-subdir"),
        message_for(NEW_LINUX, "throttled-duplicate"),
    )

    result = package_event(event, wiring=throttling_wiring(NEW_LINUX))

    assert failures(result) == ["throttled", "throttled-duplicate"]
    bucket.assert_indexed(NEW_LINUX_PLUS)
    bucket.assert_indexed(NEW_NOARCH_PLUS)
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")

    # SQS redelivers the message once the throttling has passed.
    assert package_event(sqs_event(message_for(NEW_LINUX, "throttled"))) == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)


class HourLongNaps(FakeClock):
    """A clock on which every backoff sleeps an hour: the wait for a busy lease is over at its first retry.
    The wall clock starts at the machine's, so a lease held until 4e9 is still held."""

    def __init__(self) -> None:
        super().__init__(now=time.time())

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(3600.0)


def test_busy_subdir_returns_its_messages_for_redelivery(bucket: Bucket) -> None:
    """Another indexer holds linux-64 longer than this invocation may wait: retry later, never drop."""
    bucket.put("linux-64/.reindexer/lease.json", json.dumps({"owner": "x", "expires_at": 4e9}).encode())
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_NOARCH_PLUS)
    event = sqs_event(message_for(NEW_LINUX, "busy"), message_for(NEW_NOARCH_PLUS, "free"))
    wiring = Wiring.from_environment(os.environ)
    wiring.clock = clock = HourLongNaps()

    # The invocation's own time stands still: the hour-long wait is the lease's, not the context's.
    result = package_event(event, wiring=wiring)

    assert clock.slept  # linux-64's lease was found busy and waited for
    assert failures(result) == ["busy"]
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")
    bucket.assert_indexed(NEW_NOARCH_PLUS)


def test_messages_whose_packages_could_not_be_read_in_time_are_redelivered(bucket: Bucket) -> None:
    bucket.upload(NEW_LINUX)

    result = package_event(sqs_event(message_for(NEW_LINUX, "late")), seconds=0)

    assert failures(result) == ["late"]
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")


def test_duplicate_and_out_of_order_deliveries_converge_on_the_bucket(bucket: Bucket) -> None:
    name = NEW_LINUX.split("/")[1]
    bucket.upload(NEW_LINUX)
    created = message_for(NEW_LINUX, "created")
    removed = message_for(NEW_LINUX, "removed", removed=True)

    # The object was created, deleted and created again; the notices arrive in any order, some twice.
    assert package_event(sqs_event(removed)) == {"batchItemFailures": []}
    assert name in bucket.records("linux-64")
    assert package_event(sqs_event(created, created)) == {"batchItemFailures": []}
    assert package_event(sqs_event(created)) == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)

    # Deleted for good; a late duplicate of the old create notice comes after the delete notice.
    bucket.delete(NEW_LINUX)
    assert package_event(sqs_event(removed, created)) == {"batchItemFailures": []}
    assert package_event(sqs_event(created)) == {"batchItemFailures": []}
    assert name not in bucket.records("linux-64")
    assert set(bucket.records("linux-64")) == bucket.package_names("linux-64")


def test_channel_with_a_nested_prefix_is_updated_in_place(bucket: Bucket, monkeypatch) -> None:
    configure(monkeypatch, CHANNEL_PREFIXES="org/dev")
    for key in (NEW_LINUX, NEW_LINUX_PLUS):
        bucket.upload(key, channel="org/dev")
    root_before = bucket.records("linux-64")
    event = sqs_event(
        message_for(f"org/dev/{NEW_LINUX}", "nested"),
        message_for(f"org/dev/{NEW_LINUX_PLUS}", "nested-plus"),
    )

    assert package_event(event) == {"batchItemFailures": []}

    assert set(bucket.records("linux-64", channel="org/dev")) == {
        NEW_LINUX.split("/")[1],
        NEW_LINUX_PLUS.split("/")[1],
    }
    bucket.assert_indexed(NEW_LINUX_PLUS, channel="org/dev")
    assert bucket.records("linux-64") == root_before


def test_notices_for_channels_outside_channel_prefixes_are_ignored(bucket: Bucket, monkeypatch) -> None:
    configure(monkeypatch, CHANNEL_PREFIXES="org/dev")
    bucket.upload(NEW_LINUX)
    before = bucket.snapshot()

    assert package_event(sqs_event(message_for(NEW_LINUX, "root"))) == {"batchItemFailures": []}

    assert bucket.snapshot() == before


def test_first_upload_to_a_new_channel_publishes_an_index_clients_can_read(empty_bucket: Bucket) -> None:
    """A channel filled only through events must still have noarch/repodata.json (rattler needs it)."""
    empty_bucket.upload(NEW_LINUX)

    assert package_event(sqs_event(message_for(NEW_LINUX, "first"))) == {"batchItemFailures": []}

    empty_bucket.assert_indexed(NEW_LINUX)
    assert empty_bucket.exists("noarch/repodata.json")


def test_repodata_max_age_setting_reaches_the_published_files(bucket: Bucket, monkeypatch) -> None:
    configure(monkeypatch, REPODATA_MAX_AGE="17")
    bucket.upload(NEW_LINUX)

    package_event(sqs_event(message_for(NEW_LINUX, "m")))

    head = bucket.client.head_object(Bucket=MOTO_BUCKET, Key="linux-64/repodata.json")
    assert head["CacheControl"] == "public, max-age=17"


# --- direct S3 events and EventBridge events ---------------------------------------------------------


def test_direct_s3_event_fixture_is_indexed(bucket: Bucket) -> None:
    bucket.upload(NEW_NOARCH_PLUS)

    result = package_event(load_event("s3_direct_event.json"))

    assert result == {"subdirs": 1}
    bucket.assert_indexed(NEW_NOARCH_PLUS)


def test_direct_s3_event_over_several_subdirs(bucket: Bucket) -> None:
    for key in (NEW_LINUX, NEW_WIN, NEW_OSX_PLUS):
        bucket.upload(key)

    result = package_event(direct_s3_event(MOTO_BUCKET, NEW_LINUX, NEW_WIN, NEW_OSX_PLUS))

    assert result == {"subdirs": 3}
    for key in (NEW_LINUX, NEW_WIN, NEW_OSX_PLUS):
        bucket.assert_indexed(key)


def test_eventbridge_object_created_fixture_is_indexed(bucket: Bucket) -> None:
    bucket.upload(NEW_OSX_PLUS)

    package_event(load_event("eventbridge_object_created.json"))

    bucket.assert_indexed(NEW_OSX_PLUS)
    assert set(bucket.records("osx-arm64")) == bucket.package_names("osx-arm64")


def test_eventbridge_object_created_with_an_unencoded_plus_is_indexed(bucket: Bucket) -> None:
    bucket.upload(NEW_OSX_PLUS)

    package_event(eventbridge_event(MOTO_BUCKET, NEW_OSX_PLUS, encode=False))

    bucket.assert_indexed(NEW_OSX_PLUS)


def test_eventbridge_object_deleted_fixture_removes_the_record(bucket: Bucket) -> None:
    name = KNOWN_NOARCH.split("/")[1]
    assert name in bucket.records("noarch")
    bucket.delete(KNOWN_NOARCH)

    package_event(load_event("eventbridge_object_deleted.json"))

    assert name not in bucket.records("noarch")
    assert set(bucket.records("noarch")) == bucket.package_names("noarch")


def test_eventbridge_events_through_sqs_add_and_remove(bucket: Bucket) -> None:
    bucket.upload(NEW_WIN)
    bucket.delete(KNOWN_NOARCH)
    event = sqs_event(
        sqs_record(eventbridge_event(MOTO_BUCKET, NEW_WIN), message_id="eb-created"),
        sqs_record(eventbridge_event(MOTO_BUCKET, KNOWN_NOARCH, deleted=True), message_id="eb-deleted"),
    )

    assert package_event(event) == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_WIN)
    assert KNOWN_NOARCH.split("/")[1] not in bucket.records("noarch")


def test_direct_invocation_with_a_transient_failure_raises(bucket: Bucket) -> None:
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_WIN)

    with pytest.raises(TransientIndexingError) as raised:
        package_event(direct_s3_event(MOTO_BUCKET, NEW_LINUX, NEW_WIN), wiring=throttling_wiring(NEW_LINUX))

    assert "linux-64" in str(raised.value)
    assert "win-64" not in str(raised.value)
    bucket.assert_indexed(NEW_WIN)


def test_direct_event_of_unknown_shape_raises(lambda_env: Any) -> None:
    with pytest.raises(MalformedEventError):
        package_event({"hello": "world"})


def test_package_event_handler_with_bad_setting_raises_one_line_configuration_error(
    empty_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, REPODATA_MAX_AGE="five")
    empty_bucket.upload(NEW_LINUX)

    with pytest.raises(ConfigurationError) as raised:
        package_event(sqs_event(message_for(NEW_LINUX, "m")))

    assert "REPODATA_MAX_AGE" in str(raised.value)
    assert "\n" not in str(raised.value)


# --- what a package event may not make the handler do ------------------------------------------------


def test_notice_for_another_bucket_is_ignored_acknowledged_and_counted(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture names NEW_LINUX in someone else's bucket; the same key sits unindexed in ours."""
    logs = LogRecorder(monkeypatch, runtime.logger)
    opened: list[str] = []
    wiring = recording_wiring(opened)
    bucket.upload(NEW_LINUX)
    before = bucket.snapshot()

    result = package_event(load_event("sqs_s3_other_bucket.json"), wiring=wiring)

    assert result == {"batchItemFailures": []}
    assert opened == []
    assert bucket.snapshot() == before
    assert logs.extras("ignored notices") == [
        {"ignored": {"bucket 'someone-elses-bucket' is not CHANNEL_BUCKET": 1}}
    ]
    # The same notice for our own bucket does open its store.
    ours = package_event(sqs_event(message_for(NEW_LINUX, "ours")), wiring=wiring)
    assert ours == {"batchItemFailures": []}
    assert opened == [MOTO_BUCKET]


def test_notices_for_another_bucket_do_not_stop_the_rest_of_the_batch(bucket: Bucket) -> None:
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_WIN)
    foreign = load_event("sqs_s3_other_bucket.json")["Records"][0]

    result = package_event(sqs_event(foreign, message_for(NEW_WIN, "ours")))

    assert result == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_WIN)
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")


def test_direct_event_for_another_bucket_with_a_hostile_name_is_ignored_with_a_short_reason(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = LogRecorder(monkeypatch, runtime.logger)
    hostile = "x" * 5000 + "\nINFO forged log line"
    bucket.upload(NEW_LINUX)
    before = bucket.snapshot()

    result = package_event(direct_s3_event(hostile, NEW_LINUX))

    assert result == {"subdirs": 0}
    assert bucket.snapshot() == before
    ((reason, count),) = logs.extras("ignored notices")[0]["ignored"].items()
    assert count == 1
    assert reason.startswith("bucket 'xxx")
    assert "\n" not in reason
    assert "forged" not in reason
    assert len(reason) <= LONGEST_REASON


def test_keys_whose_channel_breaks_the_prefix_rule_are_ignored_acknowledged_and_counted(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`..`, doubled or leading slashes, hidden segments, control characters, line breaks, 300 characters:
    each key names a real package object, so acting on any of them would write an index somewhere."""
    logs = LogRecorder(monkeypatch, runtime.logger)
    event = load_event("sqs_s3_bad_channel_keys.json")
    package = bucket.files[NEW_LINUX].read_bytes()
    keys = [notice.key for notice in parse_event(event).notices]
    for key in keys:
        bucket.put(key, package)
    before = bucket.snapshot()
    assert set(keys) <= set(before)  # moto kept every one of these keys

    result = package_event(event)

    assert result == {"batchItemFailures": []}
    assert bucket.snapshot() == before
    (ignored,) = logs.extras("ignored notices")
    assert sum(ignored["ignored"].values()) == len(event["Records"])
    for reason in ignored["ignored"]:
        assert reason.startswith("channel ")
        assert "\n" not in reason
        assert "\x07" not in reason
        assert len(reason) <= LONGEST_REASON
    assert ignored["ignored"]["channel has a segment starting with '.' ('..')"] == 2


def test_key_with_a_leading_slash_is_not_taken_for_the_bucket_root(bucket: Bucket) -> None:
    """S3 keeps `/linux-64/x.conda` and `linux-64/x.conda` apart; the first is in no valid channel."""
    name = NEW_LINUX.split("/")[1]
    bucket.upload(NEW_LINUX)
    bucket.put(f"/{NEW_LINUX}", bucket.files[NEW_LINUX].read_bytes())

    assert package_event(sqs_event(message_for(f"/{NEW_LINUX}", "m"))) == {"batchItemFailures": []}

    assert name not in bucket.records("linux-64")


# --- one subdir's failure is that subdir's alone -------------------------------------------------------


def crash_updates_of(monkeypatch: pytest.MonkeyPatch, subdir: str) -> None:
    """A bug in the core that only `subdir`'s update runs into."""
    original = package_events.update_subdir

    def update_subdir(store: Any, channel: str, name: str, filenames: Any, options: Any) -> Any:
        if name == subdir:
            raise KeyError("a bug deep in the core\nwith a second line")
        return original(store, channel, name, filenames, options)

    monkeypatch.setattr(package_events, "update_subdir", update_subdir)


def test_a_crash_in_one_subdir_fails_only_its_messages_and_the_other_subdirs_are_updated(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = LogRecorder(monkeypatch, runtime.logger)
    metrics = MetricRecorder(monkeypatch)
    for key in (NEW_LINUX, NEW_LINUX_PLUS, NEW_NOARCH_PLUS, NEW_WIN):
        bucket.upload(key)
    crash_updates_of(monkeypatch, "linux-64")
    event = sqs_event(
        message_for(NEW_NOARCH_PLUS, "before"),
        message_for(NEW_LINUX, "crash-1"),
        message_for(NEW_LINUX_PLUS, "crash-2"),
        message_for(NEW_WIN, "after"),
    )

    result = package_event(event)

    assert failures(result) == ["crash-1", "crash-2"]
    bucket.assert_indexed(NEW_NOARCH_PLUS)
    bucket.assert_indexed(NEW_WIN)
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")
    # logged once, with the traceback of the crash; counted once
    assert [(message, type(error)) for message, error in logs.exceptions] == [
        ("subdir update failed", KeyError)
    ]
    (line,) = logs.extras("subdir update failed")
    assert line["subdir"] == "linux-64"
    assert line["error"] == "internal error (KeyError); the traceback is in the log"
    assert metrics.totals["SubdirUpdateFailures"] == 1


def test_a_crash_in_a_direct_invocation_raises_naming_only_the_subdir(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_WIN)
    crash_updates_of(monkeypatch, "linux-64")

    with pytest.raises(TransientIndexingError) as raised:
        package_event(direct_s3_event(MOTO_BUCKET, NEW_LINUX, NEW_WIN))

    assert str(raised.value) == "could not finish updating linux-64; the invocation will be retried"
    bucket.assert_indexed(NEW_WIN)


# --- the package-event handler's deadline ------------------------------------------------------------


class TimedUpdates:
    """update_subdir taking a known time on the wiring's clock, by which the context's time left runs down
    too; records what each update was given."""

    def __init__(self, clock: FakeClock, context: LocalLambdaContext, seconds: dict[str, float]) -> None:
        self.clock = clock
        self.context = context
        self.seconds = seconds
        # (subdir, seconds left at its start, lease wait, read deadline's distance from now)
        self.started: list[tuple[str, float, float, float]] = []

    def __call__(self, store: Any, channel: str, subdir: str, filenames: Any, options: IndexOptions) -> Any:
        assert options.deadline is not None
        assert options.clock is self.clock  # the deadline is on the clock the core reads
        until_deadline = options.deadline - self.clock.monotonic()
        self.started.append((subdir, runtime.seconds_left(self.context), options.lease.wait, until_deadline))
        self.clock.advance(self.seconds[subdir])
        return SubdirReport(subdir, added=sorted(filenames), written=True)

    @property
    def subdirs(self) -> list[str]:
        return [subdir for subdir, *_ in self.started]


# One message per subdir, in this order, named after the subdir.
TIMED_KEYS = {"linux-64": NEW_LINUX, "noarch": NEW_NOARCH_PLUS, "osx-arm64": NEW_OSX_PLUS, "win-64": NEW_WIN}


def timed_invocation(
    monkeypatch: pytest.MonkeyPatch, seconds_left: float, seconds: dict[str, float]
) -> tuple[Wiring, LocalLambdaContext, TimedUpdates]:
    """A wiring and a context on one fake clock, which only the updates move (by `seconds` per subdir)."""
    clock = FakeClock()
    context = LocalLambdaContext(timeout=seconds_left, clock=clock.monotonic)
    updates = TimedUpdates(clock, context, seconds)
    monkeypatch.setattr(package_events, "update_subdir", updates)
    # The updates never touch a store: an in-memory one stands in for the bucket.
    wiring = Wiring(HandlerSettings(bucket=MOTO_BUCKET), open_store=MemoryStore, clock=clock)
    return wiring, context, updates


def run_timed(
    monkeypatch: pytest.MonkeyPatch, seconds_left: float, seconds: dict[str, float]
) -> tuple[dict[str, Any], LocalLambdaContext, TimedUpdates]:
    wiring, context, updates = timed_invocation(monkeypatch, seconds_left, seconds)
    event = sqs_event(*(message_for(key, subdir) for subdir, key in TIMED_KEYS.items() if subdir in seconds))
    result = package_event(event, wiring=wiring, context=context)
    return result, context, updates


def test_with_4_seconds_left_and_several_2_second_subdirs_only_one_starts_and_the_rest_come_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old handler started all four 2-second updates with 4 s left and ran 8 s, past the timeout."""
    logs = LogRecorder(monkeypatch, runtime.logger)
    assert 4.0 - END_MARGIN_SECONDS >= MIN_UPDATE_SECONDS  # one update fits, after it none

    result, context, updates = run_timed(monkeypatch, 4.0, dict.fromkeys(TIMED_KEYS, 2.0))

    assert updates.subdirs == ["linux-64"]
    assert failures(result) == ["noarch", "osx-arm64", "win-64"]
    assert runtime.seconds_left(context) == 2.0  # returned with time to spare, not killed at the timeout
    (postponed,) = logs.extras("subdirs not started for lack of time")
    assert postponed["subdirs"] == ["noarch", "osx-arm64", "win-64"]


def test_without_the_minimum_time_no_subdir_update_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    seconds_left = END_MARGIN_SECONDS + MIN_UPDATE_SECONDS - 0.1

    result, context, updates = run_timed(monkeypatch, seconds_left, dict.fromkeys(TIMED_KEYS, 0.1))

    assert updates.subdirs == []
    assert sorted(failures(result)) == sorted(TIMED_KEYS)
    assert runtime.seconds_left(context) == pytest.approx(seconds_left)


def test_subdirs_start_while_the_reserve_fits_and_the_rest_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each update takes exactly the minimum reserve: three fit before the margin, the fourth does not."""
    seconds_left = END_MARGIN_SECONDS + 3 * MIN_UPDATE_SECONDS + 0.5

    result, context, updates = run_timed(
        monkeypatch, seconds_left, dict.fromkeys(TIMED_KEYS, MIN_UPDATE_SECONDS)
    )

    assert updates.subdirs == ["linux-64", "noarch", "osx-arm64"]
    assert failures(result) == ["win-64"]
    assert runtime.seconds_left(context) == pytest.approx(END_MARGIN_SECONDS + 0.5)


def test_the_longest_update_so_far_raises_the_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a slow subdir, the next one is not started on the minimum reserve alone."""
    slow = 2 * MIN_UPDATE_SECONDS
    seconds_left = END_MARGIN_SECONDS + slow + MIN_UPDATE_SECONDS + 0.5  # enough for the minimum, not `slow`

    result, context, updates = run_timed(
        monkeypatch, seconds_left, {"linux-64": slow, "noarch": 0.1, "osx-arm64": 0.1}
    )

    assert updates.subdirs == ["linux-64"]
    assert failures(result) == ["noarch", "osx-arm64"]
    assert runtime.seconds_left(context) >= END_MARGIN_SECONDS


def test_each_update_waits_and_reads_only_within_the_time_left_at_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seconds_left = 60.0

    result, _, updates = run_timed(monkeypatch, seconds_left, {"linux-64": 20.0, "noarch": 5.0})

    assert failures(result) == []
    (first, first_left, first_wait, first_read), (second, second_left, second_wait, second_read) = (
        updates.started
    )
    assert (first, second) == ("linux-64", "noarch")
    assert (first_left, second_left) == (60.0, 40.0)
    for left, wait, read in ((first_left, first_wait, first_read), (second_left, second_wait, second_read)):
        budget = left - END_MARGIN_SECONDS
        assert wait == pytest.approx(budget * WAIT_SHARE)
        # The clock stands still between the budget's start and the update's: the whole read share is left.
        assert read == pytest.approx(budget * READ_SHARE)
    assert second_read < first_read - 10  # computed from the time left then, not at the invocation's start


def test_a_direct_invocation_without_time_for_a_subdir_raises_so_lambda_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wiring, context, updates = timed_invocation(
        monkeypatch,
        END_MARGIN_SECONDS + MIN_UPDATE_SECONDS + 1,
        {"linux-64": MIN_UPDATE_SECONDS, "win-64": MIN_UPDATE_SECONDS},
    )

    with pytest.raises(TransientIndexingError) as raised:
        package_event(direct_s3_event(MOTO_BUCKET, NEW_LINUX, NEW_WIN), wiring=wiring, context=context)

    assert updates.subdirs == ["linux-64"]
    assert "win-64" in str(raised.value)
    assert "linux-64" not in str(raised.value)


def test_with_4_seconds_left_on_the_wall_clock_the_handler_returns_in_time(bucket: Bucket) -> None:
    """The real core on moto, Lambda's clock running: each message is either indexed or returned."""
    for key in TIMED_KEYS.values():
        bucket.upload(key)
    context = LocalLambdaContext(timeout=4.0, clock=time.monotonic)

    result = package_event(
        sqs_event(*(message_for(key, subdir) for subdir, key in TIMED_KEYS.items())), context=context
    )

    assert context.get_remaining_time_in_millis() > 0
    assert "linux-64" not in failures(result)  # the first always has the time
    for subdir, key in TIMED_KEYS.items():
        if subdir not in failures(result):
            bucket.assert_indexed(key)


# --- settings reach the core ---------------------------------------------------------------------------


def test_max_package_mb_and_channel_access_reach_the_index_options(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MAX_PACKAGE_MB="5", CHANNEL_ACCESS="private")
    given: list[IndexOptions] = []
    original = package_events.update_subdir

    def update_subdir(store: Any, channel: str, subdir: str, filenames: Any, options: IndexOptions) -> Any:
        given.append(options)
        return original(store, channel, subdir, filenames, options)

    monkeypatch.setattr(package_events, "update_subdir", update_subdir)
    bucket.upload(NEW_LINUX)

    assert package_event(sqs_event(message_for(NEW_LINUX, "m"))) == {"batchItemFailures": []}

    (options,) = given
    assert options.max_package_bytes == 5 * 1024 * 1024
    assert options.settings.private is True
    head = bucket.client.head_object(Bucket=MOTO_BUCKET, Key="linux-64/repodata.json")
    assert head["CacheControl"] == "private, max-age=60"


# --- full reindex --------------------------------------------------------------------------------------


def test_full_reindex_returns_a_per_subdir_summary_with_complete_true(
    empty_bucket: Bucket, small_channel: SmallChannel
) -> None:
    _, packages = small_channel
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])

    result = reindex({"channel": ""})

    assert result["ok"] is True
    assert result["complete"] is True
    assert result["bucket"] == MOTO_BUCKET
    assert result["channel"] == ""
    assert sorted(result["subdirs"]) == sorted(SUBDIRS)
    for subdir in SUBDIRS:
        summary = result["subdirs"][subdir]
        expected = sorted(p.filename for p in packages if p.subdir == subdir)
        assert summary["added"] == expected
        assert summary["complete"] is True
        assert summary["error"] is None
        assert sorted(empty_bucket.records(subdir)) == expected
    json.dumps(result)  # the console shows the result as JSON


def test_full_reindex_of_a_nested_channel_strips_slashes(empty_bucket: Bucket, small_channel) -> None:
    upload_channel(empty_bucket.client, MOTO_BUCKET, "org/dev", small_channel[0])

    result = reindex({"channel": "/org/dev/", "subdirs": ["linux-64"]})

    assert result["complete"] is True
    assert result["channel"] == "org/dev"
    assert sorted(result["subdirs"]) == ["linux-64", "noarch"]  # noarch always comes along
    assert sorted(empty_bucket.records("linux-64", channel="org/dev")) == sorted(
        key.split("/")[1] for key in empty_bucket.files if key.startswith("linux-64/")
    )
    assert not empty_bucket.exists("org/dev/win-64/repodata.json")


def test_full_reindex_after_events_has_nothing_to_do(bucket: Bucket) -> None:
    before = bucket.snapshot()

    result = reindex({"channel": ""})

    assert result["complete"] is True
    assert all(summary["written"] is False for summary in result["subdirs"].values())
    assert bucket.snapshot() == before


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"channel": 5},
        {"chanel": ""},
        {"channel": "", "subdirs": ["linux-64", "linux-65"]},
        {"channel": "", "subdirs": "linux-64"},
        {"channel": "", "force": "yes"},
        {"channel": "", "dry_run": 1},
        {"channel": "", "bucket": ""},
        {"channel": "", "bucket": "other-bucket"},
        {"channel": "", "bucket": ["channel-bucket"]},
        "my-channel",
        {"channel": "../x"},
        {"channel": "org/../dev"},
        {"channel": "org//dev"},
        {"channel": ".reindexer"},
        {"channel": "dev\nINFO forged log line"},
        {"channel": "dev\x00"},
        {"channel": "x" * 5000},
        {"channel": "", "subdirs": ["linux-64", "x" * 5000 + "\nforged"]},
        {"channel": "", "x" * 5000 + "\nforged": True},
    ],
    ids=[
        "missing-channel",
        "number-channel",
        "misspelt-field",
        "unknown-subdir",
        "subdirs-not-a-list",
        "force-not-bool",
        "dry-run-not-bool",
        "empty-bucket",
        "other-bucket",
        "bucket-not-a-string",
        "string-event",
        "dot-dot-channel",
        "dot-dot-inside-channel",
        "doubled-slash-channel",
        "hidden-channel",
        "line-break-in-channel",
        "control-character-in-channel",
        "huge-channel",
        "huge-subdir-name",
        "huge-field-name",
    ],
)
def test_bad_request_returns_ok_false_with_a_short_one_line_error(empty_bucket: Bucket, event: Any) -> None:
    empty_bucket.upload(NEW_LINUX)
    before = empty_bucket.snapshot()

    result = reindex(event)

    assert result["ok"] is False
    assert result["complete"] is False
    assert isinstance(result["error"], str)
    assert result["error"]
    assert "\n" not in result["error"]
    assert len(result["error"]) <= LONGEST_REASON, result["error"]
    assert empty_bucket.snapshot() == before


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        ("../x", "has a segment starting with '.'"),
        ("org//dev", "has an empty segment"),
        ("team a", "may only hold letters"),
        ("x" * 300, "is longer than 256 characters"),
    ],
)
def test_channel_breaking_the_prefix_rule_is_a_bad_request_saying_why(
    empty_bucket: Bucket, channel: str, reason: str
) -> None:
    result = reindex({"channel": channel})

    assert result["ok"] is False
    assert result["error"].startswith("channel '")
    assert reason in result["error"]


@pytest.mark.parametrize(
    "invoke",
    [
        lambda: reindex({"channel": "", "bucket": MOTO_BUCKET}),
        lambda: package_event(sqs_event(message_for(NEW_LINUX, "m"))),
    ],
    ids=["full-reindex", "package-events"],
)
def test_either_handler_without_channel_bucket_raises_one_line_configuration_error(
    empty_bucket: Bucket, monkeypatch: pytest.MonkeyPatch, invoke: Any
) -> None:
    """Without CHANNEL_BUCKET nothing says which bucket events and requests may name: refuse to run."""
    configure(monkeypatch, CHANNEL_BUCKET=None)
    empty_bucket.upload(NEW_LINUX)
    before = empty_bucket.snapshot()

    with pytest.raises(ConfigurationError) as raised:
        invoke()

    assert str(raised.value).startswith("CHANNEL_BUCKET is not set")
    assert "\n" not in str(raised.value)
    assert empty_bucket.snapshot() == before


def test_channel_outside_channel_prefixes_is_a_bad_request(
    empty_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, CHANNEL_PREFIXES="org/dev")
    empty_bucket.upload(NEW_LINUX)
    before = empty_bucket.snapshot()

    result = reindex({"channel": ""})

    assert result["ok"] is False
    assert "CHANNEL_PREFIXES" in result["error"]
    assert empty_bucket.snapshot() == before


def test_bucket_in_the_request_may_name_channel_bucket(empty_bucket: Bucket, small_channel) -> None:
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])

    result = reindex({"channel": "", "bucket": MOTO_BUCKET})

    assert result["ok"] is True
    assert result["complete"] is True
    assert result["bucket"] == MOTO_BUCKET
    assert empty_bucket.records("noarch")


def test_bucket_in_the_request_other_than_channel_bucket_is_refused_naming_both(
    empty_bucket: Bucket, small_channel: SmallChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The role may reach other buckets; a request must not point the function at one."""
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])
    configure(monkeypatch, CHANNEL_BUCKET="the-channel-bucket")
    opened: list[str] = []
    wiring = recording_wiring(opened)
    before = empty_bucket.snapshot()

    result = reindex({"channel": "", "bucket": MOTO_BUCKET}, wiring=wiring)

    assert result["ok"] is False
    assert f"'{MOTO_BUCKET}'" in result["error"]
    assert "'the-channel-bucket'" in result["error"]
    assert opened == []
    assert empty_bucket.snapshot() == before
    # A request without "bucket" opens the function's own CHANNEL_BUCKET (which moto does not have).
    assert reindex({"channel": ""}, wiring=wiring)["ok"] is False
    assert opened == ["the-channel-bucket"]


def test_missing_bucket_returns_ok_false_with_a_one_line_error(
    lambda_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, CHANNEL_BUCKET="no-such-bucket")

    result = reindex({"channel": ""})

    assert result["ok"] is False
    assert "no-such-bucket" in result["error"]
    assert "\n" not in result["error"]


def test_dry_run_writes_nothing(empty_bucket: Bucket, small_channel: SmallChannel) -> None:
    _, packages = small_channel
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])
    before = empty_bucket.snapshot()

    result = reindex({"channel": "", "dry_run": True})

    assert result["dry_run"] is True
    assert empty_bucket.snapshot() == before
    assert result["subdirs"]["linux-64"]["added"] == sorted(
        p.filename for p in packages if p.subdir == "linux-64"
    )


def test_force_rereads_every_package_of_an_indexed_channel(bucket: Bucket) -> None:
    records = bucket.records("win-64")

    result = reindex({"channel": "", "force": True, "subdirs": ["win-64"]})

    assert result["complete"] is True
    assert result["subdirs"]["win-64"]["updated"] == sorted(records)
    assert result["subdirs"]["win-64"]["written"] is True
    assert bucket.records("win-64") == records


def test_full_reindex_out_of_time_is_incomplete_and_the_next_invocation_completes(
    empty_bucket: Bucket, small_channel: SmallChannel
) -> None:
    _, packages = small_channel
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])

    first = reindex({"channel": ""}, seconds=0.001)

    assert first["ok"] is True
    assert first["complete"] is False
    for subdir in SUBDIRS:
        summary = first["subdirs"].get(subdir)
        assert subdir in first["skipped_subdirs"] or summary["deferred"], subdir

    second = reindex({"channel": ""})

    assert second["complete"] is True
    for subdir in SUBDIRS:
        assert sorted(empty_bucket.records(subdir)) == sorted(
            p.filename for p in packages if p.subdir == subdir
        )


class LateOnReaderThreads:
    """The machine's clock, except on threads other than the one that made it: package reads run on the
    reader pool's threads, and there monotonic time has run past any deadline; the subdir loop runs on the
    invocation's thread, where it has not."""

    def __init__(self) -> None:
        self._invocation_thread = threading.get_ident()
        self.late_answers = 0

    def time(self) -> float:
        return SYSTEM_CLOCK.time()

    def monotonic(self) -> float:
        if threading.get_ident() == self._invocation_thread:
            return SYSTEM_CLOCK.monotonic()
        self.late_answers += 1
        return math.inf

    def sleep(self, seconds: float) -> None:
        SYSTEM_CLOCK.sleep(seconds)


def test_full_reindex_reading_past_its_deadline_defers_files_and_the_next_invocation_reads_them(
    empty_bucket: Bucket, small_channel: SmallChannel
) -> None:
    _, packages = small_channel
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])
    wiring = Wiring.from_environment(os.environ)
    wiring.clock = clock = LateOnReaderThreads()

    first = reindex({"channel": ""}, wiring=wiring)

    assert first["ok"] is True
    assert first["complete"] is False
    assert first["skipped_subdirs"] == []
    for subdir in SUBDIRS:
        expected = sorted(p.filename for p in packages if p.subdir == subdir)
        assert first["subdirs"][subdir]["deferred"] == expected
        assert first["subdirs"][subdir]["complete"] is False
        assert empty_bucket.records(subdir) == {}  # what was read is published: nothing yet

    assert clock.late_answers == len(packages)  # each package read found its deadline passed

    second = reindex({"channel": ""})  # a fresh wiring, on the machine's clock

    assert second["complete"] is True
    for subdir in SUBDIRS:
        expected = sorted(p.filename for p in packages if p.subdir == subdir)
        assert second["subdirs"][subdir]["added"] == expected
        assert sorted(empty_bucket.records(subdir)) == expected


def test_full_reindex_with_bad_setting_raises_one_line_configuration_error(
    empty_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, REPODATA_MAX_AGE="-5")

    with pytest.raises(ConfigurationError) as raised:
        reindex({"channel": ""})

    assert str(raised.value).startswith("REPODATA_MAX_AGE=")
    assert "\n" not in str(raised.value)


def test_full_reindex_passes_max_package_mb_and_channel_access_to_the_index(
    empty_bucket: Bucket, small_channel: SmallChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MAX_PACKAGE_MB="7", CHANNEL_ACCESS="private")
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])
    given: list[IndexOptions] = []
    original = full_reindex.index_channel

    def index_channel(store: Any, channel: str, options: IndexOptions) -> Any:
        given.append(options)
        return original(store, channel, options)

    monkeypatch.setattr(full_reindex, "index_channel", index_channel)

    result = reindex({"channel": "", "subdirs": ["win-64"]})

    assert result["ok"] is True
    (options,) = given
    assert options.max_package_bytes == 7 * 1024 * 1024
    assert options.settings.private is True
    head = empty_bucket.client.head_object(Bucket=MOTO_BUCKET, Key="win-64/repodata.json")
    assert head["CacheControl"] == "private, max-age=60"


def test_full_reindex_crash_answers_one_line_and_logs_the_traceback(
    empty_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = LogRecorder(monkeypatch, runtime.logger)
    metrics = MetricRecorder(monkeypatch)

    def index_channel(store: Any, channel: str, options: IndexOptions) -> Any:
        raise ZeroDivisionError("internal detail\nFile /var/task/reindexer/indexer.py, line 1")

    monkeypatch.setattr(full_reindex, "index_channel", index_channel)

    result = reindex({"channel": ""})

    assert result == {
        "ok": False,
        "complete": False,
        "error": "internal error (ZeroDivisionError); the traceback is in the function's log",
    }
    assert [(message, type(error)) for message, error in logs.exceptions] == [
        (f"full reindex of s3://{MOTO_BUCKET}/ crashed", ZeroDivisionError)
    ]
    assert metrics.totals["SubdirUpdateFailures"] == 1
