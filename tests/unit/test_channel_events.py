"""Events for automation (reindexer.channel_events): the events a subdir report makes (each detail type, only
the rejections this run judged, reasons on one line, none for a failed run), the printed lines, and the
EventBridge sink on a stubbed client (batches by count and size, refused entries retried once, a failing
bus or no time left never raising) and in the wiring (EVENT_BUS, the endpoint, a lazy client)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from reindexer.channel_events import (
    MAX_BATCH_ENTRIES,
    MAX_REQUEST_BYTES,
    ChannelEvent,
    CollectingSink,
    DiscardingSink,
    EventBridgeSink,
    EventBusEndpoint,
    PrintingSink,
    entry_size,
    subdir_events,
)
from reindexer.config import ConfigurationError, HandlerSettings
from reindexer.contract import EVENT_BUS_VARIABLE, EVENT_SOURCE, DetailType, Metric
from reindexer.handlers import runtime
from reindexer.handlers.wiring import NO_EVENTS, Wiring
from reindexer.reports import Rejection, SubdirReport
from reindexer.storage.memory import MemoryStore
from tests.support.clock import FakeClock

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "channel-bucket"


def report(**fields: Any) -> SubdirReport:
    return SubdirReport("linux-64", **fields)


def kinds(events: list[ChannelEvent]) -> list[tuple[str, str | None]]:
    return [(event.detail_type, event.detail.get("file")) for event in events]


# --- building events from a report ----------------------------------------------------------------------


def test_a_run_makes_one_event_per_file_change_then_the_publication() -> None:
    done = report(
        added=["a-1-0.conda"],
        updated=["b-1-0.tar.bz2"],
        removed=["c-1-0.conda"],
        rejected=[Rejection("d-1-0.conda", "not a zip file")],
        written=True,
        unchanged=7,
    )

    events = subdir_events(BUCKET, "org/dev", done, judged={"a-1-0.conda", "d-1-0.conda"})

    assert kinds(events) == [
        (DetailType.PACKAGE_INDEXED, "a-1-0.conda"),
        (DetailType.PACKAGE_INDEXED, "b-1-0.tar.bz2"),
        (DetailType.PACKAGE_REJECTED, "d-1-0.conda"),
        (DetailType.PACKAGE_REMOVED, "c-1-0.conda"),
        (DetailType.SUBDIR_PUBLISHED, None),
    ]
    where = {"bucket": BUCKET, "channel": "org/dev", "subdir": "linux-64"}
    assert events[0].detail == {
        **where,
        "file": "a-1-0.conda",
        "key": "org/dev/linux-64/a-1-0.conda",
        "change": "added",
    }
    assert events[1].detail["change"] == "updated"
    assert events[2].detail == {
        **where,
        "file": "d-1-0.conda",
        "key": "org/dev/linux-64/d-1-0.conda",
        "reason": "not a zip file",
    }
    assert events[3].detail == {**where, "file": "c-1-0.conda", "key": "org/dev/linux-64/c-1-0.conda"}
    assert events[4].detail == {
        **where,
        "counts": {"added": 1, "updated": 1, "removed": 1, "rejected": 1},
        "keys": [
            "org/dev/linux-64/repodata.json",
            "org/dev/linux-64/repodata.json.zst",
            "org/dev/linux-64/repodata_shards.msgpack.zst",
            "org/dev/linux-64/run_exports.json",
        ],
    }


def test_only_the_rejections_this_run_judged_make_events() -> None:
    """A report lists every rejection the subdir's state holds; older ones are not news."""
    done = report(
        added=["new-1-0.conda"],
        rejected=[Rejection("old-1-0.conda", "refused last week"), Rejection("bad-1-0.conda", "empty file")],
        written=True,
    )

    events = subdir_events(BUCKET, "", done, judged={"new-1-0.conda", "bad-1-0.conda"})

    rejected = [event for event in events if event.detail_type == DetailType.PACKAGE_REJECTED]
    assert [event.detail["file"] for event in rejected] == ["bad-1-0.conda"]
    assert events[-1].detail["counts"]["rejected"] == 1


def test_a_reason_is_one_line_whatever_the_report_holds() -> None:
    done = report(rejected=[Rejection("x-1-0.conda", "line one\nline two\r\n\tand\x00 a NUL")])

    (event,) = subdir_events(BUCKET, "", done, judged={"x-1-0.conda"})

    assert event.detail["reason"] == "line one line two and a NUL"
    assert event.line() == "Package Rejected linux-64/x-1-0.conda: line one line two and a NUL"


def test_a_failed_run_makes_no_event_and_an_unwritten_subdir_no_publication() -> None:
    failed = report(added=["a-1-0.conda"], written=True, error="gave up after 5 conflicting updates")
    assert subdir_events(BUCKET, "", failed, judged={"a-1-0.conda"}) == []

    nothing = report(unchanged=3)
    assert subdir_events(BUCKET, "", nothing, judged={"a-1-0.conda"}) == []

    removed_only = report(removed=["a-1-0.conda"])
    assert kinds(subdir_events(BUCKET, "", removed_only, judged=())) == [
        (DetailType.PACKAGE_REMOVED, "a-1-0.conda")
    ]


def test_lines_name_the_file_under_its_channel_and_stay_one_line() -> None:
    done = report(
        added=["a-1-0.conda", "evil\n-1-0.conda"],
        rejected=[Rejection("r-1-0.conda", "bad")],
        removed=["gone-1-0.conda"],
        written=True,
    )

    at_root = [event.line() for event in subdir_events(BUCKET, "", done, judged={"r-1-0.conda"})]
    in_channel = subdir_events(BUCKET, "team/dev", done, judged=())

    assert at_root == [
        "Package Indexed linux-64/a-1-0.conda",
        "Package Indexed linux-64/evil\\n-1-0.conda",
        "Package Rejected linux-64/r-1-0.conda: bad",
        "Package Removed linux-64/gone-1-0.conda",
        "Subdir Published linux-64: 2 added, 0 updated, 1 removed, 1 rejected",
    ]
    assert in_channel[0].line() == "Package Indexed team/dev/linux-64/a-1-0.conda"


def test_an_entry_is_what_put_events_takes_and_its_size_is_counted_as_eventbridge_does() -> None:
    event = ChannelEvent(DetailType.PACKAGE_REJECTED, {"file": "é-1-0.conda", "reason": "ünreadable"})

    entry = event.entry("default")

    assert entry["Source"] == EVENT_SOURCE == "reindexer"
    assert entry["DetailType"] == "Package Rejected"
    assert entry["EventBusName"] == "default"
    assert json.loads(entry["Detail"]) == {"file": "é-1-0.conda", "reason": "ünreadable"}
    expected = len(b"reindexer") + len(b"Package Rejected") + len(entry["Detail"].encode())
    assert entry_size(entry) == expected
    assert entry_size({**entry, "Time": "now", "Resources": ["arn:aws:s3:::b"]}) == expected + 14 + 14


# --- sinks ------------------------------------------------------------------------------------------------


def events_of(count: int, detail_bytes: int = 0) -> list[ChannelEvent]:
    return [
        ChannelEvent(
            DetailType.PACKAGE_INDEXED, {"file": f"p{number:03d}-1-0.conda", "pad": "x" * detail_bytes}
        )
        for number in range(count)
    ]


def test_printing_sink_writes_one_line_per_event_and_collecting_and_discarding_sinks_answer_zero() -> None:
    lines: list[str] = []
    done = report(added=["a-1-0.conda"], written=True)
    events = subdir_events(BUCKET, "dev", done, judged=())

    assert PrintingSink(lines.append).put(events) == 0
    collecting = CollectingSink()
    assert collecting.put(events) == 0
    assert DiscardingSink().put(events) == 0

    assert lines == [
        "Package Indexed dev/linux-64/a-1-0.conda",
        "Subdir Published dev/linux-64: 1 added, 0 updated, 0 removed, 0 rejected",
    ]
    assert collecting.events == events


def test_printing_sink_prints_flushed_lines_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    PrintingSink().put(subdir_events(BUCKET, "", report(removed=["a-1-0.conda"]), judged=()))

    assert capsys.readouterr().out == "Package Removed linux-64/a-1-0.conda\n"


Answer = Callable[[list[dict[str, str]]], dict[str, Any]]


class StubEvents:
    """An EventBridge client whose PutEvents answers come from `answers` (one per call, then all accepted);
    each call takes `seconds` on the clock."""

    def __init__(self, *answers: Answer | Exception, clock: FakeClock | None = None, seconds: float = 0.0):
        self.answers = list(answers)
        self.calls: list[list[dict[str, str]]] = []
        self.clock = clock
        self.seconds = seconds

    def put_events(self, Entries: list[dict[str, str]]) -> dict[str, Any]:
        assert len(Entries) <= MAX_BATCH_ENTRIES
        assert sum(entry_size(entry) for entry in Entries) < MAX_REQUEST_BYTES
        self.calls.append(Entries)
        if self.clock is not None:
            self.clock.advance(self.seconds)
        answer = self.answers.pop(0) if self.answers else accept
        if isinstance(answer, Exception):
            raise answer
        return answer(Entries)


def accept(entries: list[dict[str, str]]) -> dict[str, Any]:
    return {"FailedEntryCount": 0, "Entries": [{"EventId": f"id-{n}"} for n in range(len(entries))]}


def refuse(*positions: int, code: str = "ThrottlingException") -> Answer:
    def answer(entries: list[dict[str, str]]) -> dict[str, Any]:
        results = [
            {"ErrorCode": code, "ErrorMessage": "Rate exceeded"} if n in positions else {"EventId": f"id-{n}"}
            for n in range(len(entries))
        ]
        return {"FailedEntryCount": len(positions), "Entries": results}

    return answer


def sink_on(client: StubEvents, clock: FakeClock | None = None) -> EventBridgeSink:
    return EventBridgeSink(EventBusEndpoint(region="us-east-1"), client=client, clock=clock or FakeClock())


def files_sent(calls: list[list[dict[str, str]]]) -> list[str]:
    return [json.loads(entry["Detail"])["file"] for call in calls for entry in call]


def test_events_go_in_batches_of_ten(caplog: pytest.LogCaptureFixture) -> None:
    client = StubEvents()

    assert sink_on(client).put(events_of(25)) == 0

    assert [len(call) for call in client.calls] == [10, 10, 5]
    assert files_sent(client.calls) == [f"p{number:03d}-1-0.conda" for number in range(25)]
    assert {entry["EventBusName"] for call in client.calls for entry in call} == {"default"}
    assert caplog.records == []


def test_a_batch_stays_under_the_request_size_limit_and_an_entry_too_large_is_dropped_and_counted() -> None:
    client = StubEvents()
    large = events_of(5, detail_bytes=90 * 1024)
    too_large = ChannelEvent(DetailType.PACKAGE_INDEXED, {"file": "huge", "pad": "x" * MAX_REQUEST_BYTES})

    unput = sink_on(client).put([*large[:2], too_large, *large[2:]])

    assert unput == 1
    assert [len(call) for call in client.calls] == [2, 2, 1]
    assert "huge" not in files_sent(client.calls)


def test_refused_entries_are_retried_once_and_logged_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    client = StubEvents(refuse(3, 7), clock=clock)

    with caplog.at_level(logging.WARNING, logger="reindexer.channel_events"):
        unput = sink_on(client, clock).put(events_of(12))

    assert unput == 0
    assert [len(call) for call in client.calls] == [10, 2, 2]
    assert files_sent(client.calls[2:]) == ["p003-1-0.conda", "p007-1-0.conda"]
    assert clock.slept == [0.1]
    (line,) = [record.getMessage() for record in caplog.records]
    assert line == (
        "events on the bus default: 2 of 12 failed (ThrottlingException x2); 2 retried; 0 not put (none)"
    )


def test_entries_refused_twice_are_counted_and_their_codes_logged(caplog: pytest.LogCaptureFixture) -> None:
    client = StubEvents(refuse(0, 1, code="InternalFailure"), refuse(0, code="ThrottlingException"))

    with caplog.at_level(logging.WARNING, logger="reindexer.channel_events"):
        unput = sink_on(client).put(events_of(3))

    assert unput == 1
    assert [len(call) for call in client.calls] == [3, 2]
    (line,) = [record.getMessage() for record in caplog.records]
    assert "2 of 3 failed (InternalFailure x2); 2 retried; 1 not put (ThrottlingException x1)" in line


def test_a_failing_bus_never_raises_stops_the_put_and_counts_every_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "not authorized to perform events:PutEvents"}},
        "PutEvents",
    )
    client = StubEvents(denied)

    with caplog.at_level(logging.WARNING, logger="reindexer.channel_events"):
        unput = sink_on(client).put(events_of(25))

    assert unput == 25
    assert len(client.calls) == 1  # the other batches would be refused alike
    (line,) = [record.getMessage() for record in caplog.records]
    assert "25 of 25 failed (AccessDeniedException x10, NotSent x15); 0 retried; 25 not put" in line
    assert "not authorized to perform events:PutEvents" in line
    assert "\n" not in line


def test_a_put_stops_when_its_time_is_up_and_counts_what_it_did_not_send() -> None:
    clock = FakeClock()
    client = StubEvents(clock=clock, seconds=1.0)

    unput = sink_on(client, clock).put(events_of(25), seconds=1.5)

    assert unput == 5
    assert [len(call) for call in client.calls] == [10, 10]
    assert sink_on(StubEvents()).put(events_of(3), seconds=0.0) == 3  # no time at all: nothing is sent


def test_the_client_is_created_at_the_first_put_only() -> None:
    sink = EventBridgeSink(EventBusEndpoint(region="us-east-1"))

    assert sink._client is None
    assert sink.put([]) == 0
    assert sink._client is None


# --- the wiring -------------------------------------------------------------------------------------------


def wiring_from(**environ: str) -> Wiring:
    return Wiring.from_environment({"CHANNEL_BUCKET": BUCKET, **environ})


def test_the_wiring_puts_no_events_without_an_event_bus() -> None:
    assert wiring_from().events is NO_EVENTS
    assert wiring_from(**{EVENT_BUS_VARIABLE: " "}).events is NO_EVENTS
    assert Wiring(HandlerSettings(bucket=BUCKET), MemoryStore).events is NO_EVENTS


def test_the_wiring_puts_events_on_the_bus_named_at_the_sdks_endpoint_in_the_functions_region() -> None:
    wiring = wiring_from(
        **{EVENT_BUS_VARIABLE: "default"},
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL="http://127.0.0.1:1",
        AWS_ENDPOINT_URL_EVENTS="http://127.0.0.1:2",
    )

    sink = wiring.events
    assert isinstance(sink, EventBridgeSink)
    assert sink.endpoint == EventBusEndpoint(bus="default", url="http://127.0.0.1:2", region="eu-west-1")
    assert sink._client is None  # no SDK client before the first put
    general = wiring_from(**{EVENT_BUS_VARIABLE: "default"}, AWS_ENDPOINT_URL="http://127.0.0.1:1").events
    assert isinstance(general, EventBridgeSink)
    assert general.endpoint.url == "http://127.0.0.1:1"
    ignored = wiring_from(
        **{EVENT_BUS_VARIABLE: "default"},
        AWS_ENDPOINT_URL_EVENTS="http://127.0.0.1:2",
        AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true",
    ).events
    assert isinstance(ignored, EventBridgeSink)
    assert ignored.endpoint.url is None


def test_a_bad_event_bus_is_a_one_line_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        wiring_from(**{EVENT_BUS_VARIABLE: "my bus\nwith lines"})

    assert str(raised.value).startswith("EVENT_BUS='my bus\\nwith lines' is not an event bus name or ARN")
    assert "\n" not in str(raised.value)


def test_a_sink_given_to_the_wiring_replaces_the_bus() -> None:
    collecting = CollectingSink()

    assert wiring_from(**{EVENT_BUS_VARIABLE: "default"}).events is not collecting
    assert Wiring.from_environment({"CHANNEL_BUCKET": BUCKET}, events=collecting).events is collecting


class RaisingSink:
    def put(self, events: Any, *, seconds: float | None = None) -> int:
        raise RuntimeError("a sink bug")


class LosingSink:
    def put(self, events: Any, *, seconds: float | None = None) -> int:
        return len(events) - 1


def test_put_events_counts_what_was_not_put_and_survives_a_sink_that_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    added: list[tuple[str, float]] = []
    logged: list[str] = []
    monkeypatch.setattr(runtime.metrics, "add_metric", lambda name, unit, value: added.append((name, value)))
    monkeypatch.setattr(runtime.logger, "exception", lambda message, *a, **k: logged.append(message))
    events = events_of(3)

    Wiring(HandlerSettings(bucket=BUCKET), MemoryStore, events=LosingSink()).put_events(events)
    Wiring(HandlerSettings(bucket=BUCKET), MemoryStore, events=RaisingSink()).put_events(events)
    Wiring(HandlerSettings(bucket=BUCKET), MemoryStore, events=RaisingSink()).put_events([])

    assert added == [(Metric.EVENT_PUT_FAILURES, 2), (Metric.EVENT_PUT_FAILURES, 3)]
    assert logged == ["events for automation not put"]


def test_importing_the_handlers_loads_no_aws_sdk_client_code() -> None:
    """The EventBridge client is botocore's, imported at the first put: a handler's import (Lambda's cold
    start) loads neither boto3 nor botocore's session and client modules."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.loaded_modules",
            "--import",
            "reindexer.handlers.package_events",
            "reindexer.handlers.full_reindex",
            "--top-level",
            "boto3",
            "botocore",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(name.startswith("boto3") for name in loaded)
    assert {"botocore.session", "botocore.client"}.isdisjoint(loaded)
