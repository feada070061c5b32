"""What a run reports: per subdir (added, updated, removed, unchanged, rejected, failed) and per channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Reasons are kept in the state and shown in logs and reports: whatever a package holds, they stay short.
MAX_REASON_LENGTH = 300


def one_line_reason(text: str) -> str:
    """`text` as one line of printable characters, at most MAX_REASON_LENGTH long."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split()) or "no reason given"
    return line if len(line) <= MAX_REASON_LENGTH else f"{line[: MAX_REASON_LENGTH - 1]}…"


@dataclass(frozen=True)
class Rejection:
    file: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason}


@dataclass
class ChannelFilesReport:
    """What making the channel files (channeldata.json, index.html) again did: the files written (none when
    their bytes were already there), or why they could not be made; the subdirs' publications stand.
    `retry`: the store refused (busy, conflicting, unavailable), so trying again later may work."""

    written: list[str] = field(default_factory=list)
    error: str | None = None
    retry: bool = False
    attempts: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "error": self.error,
            "retry": self.retry,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SubdirReport:
    """What one subdir run did.

    `failed` files could not be fetched this time and are retried by the next run; `deferred` files were
    left for the next run because the time budget ran out (then `complete` is False).
    """

    subdir: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    failed: list[Rejection] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    written: bool = False
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0
    # Why patch_instructions.json or the patch package is not (wholly) applied; superseded shards deleted.
    patch_problems: list[str] = field(default_factory=list)
    shards_deleted: int = 0
    # The files among `rejected` whose rejection this run decided (new, or for another upload or reason).
    rejected_now: list[str] = field(default_factory=list)
    # The event path makes the channel files again after a publication (None: it published nothing).
    channel_files: ChannelFilesReport | None = None
    # The ETag of the subdir's state as a run found it when it had nothing to write (None otherwise): what
    # the channel files were made from, if they are current.
    state_etag: str | None = None
    # The noarch index an event-path update of a new channel published first (every channel has one).
    noarch_first: SubdirReport | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and not self.deferred

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "rejected": [rejection.to_dict() for rejection in self.rejected],
            "failed": [failure.to_dict() for failure in self.failed],
            "deferred": self.deferred,
            "complete": self.complete,
            "written": self.written,
            "error": self.error,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
            "patch_problems": self.patch_problems,
            "shards_deleted": self.shards_deleted,
            "channel_files": self.channel_files.to_dict() if self.channel_files else None,
        }


@dataclass
class ChannelReport:
    target: str
    dry_run: bool
    subdirs: dict[str, SubdirReport] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # A full run makes the channel files again when a subdir was published or they are not current.
    channel_files: ChannelFilesReport | None = None

    @property
    def ok(self) -> bool:
        return all(report.error is None for report in self.subdirs.values())

    @property
    def complete(self) -> bool:
        """True when every subdir was fully indexed; False asks the caller to run again to continue."""
        return not self.skipped and all(report.complete for report in self.subdirs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "complete": self.complete,
            "subdirs": {name: report.to_dict() for name, report in sorted(self.subdirs.items())},
            "skipped_subdirs": self.skipped,
            "rejected": [rejection.to_dict() for rejection in self.rejected],
            "requests": dict(sorted(self.requests.items())),
            "seconds": round(self.seconds, 3),
            "channel_files": self.channel_files.to_dict() if self.channel_files else None,
        }
