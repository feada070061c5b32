"""The handlers' events for automation, collected from a wiring over a MemoryStore: the package-event
handler announces the batch's files (indexed, rejected with the reason, removed) and the subdir's publication,
never an older rejection or an ignored notice; the full reindex announces its changes but no dry run and no
old rejection; an operation's republication is a Subdir Published; a failing sink changes no handler's
answer; a channel-file redraw the store refuses brings the batch back."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from reindexer.channel_events import ChannelEvent, CollectingSink
from reindexer.config import HandlerSettings
from reindexer.contract import CHANNELDATA_JSON, DetailType, Metric, join_key
from reindexer.handlers import full_reindex, package_events, runtime
from reindexer.handlers.wiring import Wiring
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.publication import load_state
from reindexer.storage.memory import MemoryStore
from reindexer.store import TransientStoreError
from reindexer.subdir_ref import SubdirRef
from reindexer_cli.lambda_events import LocalLambdaContext, s3_message, sqs_event, sqs_record
from tests.support.archives import index_json, package_bytes
from tests.support.clock import FakeClock
from tests.support.stores import StoreWrapper

T = TypeVar("T")

BUCKET = "channel-bucket"
CHANNEL = "team/dev"
SUBDIR = "linux-64"
A1, B1 = "a-1.0-h0_0.conda", "b-1.0-h0_0.tar.bz2"
NEW = "c-1.0-h0_0.conda"
BAD = "bad-1.0-h0_0.conda"
OLD_BAD = "old-1.0-h0_0.conda"  # rejected by the first index, still in the state
ARCHIVES = {
    A1: package_bytes(A1, index_json("a", "1.0")),
    B1: package_bytes(B1, index_json("b", "1.0")),
    NEW: package_bytes(NEW, index_json("c", "1.0")),
}


class Channel:
    """CHANNEL indexed in a MemoryStore (A1, B1, and OLD_BAD refused), and the handlers over a wiring whose
    events are collected."""

    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(BUCKET, clock=self.clock)
        for name in (A1, B1):
            self.put(name, ARCHIVES[name])
        self.put(OLD_BAD, b"not a zip file")
        report = index_channel(self.store, CHANNEL, IndexOptions(clock=self.clock))
        assert [r.file for r in report.subdirs[SUBDIR].rejected] == [OLD_BAD]
        self.sink = CollectingSink()
        self.wiring = Wiring(
            HandlerSettings(bucket=BUCKET, **settings),
            open_store=lambda bucket: self.store,
            clock=self.clock,
            events=self.sink,
        )

    def put(self, name: str, data: bytes) -> None:
        self.store.write(join_key(CHANNEL, SUBDIR, name), data, content_type="application/octet-stream")

    def delete(self, name: str) -> None:
        self.store.delete(join_key(CHANNEL, SUBDIR, name))

    def notify(self, *names: str, removed: bool = False, bucket: str = BUCKET) -> dict[str, Any]:
        records = [
            sqs_record(s3_message(bucket, join_key(CHANNEL, SUBDIR, name), removed=removed), message_id=name)
            for name in names
        ]
        return self._call(package_events.build_handler(self.wiring), sqs_event(*records))

    def reindex(self, **request: Any) -> dict[str, Any]:
        return self._call(full_reindex.build_handler(self.wiring), {"channel": CHANNEL, **request})

    def _call(self, handler: Any, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = handler(event, LocalLambdaContext(timeout=600, clock=self.clock.monotonic))
        return result

    def taken(self) -> list[ChannelEvent]:
        events, self.sink.events = self.sink.events, []
        return events


def lines(events: list[ChannelEvent]) -> list[str]:
    return [event.line() for event in events]


def test_a_batch_announces_its_indexed_and_rejected_files_and_the_publication_but_no_older_rejection() -> (
    None
):
    channel = Channel()
    channel.put(NEW, ARCHIVES[NEW])
    channel.put(BAD, b"garbage, not a zip")

    result = channel.notify(NEW, BAD)

    assert result == {"batchItemFailures": []}
    events = channel.taken()
    assert [(e.detail_type, e.detail.get("file")) for e in events] == [
        (DetailType.PACKAGE_INDEXED, NEW),
        (DetailType.PACKAGE_REJECTED, BAD),
        (DetailType.SUBDIR_PUBLISHED, None),
    ]
    indexed, rejected, published = events
    assert indexed.detail == {
        "bucket": BUCKET,
        "channel": CHANNEL,
        "subdir": SUBDIR,
        "file": NEW,
        "key": f"{CHANNEL}/{SUBDIR}/{NEW}",
        "change": "added",
    }
    assert rejected.detail["reason"] and "\n" not in rejected.detail["reason"]
    assert published.detail["counts"] == {"added": 1, "updated": 0, "removed": 0, "rejected": 1}
    assert f"{CHANNEL}/{SUBDIR}/repodata.json" in published.detail["keys"]
    for key in published.detail["keys"]:
        assert channel.store.head(key) is not None, f"{key} is announced but was not written"


def test_the_first_upload_to_a_new_channel_announces_the_noarch_index_it_publishes_first() -> None:
    channel = Channel()
    fresh = "team/new"
    noarch = "n-1.0-h0_0.conda"
    for subdir, name in (("noarch", noarch), ("noarch", "broken-1.0-h0_0.conda"), (SUBDIR, A1)):
        data = ARCHIVES.get(name) or b"not a zip"
        if name == noarch:
            data = package_bytes(name, index_json("n", "1.0", subdir="noarch"))
        channel.store.write(join_key(fresh, subdir, name), data, content_type="application/octet-stream")
    record = sqs_record(s3_message(BUCKET, join_key(fresh, SUBDIR, A1)), message_id=A1)

    result = package_events.build_handler(channel.wiring)(
        sqs_event(record), LocalLambdaContext(timeout=600, clock=channel.clock.monotonic)
    )

    assert result == {"batchItemFailures": []}
    state, _ = load_state(SubdirRef(channel.store, fresh, "noarch"))
    assert state is not None
    reason = state.rejected["broken-1.0-h0_0.conda"].reason
    assert lines(channel.taken()) == [
        f"Package Indexed {fresh}/{SUBDIR}/{A1}",
        f"Subdir Published {fresh}/{SUBDIR}: 1 added, 0 updated, 0 removed, 0 rejected",
        f"Package Indexed {fresh}/noarch/{noarch}",
        f"Package Rejected {fresh}/noarch/broken-1.0-h0_0.conda: {reason}",
        f"Subdir Published {fresh}/noarch: 1 added, 0 updated, 0 removed, 1 rejected",
    ]


def test_a_delete_announces_the_removal_and_the_publication() -> None:
    channel = Channel()
    channel.delete(B1)

    channel.notify(B1, removed=True)

    assert lines(channel.taken()) == [
        f"Package Removed {CHANNEL}/{SUBDIR}/{B1}",
        f"Subdir Published {CHANNEL}/{SUBDIR}: 0 added, 0 updated, 1 removed, 0 rejected",
    ]


def test_a_good_package_replaced_by_a_bad_one_is_removed_and_rejected() -> None:
    channel = Channel()
    channel.put(A1, b"overwritten with garbage")

    channel.notify(A1)

    kinds = [(e.detail_type, e.detail.get("file")) for e in channel.taken()]
    assert kinds == [
        (DetailType.PACKAGE_REJECTED, A1),
        (DetailType.PACKAGE_REMOVED, A1),
        (DetailType.SUBDIR_PUBLISHED, None),
    ]


def test_ignored_and_duplicate_notices_make_no_events() -> None:
    channel = Channel(channel_prefixes=frozenset({CHANNEL}))

    # another bucket, a key that is no package, and a file already indexed as it is
    assert channel.notify(NEW, bucket="someone-elses-bucket") == {"batchItemFailures": []}
    assert channel.notify("README.md") == {"batchItemFailures": []}
    assert channel.notify(A1) == {"batchItemFailures": []}

    assert channel.taken() == []


def test_a_full_reindex_announces_its_changes_but_not_the_rejections_its_state_already_held() -> None:
    channel = Channel()
    channel.put(NEW, ARCHIVES[NEW])
    channel.delete(B1)

    result = channel.reindex()

    assert result["complete"] is True, result
    assert lines(channel.taken()) == [
        f"Subdir Published {CHANNEL}/{SUBDIR}: 1 added, 0 updated, 1 removed, 0 rejected",
        f"Package Indexed {CHANNEL}/{SUBDIR}/{NEW}",
        f"Package Removed {CHANNEL}/{SUBDIR}/{B1}",
    ]


def test_a_full_reindex_announces_a_rejection_it_decided_once_and_a_nightly_rerun_stays_quiet() -> None:
    """A bad upload whose notification was lost is first judged by the nightly run: that is news."""
    channel = Channel()
    channel.put(BAD, b"not a zip file either")

    channel.reindex()

    rejected = [e for e in channel.taken() if e.detail_type == DetailType.PACKAGE_REJECTED]
    assert [e.detail["file"] for e in rejected] == [BAD]
    channel.reindex()
    assert channel.taken() == []


def test_a_forced_full_reindex_judges_every_file_again_and_announces_its_rejections() -> None:
    channel = Channel()

    channel.reindex(force=True)

    rejected = [e for e in channel.taken() if e.detail_type == DetailType.PACKAGE_REJECTED]
    assert [e.detail["file"] for e in rejected] == [OLD_BAD]


def test_a_full_reindex_dry_run_announces_nothing() -> None:
    channel = Channel()
    channel.put(NEW, ARCHIVES[NEW])

    result = channel.reindex(dry_run=True)

    assert result["subdirs"][SUBDIR]["added"] == [NEW]
    assert channel.taken() == []


def test_an_operations_republication_is_a_subdir_published() -> None:
    channel = Channel()

    result = channel.reindex(yank=[f"{SUBDIR}/{A1}"], reason="miscompiled")

    assert result["ok"] is True, result
    assert lines(channel.taken()) == [
        f"Subdir Published {CHANNEL}/{SUBDIR}: 0 added, 0 updated, 0 removed, 0 rejected"
    ]


class BrokenBus:
    """A sink for a bus that takes nothing: it answers that every event was not put."""

    def put(self, events: Any, *, seconds: float | None = None) -> int:
        return len(events)


def test_events_that_cannot_be_put_are_counted_and_change_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = Channel()
    channel.wiring.events = BrokenBus()
    counted: list[float] = []
    original = runtime.metrics.add_metric

    def add_metric(name: str, unit: Any, value: float, **kwargs: Any) -> None:
        if name == Metric.EVENT_PUT_FAILURES:
            counted.append(value)
        original(name=name, unit=unit, value=value, **kwargs)

    monkeypatch.setattr(runtime.metrics, "add_metric", add_metric)
    channel.put(NEW, ARCHIVES[NEW])

    assert channel.notify(NEW) == {"batchItemFailures": []}
    assert counted == [2]  # Package Indexed and Subdir Published
    assert NEW in channel.store.read(join_key(CHANNEL, SUBDIR, "repodata.json"))[0].decode()


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")  # add_metric is replaced
def test_a_full_reindex_reports_its_progress_and_only_the_rejections_it_decided(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = Channel()
    counted: dict[str, float] = {}

    def add_metric(name: str, unit: str, value: float) -> None:
        counted[name] = counted.get(name, 0) + value

    monkeypatch.setattr(runtime.metrics, "add_metric", add_metric)

    channel.reindex()

    assert counted[Metric.SUBDIRS_REINDEXED] == 2  # linux-64 and noarch
    assert counted[Metric.SUBDIRS_SKIPPED] == 0
    assert counted[Metric.PACKAGES_REJECTED] == 0, "OLD_BAD was rejected by an earlier run"


class RefusesChannelData(StoreWrapper):
    """Refuses the first `times` writes of the channel's channeldata.json, as a throttling store would."""

    def __init__(self, inner: MemoryStore, times: int) -> None:
        super().__init__(inner)
        self.times = times

    def _around(self, operation: str, key: str, call: Callable[[], T]) -> T:
        if operation == "write" and key == join_key(CHANNEL, CHANNELDATA_JSON) and self.times > 0:
            self.times -= 1
            raise TransientStoreError(f"{key}: injected SlowDown")
        return call()


def test_a_channel_file_redraw_the_store_refuses_sends_the_batch_back_and_the_redelivery_redraws() -> None:
    channel = Channel()
    channel.put(NEW, ARCHIVES[NEW])
    memory = channel.store
    channel.store = RefusesChannelData(memory, times=1)  # type: ignore[assignment]

    first = channel.notify(NEW)

    assert first == {"batchItemFailures": [{"itemIdentifier": NEW}]}
    assert "c" not in json.loads(memory.read(join_key(CHANNEL, CHANNELDATA_JSON))[0])["packages"]
    second = channel.notify(NEW)  # SQS delivers it again
    assert second == {"batchItemFailures": []}
    assert "c" in json.loads(memory.read(join_key(CHANNEL, CHANNELDATA_JSON))[0])["packages"]
