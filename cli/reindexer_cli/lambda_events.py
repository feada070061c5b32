"""Lambda's invocation inputs outside Lambda: a context object and the events S3, SQS and EventBridge deliver.

One builder for the local worker, the tests and the benchmarks, in the shapes AWS documents (and the
fixtures under tests/events hold): an S3 notification record, the SQS record Lambda's event source wraps it
in, the EventBridge "Object Created/Deleted" event and the direct S3 event.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from aws_lambda_powertools.utilities.typing import LambdaContext

REGION = "us-east-1"
ACCOUNT = "123456789012"
DEFAULT_TIMEOUT = 900.0  # Lambda's longest function timeout
DEFAULT_QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:reindexer-package-events"


class LocalLambdaContext(LambdaContext):
    """Powertools' LambdaContext with values of our own: the time left runs down from `timeout` seconds by
    `clock` (time.monotonic, or a test's fake clock) from the context's creation."""

    def __init__(
        self,
        *,
        function_name: str = "reindexer-local",
        memory_limit_in_mb: int = 1024,
        timeout: float = DEFAULT_TIMEOUT,
        aws_request_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self._memory_limit_in_mb = memory_limit_in_mb
        self._aws_request_id = aws_request_id or str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = f"local/{self._aws_request_id}"
        self._clock = clock
        self._deadline = clock() + timeout

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]  # an instance's own clock
        return max(0, int((self._deadline - self._clock()) * 1000))


def encode_key(key: str) -> str:
    """A key as S3 writes it into notifications: URL-encoded, '+' for a space, '/' kept."""
    return quote_plus(key, safe="/")


def s3_record(
    bucket: str,
    key: str,
    *,
    removed: bool = False,
    size: int = 0,
    etag: str = "",
    event_time: datetime | None = None,
) -> dict[str, Any]:
    """One S3 event notification record (an SQS message body holds a list of them)."""
    when = event_time or datetime.now(UTC)
    obj: dict[str, Any] = {"key": encode_key(key), "sequencer": f"{time.time_ns():X}"}
    if not removed:
        obj.update(size=size, eTag=etag)
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "eventName": "ObjectRemoved:Delete" if removed else "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "LOCAL", "x-amz-id-2": "LOCAL"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "package-events",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "EXAMPLE"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_message(bucket: str, key: str, **details: Any) -> dict[str, Any]:
    """The body of the SQS message S3 sends for one object: {"Records": [one s3_record]}."""
    return {"Records": [s3_record(bucket, key, **details)]}


def direct_s3_event(bucket: str, *keys: str) -> dict[str, Any]:
    """The event S3 invokes a function with directly (no queue), one record per key."""
    return {"Records": [s3_record(bucket, key) for key in keys]}


def sqs_record(
    body: Mapping[str, Any] | str,
    *,
    message_id: str | None = None,
    receipt_handle: str | None = None,
    attributes: Mapping[str, str] | None = None,
    message_attributes: Mapping[str, Any] | None = None,
    source_arn: str = DEFAULT_QUEUE_ARN,
    region: str = REGION,
) -> dict[str, Any]:
    """One record of the event Lambda's SQS event source delivers."""
    text = body if isinstance(body, str) else json.dumps(body)
    sent = str(int(time.time() * 1000))
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": receipt_handle or f"local-{uuid.uuid4().hex}",
        "body": text,
        "attributes": dict(
            attributes
            if attributes is not None
            else {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": sent,
                "SenderId": "AIDAEXAMPLE",
                "ApproximateFirstReceiveTimestamp": sent,
            }
        ),
        "messageAttributes": dict(message_attributes or {}),
        "md5OfBody": hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": region,
    }


def sqs_event(*records: Mapping[str, Any]) -> dict[str, Any]:
    """A batch of SQS records, as the function is invoked with."""
    return {"Records": [dict(record) for record in records]}


def eventbridge_event(bucket: str, key: str, *, deleted: bool = False, encode: bool = True) -> dict[str, Any]:
    """An EventBridge "Object Created" / "Object Deleted" event from S3."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Deleted" if deleted else "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": encode_key(key) if encode else key, "sequencer": f"{time.time_ns():X}"}
            | ({} if deleted else {"size": 0, "etag": ""}),
            "request-id": "LOCAL",
            "requester": ACCOUNT,
            "reason": "DeleteObject" if deleted else "PutObject",
        },
    }
