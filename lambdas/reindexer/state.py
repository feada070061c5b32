"""The per-subdir state clients never read: what each indexed file looked like, and what was published.

It is the indexer's memory between runs: the ETag and size of every package (so only new or changed ones
are read), its record, the files that were refused and why, the ETags of the outputs as written (so a
torn or foreign write is noticed and repaired) and the settings they were written with.

Stored as zstd of one JSON header line followed by one `filename<TAB>etag<TAB>size<TAB>record-json` line
per package, with a fifth column `<TAB>about-json` when the package's info/about.json gave any fields:
records are kept as text, so loading and saving 100,000 of them parses none. JSON texts never hold a raw tab
or newline. Format 2 (four columns) is read as ever; format 3 marks states that may hold the fifth column,
so an older indexer refuses (and rebuilds) one rather than read `record<TAB>about` as a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import zstandard

from .records import AboutJson, RecordJson
from .reports import one_line_reason

STATE_FORMAT = 3
READABLE_FORMATS = (2, STATE_FORMAT)
# Level 1 rather than 3: 5-11 % smaller (its 7-byte minimum match skips short matches inside digests and
# ETags) in 37-50 % of the CPU (a 55 MB state: 0.15 s instead of 0.41 s).
STATE_ZST_LEVEL = 1
_SEPARATORS = ("\t", "\n")


@dataclass(frozen=True)
class IndexedPackage:
    etag: str
    size: int
    record: RecordJson
    # The package's info/about.json fields (reindexer.records.encode_about); "" when it gave none or was
    # indexed before about.json was read (it is read again only when the package changes).
    about: AboutJson = ""


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
    # The record schema (reindexer.record_schema.RECORD_SCHEMA) the records were last checked under.
    schema: int = 0
    # The patch instructions in force, as canonical JSON ("" for none), from each source: the subdir's
    # patch_instructions.json (with the ETag it was read at) and the patch package ("file@etag" of it). A
    # source that fails to parse or apply keeps its last good instructions in force, and says why here.
    patch_file: str = ""
    patch_file_etag: str = ""
    patch_package: str = ""
    patch_package_instructions: str = ""
    patch_file_problem: str = ""
    patch_package_problem: str = ""
    # Shards the shard index no longer names, by digest: since when (clock time). Deleted after retention.
    orphans: dict[str, float] = field(default_factory=dict)
    # When the outputs were last published (clock time); 0.0 when unknown (states written before it was kept).
    published_at: float = 0.0

    def records(self) -> dict[str, RecordJson]:
        return {filename: package.record for filename, package in self.packages.items()}

    def patch_problems(self) -> list[str]:
        return [problem for problem in (self.patch_file_problem, self.patch_package_problem) if problem]

    def to_bytes(self) -> bytes:
        header = {
            "format": STATE_FORMAT,
            "schema": self.schema,
            "settings": self.settings,
            "outputs": self.outputs,
            "shards": self.shards,
            "rejected": {
                name: {"etag": rejected.etag, "size": rejected.size, "reason": rejected.reason}
                for name, rejected in sorted(self.rejected.items())
            },
            "patch_file": self.patch_file,
            "patch_file_etag": self.patch_file_etag,
            "patch_package": self.patch_package,
            "patch_package_instructions": self.patch_package_instructions,
            "patch_file_problem": self.patch_file_problem,
            "patch_package_problem": self.patch_package_problem,
            "orphans": dict(sorted(self.orphans.items())),
            "published_at": self.published_at,
        }
        lines = [json.dumps(header, ensure_ascii=False, allow_nan=False, separators=(",", ":"))]
        for filename, package in sorted(self.packages.items()):
            if any(separator in filename + package.etag + package.about for separator in _SEPARATORS):
                raise ValueError(f"cannot store {filename!r} with ETag {package.etag!r}: tab or newline")
            line = f"{filename}\t{package.etag}\t{package.size}\t{package.record}"
            lines.append(f"{line}\t{package.about}" if package.about else line)
        return zstandard.ZstdCompressor(level=STATE_ZST_LEVEL).compress("\n".join(lines).encode())

    @classmethod
    def from_bytes(cls, data: bytes) -> SubdirState:
        """Parse a stored state; ValueError when it is not one this version understands."""
        try:
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                lines = reader.read().decode().split("\n")
            header: dict[str, Any] = json.loads(lines[0])
            if header.get("format") not in READABLE_FORMATS:
                raise ValueError(f"unsupported state format {header.get('format')!r}")
            packages = {}
            for line in lines[1:]:
                filename, etag, size, record, *about = line.split("\t", 4)
                packages[filename] = IndexedPackage(etag, int(size), record, *about)
            return cls(
                packages=packages,
                rejected={
                    # Reasons stored by older versions could be as long as the value they quoted.
                    name: RejectedFile(entry["etag"], entry["size"], one_line_reason(str(entry["reason"])))
                    for name, entry in header["rejected"].items()
                },
                outputs=dict(header["outputs"]),
                shards=dict(header["shards"]),
                settings=str(header["settings"]),
                schema=int(header.get("schema", 0)),
                # Absent from states written before patches and shard clean-up existed.
                patch_file=str(header.get("patch_file", "")),
                patch_file_etag=str(header.get("patch_file_etag", "")),
                patch_package=str(header.get("patch_package", "")),
                patch_package_instructions=str(header.get("patch_package_instructions", "")),
                patch_file_problem=str(header.get("patch_file_problem", "")),
                patch_package_problem=str(header.get("patch_package_problem", "")),
                orphans={str(digest): float(since) for digest, since in header.get("orphans", {}).items()},
                published_at=float(header.get("published_at", 0.0)),
            )
        except (zstandard.ZstdError, ValueError, KeyError, TypeError, AttributeError) as error:
            # ValueError covers malformed JSON, undecodable bytes and lines that split in fewer than four.
            raise ValueError(f"unreadable state: {error}") from None
