"""Lambda inputs for tests: the recorded event fixtures in tests/events, and an SQS queue's depth.
Events built from parts and the Lambda context are reindexer_cli.lambda_events (shared with worker, bench)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of the fixture tests/events/<name> (callers may change it)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def queue_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """Messages waiting and messages in flight on a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
