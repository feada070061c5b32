"""Small helpers every test layer uses: streaming zstd decompression, digests."""

from __future__ import annotations

import hashlib
import io

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
