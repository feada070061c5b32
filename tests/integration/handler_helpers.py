"""Building Lambda events from the fixtures in tests/events, and fake Lambda contexts."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def encode_key(key: str) -> str:
    """A key as S3 writes it into event messages: URL-encoded, '+' for a space ('/' kept, as S3 does)."""
    return quote_plus(key, safe="/")


def s3_record(bucket: str, key: str, *, removed: bool = False) -> dict[str, Any]:
    """One S3 event record (the shape of an SQS message body's records and of direct S3 events)."""
    if removed:
        body = json.loads(load_event("sqs_s3_object_removed.json")["Records"][0]["body"])
        record: dict[str, Any] = body["Records"][0]
    else:
        record = copy.deepcopy(load_event("s3_direct_event.json")["Records"][0])
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"]["key"] = encode_key(key)
    return record


def s3_message(bucket: str, key: str, *, removed: bool = False) -> dict[str, Any]:
    """The body of one SQS message from an S3 event notification."""
    return {"Records": [s3_record(bucket, key, removed=removed)]}


def sqs_message(body: dict[str, Any] | str, message_id: str | None = None) -> dict[str, Any]:
    message = copy.deepcopy(load_event("sqs_s3_object_created.json")["Records"][0])
    text = body if isinstance(body, str) else json.dumps(body)
    message["messageId"] = message_id or str(uuid.uuid4())
    message["body"] = text
    message["md5OfBody"] = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    return message


def sqs_batch(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(messages)}


def direct_s3_event(bucket: str, *keys: str) -> dict[str, Any]:
    return {"Records": [s3_record(bucket, key) for key in keys]}


def eventbridge_event(bucket: str, key: str, *, deleted: bool = False, encode: bool = True) -> dict[str, Any]:
    event = load_event("eventbridge_object_deleted.json" if deleted else "eventbridge_object_created.json")
    event["detail"]["bucket"]["name"] = bucket
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["object"]["key"] = encode_key(key) if encode else key
    return event


@dataclass
class FakeContext:
    """What the handlers and Powertools read from a LambdaContext. Its time stands still unless a test
    moves it with `advance`."""

    remaining_millis: int = 600_000
    function_name: str = "reindexer-handler"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:reindexer-handler"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis

    def advance(self, seconds: float) -> None:
        self.remaining_millis = max(0, self.remaining_millis - round(seconds * 1000))

    @property
    def seconds_left(self) -> float:
        return self.remaining_millis / 1000


@dataclass
class RunningContext(FakeContext):
    """A context whose remaining time runs down with the wall clock from its creation, as Lambda's does."""

    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.remaining_millis - round((time.monotonic() - self.started) * 1000))
