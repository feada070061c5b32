"""S3 object notifications in the three shapes a deployment can route them: SQS batches of S3 event
messages (the deployed path), S3 events delivered directly, and EventBridge "Object Created/Deleted".

Only the bucket and key matter: the event is a hint, and the indexer looks at the object as it is now.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from .contract import PATCH_INSTRUCTIONS
from .layout import KNOWN_SUBDIRS, package_extension


class MalformedEventError(ValueError):
    """An event (or one SQS message) that is none of the shapes we accept; permanent, never retried."""


@dataclass(frozen=True)
class ObjectNotice:
    """One object that may have changed. `message_id` is the SQS message it came in, if any."""

    bucket: str
    key: str
    event_time: datetime | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class PackageLocation:
    channel: str
    subdir: str
    filename: str


@dataclass(frozen=True)
class ParsedEvent:
    notices: list[ObjectNotice]
    malformed: list[tuple[str | None, str]]  # (SQS message id, reason)
    from_sqs: bool


def parse_event(event: Mapping[str, Any]) -> ParsedEvent:
    """All object notices in an invocation event; malformed SQS messages are set aside, not fatal."""
    records = event.get("Records")
    if isinstance(records, list) and records and all(_is_sqs(record) for record in records):
        notices: list[ObjectNotice] = []
        malformed: list[tuple[str | None, str]] = []
        for record in records:
            message_id = record.get("messageId")
            try:
                body = json.loads(record.get("body") or "")
                if not isinstance(body, dict):
                    raise MalformedEventError("message body is not a JSON object")
                notices += [
                    ObjectNotice(n.bucket, n.key, n.event_time, message_id) for n in _notices_of(body)
                ]
            except ValueError as error:  # invalid JSON, or MalformedEventError
                malformed.append((message_id, str(error).splitlines()[0] if str(error) else "unreadable"))
        return ParsedEvent(notices, malformed, from_sqs=True)
    return ParsedEvent(list(_notices_of(event)), [], from_sqs=False)


def locate(key: str) -> PackageLocation | None:
    """Channel, subdir and file name of a package key `<channel>/<subdir>/<file>`, or of a subdir's patch
    instructions; None for other keys.

    The channel may be empty (the bucket root) or nested (`org/dev`); the subdir must be a known one. The
    channel is the key's text as it is, not checked: callers hold it to contract.channel_prefix_problem.
    """
    parts = key.split("/")
    indexed = package_extension(parts[-1]) is not None or parts[-1] == PATCH_INSTRUCTIONS
    if len(parts) < 2 or not indexed or parts[-2] not in KNOWN_SUBDIRS:
        return None
    channel_parts = parts[:-2]
    # `/noarch/x.conda` is not at the bucket root: its channel is one empty segment, which joined would
    # read as '' (the root). Keep the '/' so the channel check sees the empty segment.
    channel = "/" if channel_parts == [""] else "/".join(channel_parts)
    return PackageLocation(channel=channel, subdir=parts[-2], filename=parts[-1])


def _notices_of(message: Mapping[str, Any]) -> Iterator[ObjectNotice]:
    if message.get("Event") == "s3:TestEvent":
        return  # sent once when a notification configuration is saved
    if message.get("source") == "aws.s3" and "detail" in message:
        yield from _eventbridge_notices(message)
        return
    records = message.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("neither an S3 event, an EventBridge S3 event nor an SQS batch")
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            raise MalformedEventError("a record is not an S3 event record")
        try:
            bucket, raw_key = _names(record["s3"]["bucket"]["name"], record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            raise MalformedEventError("an S3 event record has no bucket name or object key") from None
        # S3 event messages URL-encode keys ('+' for spaces), and '+' is common in conda versions.
        yield ObjectNotice(bucket, unquote_plus(raw_key), _time(record.get("eventTime")))


def _eventbridge_notices(message: Mapping[str, Any]) -> Iterator[ObjectNotice]:
    if message.get("detail-type") not in ("Object Created", "Object Deleted"):
        return
    try:
        bucket, raw_key = _names(message["detail"]["bucket"]["name"], message["detail"]["object"]["key"])
    except (KeyError, TypeError):
        raise MalformedEventError("an EventBridge S3 event has no bucket name or object key") from None
    event_time = _time(message.get("time"))
    decoded = unquote_plus(raw_key)
    yield ObjectNotice(bucket, decoded, event_time)
    if decoded != raw_key:
        # Whether EventBridge encodes keys is not documented; the bucket will say which of the two exists.
        yield ObjectNotice(bucket, raw_key, event_time)


def _names(bucket: object, key: object) -> tuple[str, str]:
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise TypeError("bucket name and object key must be non-empty strings")
    return bucket, key


def _is_sqs(record: object) -> bool:
    return isinstance(record, dict) and record.get("eventSource") == "aws:sqs"


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
