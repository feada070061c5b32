"""The per-subdir state clients never read: what each indexed file looked like, and what was published.

It is the indexer's memory between runs: the ETag and size of every package (so only new or changed ones
are read), its record, the files that were refused and why, the ETags of the outputs as written (so a
torn or foreign write is noticed and repaired) and the settings they were written with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import zstandard

from .records import Record

STATE_FORMAT = 1


@dataclass(frozen=True)
class IndexedPackage:
    etag: str
    size: int
    record: Record


@dataclass(frozen=True)
class RejectedFile:
    etag: str
    size: int
    reason: str


@dataclass
class SubdirState:
    packages: dict[str, IndexedPackage] = field(default_factory=dict)
    rejected: dict[str, RejectedFile] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    shards: dict[str, str] = field(default_factory=dict)
    settings: str = ""

    def records(self) -> dict[str, Record]:
        return {filename: package.record for filename, package in self.packages.items()}

    def to_bytes(self) -> bytes:
        document = {
            "format": STATE_FORMAT,
            "settings": self.settings,
            "outputs": self.outputs,
            "shards": self.shards,
            "packages": {
                name: {"etag": p.etag, "size": p.size, "record": p.record}
                for name, p in sorted(self.packages.items())
            },
            "rejected": {
                name: {"etag": r.etag, "size": r.size, "reason": r.reason}
                for name, r in sorted(self.rejected.items())
            },
        }
        raw = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return zstandard.ZstdCompressor(level=3).compress(raw)

    @classmethod
    def from_bytes(cls, data: bytes) -> SubdirState:
        """Parse a stored state; ValueError when it is not one this version understands."""
        try:
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                document: dict[str, Any] = json.loads(reader.read())
            if document.get("format") != STATE_FORMAT:
                raise ValueError(f"unsupported state format {document.get('format')!r}")
            return cls(
                packages={
                    name: IndexedPackage(entry["etag"], entry["size"], entry["record"])
                    for name, entry in document["packages"].items()
                },
                rejected={
                    name: RejectedFile(entry["etag"], entry["size"], entry["reason"])
                    for name, entry in document["rejected"].items()
                },
                outputs=dict(document["outputs"]),
                shards=dict(document["shards"]),
                settings=str(document["settings"]),
            )
        except (
            zstandard.ZstdError,
            json.JSONDecodeError,
            UnicodeDecodeError,
            KeyError,
            TypeError,
            AttributeError,
        ) as e:
            raise ValueError(f"unreadable state: {e}") from None
