"""Small helpers every test layer uses: streaming zstd decompression, digests, SQS queue depth."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import zstandard


def zstd_decompress(data: bytes) -> bytes:
    """Decompress with a streaming reader, as clients must (a frame need not record its content size)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    output = bytearray()
    while chunk := reader.read(65536):
        output += chunk
    return bytes(output)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def queue_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """Messages waiting and messages in flight on a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
