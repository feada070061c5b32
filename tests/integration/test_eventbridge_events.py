"""Events for automation on moto's EventBridge: a rule on the default bus matching source `reindexer` sends
them to an SQS queue, and they arrive with their source, detail type and detail, whether the sink talks to
moto in-process or over HTTP at AWS_ENDPOINT_URL_EVENTS, and from the package-event handler wired from the
deployed function's environment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from reindexer.channel_events import EventBridgeSink, EventBusEndpoint, subdir_events
from reindexer.contract import DEFAULT_EVENT_BUS, EVENT_BUS_VARIABLE, EVENT_SOURCE, DetailType, join_key
from reindexer.handlers import package_events
from reindexer.handlers.wiring import Wiring, event_sink
from reindexer.reports import Rejection, SubdirReport
from reindexer_cli.lambda_events import LocalLambdaContext, s3_message, sqs_event, sqs_record
from tests.integration.conftest import MOTO_BUCKET
from tests.support.archives import index_json, package_bytes

REGION = "us-east-1"


class Bus:
    """The default bus with one rule sending every event of source EVENT_SOURCE to an SQS queue."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.queue = self.sqs.create_queue(QueueName="reindexer-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = boto3.client("events", region_name=REGION)
        events.put_rule(Name="reindexer-events", EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
        events.put_targets(Rule="reindexer-events", Targets=[{"Id": "queue", "Arn": arn}])
        # Not matched by the rule: proves the queue holds what the rule routed, not everything.
        events.put_events(Entries=[{"Source": "someone.else", "DetailType": "Other", "Detail": "{}"}])

    def received(self) -> list[dict[str, Any]]:
        """Every event the queue holds, as EventBridge delivered it (its JSON envelope)."""
        found: list[dict[str, Any]] = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def bus() -> Iterator[Bus]:
    with mock_aws():
        yield Bus()


def sample_report() -> SubdirReport:
    return SubdirReport(
        "linux-64",
        added=[f"p{number:02d}-1.0-h0_0.conda" for number in range(11)],
        removed=["gone-1.0-h0_0.conda"],
        rejected=[Rejection("bad-1.0-h0_0.conda", "not a zip file")],
        written=True,
    )


def test_events_reach_a_rule_on_the_default_bus_with_source_detail_type_and_detail(bus: Bus) -> None:
    events = subdir_events(MOTO_BUCKET, "org/dev", sample_report(), judged={"bad-1.0-h0_0.conda"})
    assert len(events) == 14  # two PutEvents requests

    unput = EventBridgeSink(EventBusEndpoint(region=REGION)).put(events)

    assert unput == 0
    received = bus.received()
    assert {event["source"] for event in received} == {EVENT_SOURCE}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in received:
        by_type.setdefault(event["detail-type"], []).append(event["detail"])
    assert {kind: len(details) for kind, details in by_type.items()} == {
        DetailType.PACKAGE_INDEXED: 11,
        DetailType.PACKAGE_REJECTED: 1,
        DetailType.PACKAGE_REMOVED: 1,
        DetailType.SUBDIR_PUBLISHED: 1,
    }
    (rejected,) = by_type[DetailType.PACKAGE_REJECTED]
    assert rejected == {
        "bucket": MOTO_BUCKET,
        "channel": "org/dev",
        "subdir": "linux-64",
        "file": "bad-1.0-h0_0.conda",
        "key": "org/dev/linux-64/bad-1.0-h0_0.conda",
        "reason": "not a zip file",
    }
    (published,) = by_type[DetailType.SUBDIR_PUBLISHED]
    assert published["counts"] == {"added": 11, "updated": 0, "removed": 1, "rejected": 1}
    assert "org/dev/linux-64/repodata.json" in published["keys"]


def test_the_sink_reaches_eventbridge_at_the_endpoint_the_environment_names(
    bus: Bus, moto_endpoint: str
) -> None:
    """moto's HTTP server serves the in-process backends: the rule made above sees what arrives over HTTP."""
    sink = event_sink(
        {
            EVENT_BUS_VARIABLE: DEFAULT_EVENT_BUS,
            "AWS_ENDPOINT_URL_EVENTS": moto_endpoint,
            "AWS_REGION": REGION,
        }
    )
    assert isinstance(sink, EventBridgeSink)
    assert sink.endpoint.url == moto_endpoint

    events = subdir_events(MOTO_BUCKET, "", SubdirReport("noarch", removed=["x-1-0.conda"]), judged=())
    assert sink.put(events) == 0

    (received,) = bus.received()
    assert (received["source"], received["detail-type"]) == (EVENT_SOURCE, DetailType.PACKAGE_REMOVED)
    assert received["detail"]["key"] == "noarch/x-1-0.conda"


def test_a_bus_that_does_not_exist_is_logged_and_counted_not_raised(bus: Bus) -> None:
    sink = EventBridgeSink(EventBusEndpoint(bus="no-such-bus", region=REGION))
    events = subdir_events(MOTO_BUCKET, "", SubdirReport("noarch", removed=["x-1-0.conda"]), judged=())

    assert sink.put(events) == 1
    assert bus.received() == []


def test_the_package_event_handler_wired_from_the_environment_puts_its_events_on_the_default_bus(
    bus: Bus, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=MOTO_BUCKET)
    name = "c-1.0-h0_0.conda"
    key = join_key("dev", "linux-64", name)
    s3.put_object(Bucket=MOTO_BUCKET, Key=key, Body=package_bytes(name, index_json("c", "1.0")))
    for variable, value in {
        "CHANNEL_BUCKET": MOTO_BUCKET,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        EVENT_BUS_VARIABLE: DEFAULT_EVENT_BUS,
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("CHANNEL_PREFIXES", raising=False)
    wiring = Wiring.from_environment(os.environ)
    handler = package_events.build_handler(wiring)

    result = handler(sqs_event(sqs_record(s3_message(MOTO_BUCKET, key))), LocalLambdaContext(timeout=60))

    assert result == {"batchItemFailures": []}
    received = {(event["detail-type"], event["detail"].get("file")) for event in bus.received()}
    assert (DetailType.PACKAGE_INDEXED, name) in received
    assert (DetailType.SUBDIR_PUBLISHED, None) in received
