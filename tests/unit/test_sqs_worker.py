"""The local SQS worker: Lambda's event shape, deletion of handled messages, redelivery of failures."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from reindexer_cli.lambda_events import LocalLambdaContext
from reindexer_cli.sqs_worker import (
    failed_message_ids,
    poll_once,
    queue_arn,
    run_worker,
    to_lambda_event,
)
from tests.support.events import queue_counts

VISIBILITY = 1
RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    url: str = sqs.create_queue(QueueName="events", Attributes={"VisibilityTimeout": str(VISIBILITY)})[
        "QueueUrl"
    ]
    return url


class Recorder:
    """A handler that records each event and context and answers with a chosen response."""

    def __init__(self, respond: Any = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.respond = respond

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        return self.respond(event) if callable(self.respond) else self.respond


def send(sqs: Any, queue_url: str, *bodies: str) -> list[str]:
    return [sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"] for body in bodies]


def receive_all(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
    ).get("Messages", [])
    return messages


def test_event_has_the_shape_lambdas_sqs_event_source_delivers(sqs, queue_url):
    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody='{"hello": "world"}',
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "test"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    handler = Recorder()

    assert poll_once(sqs, queue_url, handler, wait_seconds=0) == 1

    [event] = handler.events
    [record] = event["Records"]
    assert set(event) == {"Records"}
    assert set(record) == RECORD_KEYS
    assert record["messageId"] == sent["MessageId"]
    assert record["body"] == '{"hello": "world"}'
    assert record["md5OfBody"] == hashlib.md5(b'{"hello": "world"}', usedforsecurity=False).hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue_arn(sqs, queue_url)
    assert record["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:")
    assert record["awsRegion"] == "us-east-1"
    assert record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"] == {
        "dataType": "String",
        "stringValue": "test",
        "stringListValues": [],
        "binaryListValues": [],
    }
    assert record["messageAttributes"]["blob"]["dataType"] == "Binary"
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="


def test_context_looks_like_lambdas_and_counts_down_from_the_timeout(sqs, queue_url):
    send(sqs, queue_url, "one")
    handler = Recorder()

    poll_once(sqs, queue_url, handler, wait_seconds=0, context_factory=lambda: LocalLambdaContext(timeout=30))

    [context] = handler.contexts
    assert context.function_name
    assert context.memory_limit_in_mb > 0
    assert context.invoked_function_arn.startswith("arn:aws:lambda:")
    assert context.aws_request_id
    assert 29_000 < context.get_remaining_time_in_millis() <= 30_000
    assert LocalLambdaContext(timeout=0).get_remaining_time_in_millis() == 0
    assert LocalLambdaContext().aws_request_id != LocalLambdaContext().aws_request_id


def test_one_poll_takes_at_most_ten_messages(sqs, queue_url):
    send(sqs, queue_url, *(f"message {n}" for n in range(13)))
    handler = Recorder()

    first = poll_once(sqs, queue_url, handler, wait_seconds=0)
    while sum(queue_counts(sqs, queue_url)):
        poll_once(sqs, queue_url, handler, wait_seconds=0)

    assert 1 <= first <= 10
    assert all(1 <= len(event["Records"]) <= 10 for event in handler.events)
    bodies = sorted(record["body"] for event in handler.events for record in event["Records"])
    assert bodies == sorted(f"message {n}" for n in range(13))


def test_empty_queue_returns_zero_without_calling_the_handler(sqs, queue_url):
    handler = Recorder()

    assert poll_once(sqs, queue_url, handler, wait_seconds=0) == 0
    assert handler.events == []


def test_successful_messages_are_deleted_and_failures_are_delivered_again(sqs, queue_url):
    ids = send(sqs, queue_url, "good", "bad", "also good")
    bad = ids[1]
    handler = Recorder(respond={"batchItemFailures": [{"itemIdentifier": bad}]})

    handled = 0
    while handled < 3:
        handled += poll_once(sqs, queue_url, handler, wait_seconds=0)

    assert queue_counts(sqs, queue_url) == (0, 1)
    time.sleep(VISIBILITY + 0.2)
    again = receive_all(sqs, queue_url)
    assert [message["MessageId"] for message in again] == [bad]
    assert again[0]["Body"] == "bad"
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_redelivered_failure_is_deleted_once_the_handler_succeeds(sqs, queue_url):
    [message_id] = send(sqs, queue_url, "flaky")
    attempts: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        record = event["Records"][0]
        attempts.append(record["attributes"]["ApproximateReceiveCount"])
        failures = [{"itemIdentifier": record["messageId"]}] if len(attempts) == 1 else []
        return {"batchItemFailures": failures}

    deadline = time.monotonic() + 10
    while len(attempts) < 2 and time.monotonic() < deadline:
        poll_once(sqs, queue_url, handler, wait_seconds=1)

    assert attempts == ["1", "2"]
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert message_id


def test_nothing_is_deleted_when_the_handler_raises(sqs, queue_url):
    ids = send(sqs, queue_url, "a", "b", "c")

    def explode(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("boom")

    invisible = 0
    while invisible < 3:
        with pytest.raises(RuntimeError, match="boom"):
            poll_once(sqs, queue_url, explode, wait_seconds=0)
        invisible = queue_counts(sqs, queue_url)[1]

    time.sleep(VISIBILITY + 0.2)
    back: list[dict[str, Any]] = []
    while len(back) < 3:
        batch = receive_all(sqs, queue_url)
        assert batch, "messages did not come back after the visibility timeout"
        back += batch
    assert sorted(message["MessageId"] for message in back) == sorted(ids)


def test_a_response_naming_an_unknown_message_fails_the_whole_batch(sqs, queue_url):
    send(sqs, queue_url, "x", "y")
    handler = Recorder(respond={"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]})

    received = 0
    while received < 2:
        received += poll_once(sqs, queue_url, handler, wait_seconds=0)

    assert queue_counts(sqs, queue_url) == (0, 2)


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "a"}]}, {"a"}),
        ({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "a"}]}, {"a"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, {"a", "b"}),
        ({"batchItemFailures": [{"identifier": "a"}]}, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b"}),
        ({"batchItemFailures": "a"}, {"a", "b"}),
        ("not an object", {"a", "b"}),
    ],
)
def test_partial_batch_responses_are_judged_as_lambda_judges_them(response, failed):
    assert failed_message_ids(response, {"a", "b"}) == failed


def test_to_lambda_event_of_no_attributes_gives_empty_mappings():
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "b", "MD5OfBody": "x"}

    [record] = to_lambda_event([message], "arn:aws:sqs:eu-west-1:1:q", "eu-west-1")["Records"]

    assert record["attributes"] == {}
    assert record["messageAttributes"] == {}
    assert record["awsRegion"] == "eu-west-1"


def test_worker_handles_messages_until_stopped_and_survives_a_failing_handler(sqs, queue_url):
    send(sqs, queue_url, "first")
    calls: list[str] = []
    seen = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> None:
        calls.append(event["Records"][0]["body"])
        if len(calls) == 1:
            raise RuntimeError("the first invocation fails")
        seen.set()

    stop = threading.Event()
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(run_worker(stop, sqs, queue_url, handler, wait_seconds=1))
    )
    worker.start()
    try:
        assert seen.wait(15), "the failed message was not handled again"
    finally:
        stop.set()
        worker.join(timeout=10)

    assert not worker.is_alive()
    assert calls == ["first", "first"]
    assert result == [1]  # the batch whose handler raised is not counted as handled
    assert queue_counts(sqs, queue_url) == (0, 0)
