"""Run a Lambda SQS handler outside Lambda: long-poll a queue, hand each batch over in the event shape
Lambda's SQS event source delivers, and delete the messages the handler did not report as failed."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .lambda_events import LocalLambdaContext, sqs_event, sqs_record

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
ContextFactory = Callable[[], Any]

MAX_BATCH = 10  # SQS hands out at most 10 messages per ReceiveMessage
DEFAULT_WAIT_SECONDS = 20  # the longest long poll SQS allows
ERROR_BACKOFF = 1.0
MAX_ERROR_BACKOFF = 30.0


def queue_arn(sqs: Any, queue_url: str) -> str:
    """The ARN of a queue, as Lambda puts it in every record's eventSourceARN."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return str(attributes["QueueArn"])


def to_lambda_event(messages: list[Mapping[str, Any]], source_arn: str, region: str) -> dict[str, Any]:
    """ReceiveMessage's messages as the event Lambda's SQS event source would invoke the function with."""
    return sqs_event(
        *(
            sqs_record(
                message.get("Body", ""),
                message_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                attributes=message.get("Attributes", {}),
                message_attributes={
                    name: _message_attribute(value)
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                source_arn=source_arn,
                region=region,
            )
            for message in messages
        )
    )


def failed_message_ids(response: Any, message_ids: set[str]) -> set[str]:
    """Message ids a handler's response reports as failed, judged as Lambda judges a partial batch response.

    No response, or none or an empty list of batchItemFailures, means every message succeeded; a response
    that is not an object, or names an item that is empty or not in the batch, fails the whole batch.
    """
    if response is None:
        return set()
    if not isinstance(response, Mapping):
        return set(message_ids)
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


def poll_once(
    sqs: Any,
    queue_url: str,
    handler: Handler,
    *,
    source_arn: str | None = None,
    wait_seconds: int = DEFAULT_WAIT_SECONDS,
    max_messages: int = MAX_BATCH,
    context_factory: ContextFactory = LocalLambdaContext,
) -> int:
    """Receive one batch (long poll), run `handler(event, context)` on it, delete the messages it handled.

    Returns the number of messages received (0 when the poll timed out). Messages listed in the response's
    batchItemFailures stay on the queue and reappear after the visibility timeout; when the handler
    raises, none is deleted and the exception propagates.
    """
    response = sqs.receive_message(
        QueueUrl=queue_url,
        WaitTimeSeconds=wait_seconds,
        MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    messages: list[Mapping[str, Any]] = response.get("Messages", [])
    if not messages:
        return 0
    arn = source_arn or queue_arn(sqs, queue_url)
    event = to_lambda_event(messages, arn, _region_of(arn, sqs))
    result = handler(event, context_factory())
    failed = failed_message_ids(result, {str(message["MessageId"]) for message in messages})
    done = [message for message in messages if message["MessageId"] not in failed]
    _delete(sqs, queue_url, done)
    if failed:
        logger.info("%d of %d messages failed and will be delivered again", len(failed), len(messages))
    return len(messages)


def run_worker(
    stop_event: threading.Event,
    sqs: Any,
    queue_url: str,
    handler: Handler,
    *,
    wait_seconds: int = DEFAULT_WAIT_SECONDS,
    max_messages: int = MAX_BATCH,
    context_factory: ContextFactory = LocalLambdaContext,
) -> int:
    """Poll and handle batches until `stop_event` is set; return how many messages the handler returned on
    (batches whose handler raised are not counted: they come back after the visibility timeout).

    A failing handler or queue is logged and retried with backoff, as Lambda keeps polling after errors.
    Setting the event takes effect after the current long poll (at most `wait_seconds`).
    """
    handled = 0
    source_arn: str | None = None
    backoff = ERROR_BACKOFF
    while not stop_event.is_set():
        try:
            source_arn = source_arn or queue_arn(sqs, queue_url)
            handled += poll_once(
                sqs,
                queue_url,
                handler,
                source_arn=source_arn,
                wait_seconds=wait_seconds,
                max_messages=max_messages,
                context_factory=context_factory,
            )
            backoff = ERROR_BACKOFF
        except Exception:
            logger.exception("polling %s failed; retrying in %.0f s", queue_url, backoff)
            stop_event.wait(backoff)
            backoff = min(backoff * 2, MAX_ERROR_BACKOFF)
    return handled


def _delete(sqs: Any, queue_url: str, messages: list[Mapping[str, Any]]) -> None:
    for start in range(0, len(messages), MAX_BATCH):
        chunk = messages[start : start + MAX_BATCH]
        response = sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(number), "ReceiptHandle": m["ReceiptHandle"]} for number, m in enumerate(chunk)
            ],
        )
        for failure in response.get("Failed", []):
            # A receipt handle goes stale when the batch outlived the visibility timeout: the message was
            # delivered again meanwhile, and that delivery will be handled (idempotently) and deleted.
            logger.warning("could not delete a message: %s", failure.get("Message") or failure.get("Code"))


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute value (StringValue, BinaryValue as bytes) -> Lambda's camelCase, base64 binaries."""
    converted: dict[str, Any] = {
        "dataType": value.get("DataType", "String"),
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [_base64(item) for item in value.get("BinaryListValues", [])],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = _base64(value["BinaryValue"])
    return converted


def _base64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _region_of(arn: str, sqs: Any) -> str:
    parts = arn.split(":")
    if len(parts) > 3 and parts[3]:
        return parts[3]
    return str(sqs.meta.region_name)
