"""The Lambda handlers called directly on in-process moto: package events in every shape, batch item failures,
and the full reindex with its request validation, dry runs and time budget."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import reindexer.lease
import reindexer.package_fetch
from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage, package_files
from reindexer.config import ConfigurationError
from reindexer.handlers import full_reindex, package_events, runtime
from reindexer.handlers.package_events import TransientIndexingError
from reindexer.indexer import IndexOptions, index_channel
from reindexer.layout import join_key
from reindexer.notifications import MalformedEventError
from reindexer.storage.s3 import S3Store
from reindexer.store import StoredObject, TransientStoreError
from tests.common import sha256_hex
from tests.integration.conftest import MOTO_BUCKET
from tests.integration.handler_helpers import (
    FakeContext,
    direct_s3_event,
    eventbridge_event,
    load_event,
    s3_message,
    sqs_batch,
    sqs_message,
)
from tests.integration.helpers import all_records, get_repodata

SmallChannel = tuple[Path, list[SamplePackage]]
SUBDIRS = ("linux-64", "noarch", "osx-arm64", "win-64")
ENV_VARIABLES = ("CHANNEL_BUCKET", "REPODATA_MAX_AGE", "READ_JOBS", "CHANNEL_PREFIXES")

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


def clear_caches() -> None:
    runtime.settings.cache_clear()
    runtime.store_for.cache_clear()
    runtime._client.cache_clear()


@pytest.fixture
def lambda_env(moto_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The deployed function's environment on in-process moto, with fresh settings and clients."""
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHANNEL_BUCKET", MOTO_BUCKET)
    clear_caches()
    yield moto_client
    clear_caches()


def configure(monkeypatch: pytest.MonkeyPatch, **variables: str | None) -> None:
    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    clear_caches()


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
    lambda_env: Any, small_channel: SmallChannel, indexed_objects: dict[str, tuple[bytes, dict[str, str]]]
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
        assert index_channel(S3Store(MOTO_BUCKET, lambda_env), "", IndexOptions()).ok
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


def package_event(event: dict[str, Any], remaining_millis: int = 600_000) -> dict[str, Any]:
    result: dict[str, Any] = package_events.handler(event, FakeContext(remaining_millis))
    return result


def reindex(event: Any, remaining_millis: int = 600_000) -> dict[str, Any]:
    result: dict[str, Any] = full_reindex.handler(event, FakeContext(remaining_millis))
    return result


def message_for(key: str, message_id: str, *, removed: bool = False) -> dict[str, Any]:
    return sqs_message(s3_message(MOTO_BUCKET, key, removed=removed), message_id)


def failures(result: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in result["batchItemFailures"]]


class LogRecorder:
    """What a handler's Powertools logger was asked to log, as (level, message, extra)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, logger: Any) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []
        for level in ("info", "warning", "error"):
            monkeypatch.setattr(logger, level, self._recorder(level))

    def _recorder(self, level: str) -> Any:
        def record(message: object, *args: Any, extra: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.entries.append((level, str(message), extra or {}))

        return record

    def extras(self, message: str) -> list[dict[str, Any]]:
        return [extra for _, logged, extra in self.entries if logged == message]


def fail_downloads_of(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    """A throttled GET for these keys, every time (botocore's own retries already gave up)."""
    original = S3Store.download

    def download(self: S3Store, key: str, sink: Any) -> StoredObject:
        if key in keys:
            raise TransientStoreError(f"{self.describe(key)}: SlowDown Please reduce your request rate.")
        return original(self, key, sink)

    monkeypatch.setattr(S3Store, "download", download)


# --- package events from SQS -------------------------------------------------------------------------


def test_sqs_batch_indexes_every_new_package_and_reports_no_failures(bucket: Bucket) -> None:
    for key in HELD_BACK:
        bucket.upload(key)
    event = sqs_batch(*(message_for(key, f"m{number}") for number, key in enumerate(HELD_BACK)))

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

    result = package_event(sqs_batch(first))

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
    event = sqs_batch(message_for(NEW_LINUX, "good"), *malformed, *test_event)

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

    result = package_event(sqs_batch(message_for(NEW_LINUX, "good"), bad))

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
    event = sqs_batch(
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


def test_transient_failure_returns_exactly_that_message_and_the_rest_succeed(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in (NEW_LINUX, NEW_LINUX_PLUS, NEW_NOARCH_PLUS):
        bucket.upload(key)
    event = sqs_batch(
        message_for(NEW_LINUX, "throttled"),
        message_for(NEW_LINUX_PLUS, "same-subdir"),
        message_for(NEW_NOARCH_PLUS, "other-subdir"),
        message_for(NEW_LINUX, "throttled-duplicate"),
    )

    with monkeypatch.context() as patched:
        fail_downloads_of(patched, NEW_LINUX)
        result = package_event(event)

    assert failures(result) == ["throttled", "throttled-duplicate"]
    bucket.assert_indexed(NEW_LINUX_PLUS)
    bucket.assert_indexed(NEW_NOARCH_PLUS)
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")

    # SQS redelivers the message once the throttling has passed.
    assert package_event(sqs_batch(message_for(NEW_LINUX, "throttled"))) == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)


def test_busy_subdir_returns_its_messages_for_redelivery(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another indexer holds linux-64 longer than this invocation may wait: retry later, never drop."""
    bucket.put("linux-64/.reindexer/lease.json", json.dumps({"owner": "x", "expires_at": 4e9}).encode())
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_NOARCH_PLUS)
    event = sqs_batch(message_for(NEW_LINUX, "busy"), message_for(NEW_NOARCH_PLUS, "free"))
    # Every look at the lease's clock finds an hour gone: the wait for a busy lease is over at once.
    monkeypatch.setattr(reindexer.lease, "time", SimpleNamespace(monotonic=itertools.count(0, 3600).__next__))

    result = package_event(event)

    assert failures(result) == ["busy"]
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")
    bucket.assert_indexed(NEW_NOARCH_PLUS)


def test_messages_whose_packages_could_not_be_read_in_time_are_redelivered(bucket: Bucket) -> None:
    bucket.upload(NEW_LINUX)

    result = package_event(sqs_batch(message_for(NEW_LINUX, "late")), remaining_millis=0)

    assert failures(result) == ["late"]
    assert NEW_LINUX.split("/")[1] not in bucket.records("linux-64")


def test_duplicate_and_out_of_order_deliveries_converge_on_the_bucket(bucket: Bucket) -> None:
    name = NEW_LINUX.split("/")[1]
    bucket.upload(NEW_LINUX)
    created = message_for(NEW_LINUX, "created")
    removed = message_for(NEW_LINUX, "removed", removed=True)

    # The object was created, deleted and created again; the notices arrive in any order, some twice.
    assert package_event(sqs_batch(removed)) == {"batchItemFailures": []}
    assert name in bucket.records("linux-64")
    assert package_event(sqs_batch(created, created)) == {"batchItemFailures": []}
    assert package_event(sqs_batch(created)) == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_LINUX)

    # Deleted for good; a late duplicate of the old create notice comes after the delete notice.
    bucket.delete(NEW_LINUX)
    assert package_event(sqs_batch(removed, created)) == {"batchItemFailures": []}
    assert package_event(sqs_batch(created)) == {"batchItemFailures": []}
    assert name not in bucket.records("linux-64")
    assert set(bucket.records("linux-64")) == bucket.package_names("linux-64")


def test_channel_with_a_nested_prefix_is_updated_in_place(bucket: Bucket, monkeypatch) -> None:
    configure(monkeypatch, CHANNEL_PREFIXES="org/dev")
    for key in (NEW_LINUX, NEW_LINUX_PLUS):
        bucket.upload(key, channel="org/dev")
    root_before = bucket.records("linux-64")
    event = sqs_batch(
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

    assert package_event(sqs_batch(message_for(NEW_LINUX, "root"))) == {"batchItemFailures": []}

    assert bucket.snapshot() == before


def test_first_upload_to_a_new_channel_publishes_an_index_clients_can_read(empty_bucket: Bucket) -> None:
    """A channel filled only through events must still have noarch/repodata.json (rattler needs it)."""
    empty_bucket.upload(NEW_LINUX)

    assert package_event(sqs_batch(message_for(NEW_LINUX, "first"))) == {"batchItemFailures": []}

    empty_bucket.assert_indexed(NEW_LINUX)
    assert empty_bucket.exists("noarch/repodata.json")


def test_repodata_max_age_setting_reaches_the_published_files(bucket: Bucket, monkeypatch) -> None:
    configure(monkeypatch, REPODATA_MAX_AGE="17")
    bucket.upload(NEW_LINUX)

    package_event(sqs_batch(message_for(NEW_LINUX, "m")))

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
    event = sqs_batch(
        sqs_message(eventbridge_event(MOTO_BUCKET, NEW_WIN), "eb-created"),
        sqs_message(eventbridge_event(MOTO_BUCKET, KNOWN_NOARCH, deleted=True), "eb-deleted"),
    )

    assert package_event(event) == {"batchItemFailures": []}
    bucket.assert_indexed(NEW_WIN)
    assert KNOWN_NOARCH.split("/")[1] not in bucket.records("noarch")


def test_direct_invocation_with_a_transient_failure_raises(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.upload(NEW_LINUX)
    bucket.upload(NEW_WIN)
    fail_downloads_of(monkeypatch, NEW_LINUX)

    with pytest.raises(TransientIndexingError) as raised:
        package_event(direct_s3_event(MOTO_BUCKET, NEW_LINUX, NEW_WIN))

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
        package_event(sqs_batch(message_for(NEW_LINUX, "m")))

    assert "REPODATA_MAX_AGE" in str(raised.value)
    assert "\n" not in str(raised.value)


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
        "my-channel",
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
        "string-event",
    ],
)
def test_bad_request_returns_ok_false_with_a_one_line_error(empty_bucket: Bucket, event: Any) -> None:
    empty_bucket.upload(NEW_LINUX)
    before = empty_bucket.snapshot()

    result = reindex(event)

    assert result["ok"] is False
    assert result["complete"] is False
    assert isinstance(result["error"], str)
    assert result["error"]
    assert "\n" not in result["error"]
    assert empty_bucket.snapshot() == before


def test_request_without_bucket_and_without_channel_bucket_is_a_bad_request(
    empty_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, CHANNEL_BUCKET=None)

    result = reindex({"channel": ""})

    assert result["ok"] is False
    assert "bucket" in result["error"]
    assert "\n" not in result["error"]


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


def test_bucket_in_the_event_overrides_channel_bucket(
    empty_bucket: Bucket, small_channel: SmallChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, CHANNEL_BUCKET="some-other-bucket")  # does not exist: using it would fail
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])

    result = reindex({"channel": "", "bucket": MOTO_BUCKET})

    assert result["ok"] is True
    assert result["complete"] is True
    assert result["bucket"] == MOTO_BUCKET
    assert empty_bucket.records("noarch")


def test_missing_bucket_returns_ok_false_with_a_one_line_error(lambda_env: Any) -> None:
    result = reindex({"channel": "", "bucket": "no-such-bucket"})

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

    first = reindex({"channel": ""}, remaining_millis=1)

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


def test_full_reindex_reading_past_its_deadline_defers_files_and_the_next_invocation_reads_them(
    empty_bucket: Bucket, small_channel: SmallChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, packages = small_channel
    upload_channel(empty_bucket.client, MOTO_BUCKET, "", small_channel[0])
    # The clock package reads consult has run past any deadline; the subdir loop's clock has not.
    monkeypatch.setattr(reindexer.package_fetch, "time", SimpleNamespace(monotonic=lambda: float("inf")))

    first = reindex({"channel": ""})

    assert first["ok"] is True
    assert first["complete"] is False
    assert first["skipped_subdirs"] == []
    for subdir in SUBDIRS:
        expected = sorted(p.filename for p in packages if p.subdir == subdir)
        assert first["subdirs"][subdir]["deferred"] == expected
        assert first["subdirs"][subdir]["complete"] is False
        assert empty_bucket.records(subdir) == {}  # what was read is published: nothing yet

    monkeypatch.setattr(reindexer.package_fetch, "time", time)
    second = reindex({"channel": ""})

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
