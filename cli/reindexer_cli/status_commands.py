"""`reindexer status` and `reindexer wait`: what the indexer made of a channel, read from its private state
(GETs only: nothing is written), and a packager's wait for one upload to be indexed or rejected.

`wait` polls the subdir's state with conditional GETs (If-None-Match: the ETag last seen), so while nothing
changes each poll transfers no body (304 Not Modified); the state is parsed only when it changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from reindexer.clock import SYSTEM_CLOCK, Clock
from reindexer.contract import LEASE_FILE, PACKAGE_SUFFIXES, STATE_FILE, STORE_CONDITIONS_KEY
from reindexer.layout import KNOWN_SUBDIRS
from reindexer.lease import LeaseBody
from reindexer.patch_sources import effective_instructions
from reindexer.patches import PatchError
from reindexer.state import SubdirState
from reindexer.storage.local import LocalStore
from reindexer.store import NotFoundError, Store, StoreError, TransientStoreError
from reindexer.store_conditions import StoreConditions
from reindexer.subdir_ref import SubdirRef

from .targets import add_s3_options, open_store, parse_target

USAGE_ERROR = 2
TIMED_OUT = 124  # as timeout(1) exits
DEFAULT_TIMEOUT = 900.0
DEFAULT_INTERVAL = 1.0
MAX_INTERVAL = 10.0
LOCAL_FOLDER = "local folder: writes checked under a file lock"
NOT_PROBED = "not probed yet (the first conditional write probes it; `reindexer probe` does it now)"


def add_parsers(commands: Any) -> None:
    """`status` and `wait`, on the `reindexer` parser's subcommands."""
    status = commands.add_parser(
        "status",
        help="per subdir: packages indexed, last publication, rejected and yanked files, lease, store",
        description="Show what the indexer made of a channel: per subdir the packages indexed, when it was "
        "last published, the files rejected and yanked with their reasons, patch problems and a lease in "
        "force; and what the store honours of conditional requests. Reads only.",
    )
    status.add_argument("target", metavar="TARGET", help="s3://BUCKET/PREFIX or a local channel folder")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    add_s3_options(status)

    wait = commands.add_parser(
        "wait",
        help="wait until an upload is indexed (exit 0), rejected (exit 1) or the timeout passes (exit 124)",
        description="Wait for this exact upload (the file's ETag now) to be indexed: exit 0. Exit 1 with the "
        "reason on stderr when it was rejected, or when there is no such file; exit 124 when the timeout "
        "passes first. Polls the subdir's state with conditional GETs, backing off to one poll every "
        f"{MAX_INTERVAL:.0f} s.",
    )
    wait.add_argument(
        "file", metavar="TARGET/SUBDIR/FILE", help="e.g. s3://bucket/channel/linux-64/x-1-0.conda"
    )
    wait.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_TIMEOUT:.0f})",
    )
    wait.add_argument(
        "--interval",
        type=_positive_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"first pause between polls, doubled up to {MAX_INTERVAL:.0f} (default {DEFAULT_INTERVAL:.0f})",
    )
    add_s3_options(wait)


# --- status -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseStatus:
    holder: str  # "" for a lease written before holders were named, or one that does not parse
    owner: str
    expires_at: float
    in_force: bool


@dataclass
class SubdirStatus:
    name: str
    indexed: bool = False
    packages: int = 0
    published_at: float | None = None  # None: never, or by a version that did not keep the time
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    yanked: list[tuple[str, str]] = field(default_factory=list)  # (file, reason or "")
    patch_problems: list[str] = field(default_factory=list)
    lease: LeaseStatus | None = None
    problem: str = ""  # why the state could not be read

    def to_dict(self, now: float) -> dict[str, Any]:
        lease = None
        if self.lease is not None:
            lease = {
                **asdict(self.lease),
                "expires_at": _iso(self.lease.expires_at),
                "seconds_left": max(0.0, round(self.lease.expires_at - now, 1)),
            }
        return {
            "indexed": self.indexed,
            "packages": self.packages,
            "published_at": _iso(self.published_at) if self.published_at else None,
            "rejected": [{"file": name, "reason": reason} for name, reason in self.rejected],
            "yanked": [{"file": name, "reason": reason or None} for name, reason in self.yanked],
            "patch_problems": self.patch_problems,
            "lease": lease,
            "problem": self.problem or None,
        }


@dataclass
class ChannelStatus:
    target: str
    store: str  # what the store honours, in a line
    conditions: StoreConditions | None
    checked_at: float  # clock time the leases were judged at
    subdirs: list[SubdirStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "store": {
                "summary": self.store,
                "conditions": None if self.conditions is None else self.conditions.to_dict(),
            },
            "subdirs": {subdir.name: subdir.to_dict(self.checked_at) for subdir in self.subdirs},
        }


def channel_status(store: Store, channel: str, *, clock: Clock = SYSTEM_CLOCK) -> ChannelStatus:
    """One listing of the channel, then per subdir folder a GET of its state and of its lease, and (but for a
    local folder) a GET of the bucket's probed conditions."""
    folders = store.list_folder(channel).folders
    summary, conditions = store_conditions(store)
    now = clock.time()
    status = ChannelStatus(store.describe(channel), summary, conditions, now)
    for name in sorted(set(folders) & KNOWN_SUBDIRS):
        status.subdirs.append(subdir_status(SubdirRef(store, channel, name), now))
    return status


def store_conditions(store: Store) -> tuple[str, StoreConditions | None]:
    """A line saying what the store honours of conditional requests, and the probe's answer if any."""
    if isinstance(store, LocalStore):
        return LOCAL_FOLDER, None
    try:
        data, _ = store.read(STORE_CONDITIONS_KEY)
    except NotFoundError:
        return NOT_PROBED, None
    except StoreError as error:
        return f"cannot read the probe's answer: {error}", None
    conditions = StoreConditions.from_bytes(data)
    if conditions is None:
        return f"{store.describe(STORE_CONDITIONS_KEY)} is not a probe's answer (probed again)", None
    line = conditions.summary()
    if conditions.probed_at:
        line += f" (probed {_human_time(conditions.probed_at)})"
    if limitation := conditions.limitation():
        line += f"; it {limitation}"
    return line, conditions


def subdir_status(subdir: SubdirRef, now: float) -> SubdirStatus:
    status = SubdirStatus(subdir.name, lease=read_lease(subdir, now))
    try:
        data, _ = subdir.store.read(subdir.key(STATE_FILE))
    except NotFoundError:
        return status
    try:
        state = SubdirState.from_bytes(data)
    except ValueError as error:
        status.problem = str(error)
        return status
    status.indexed = True
    status.packages = len(state.packages)
    status.published_at = state.published_at or None
    status.rejected = [(name, rejected.reason) for name, rejected in sorted(state.rejected.items())]
    status.patch_problems = state.patch_problems()
    try:
        instructions = effective_instructions(state)
    except PatchError as error:  # written by us, so not expected: said rather than raised
        status.patch_problems.append(f"the instructions in force cannot be read: {error}")
    else:
        status.yanked = [(name, instructions.reasons.get(name, "")) for name in sorted(instructions.remove)]
    return status


def read_lease(subdir: SubdirRef, now: float) -> LeaseStatus | None:
    try:
        data, _ = subdir.store.read(subdir.key(LEASE_FILE))
    except NotFoundError:
        return None
    body = LeaseBody.parse(data)
    if body is None:  # the protocol counts it as expired
        return LeaseStatus(holder="", owner="", expires_at=0.0, in_force=False)
    return LeaseStatus(body.holder, body.owner, body.expires_at, body.expires_at > now)


def status_lines(status: ChannelStatus) -> list[str]:
    lines = [f"channel {status.target}", f"store: {status.store}"]
    if not status.subdirs:
        lines.append("no subdir folders: nothing indexed yet")
    for subdir in status.subdirs:
        lines.append(_subdir_headline(subdir))
        for name, reason in subdir.rejected:
            lines.append(f"    rejected {name}: {reason}")
        for name, reason in subdir.yanked:
            lines.append(f"    yanked {name}{': ' + reason if reason else ''}")
        for problem in subdir.patch_problems:
            lines.append(f"    patch problem: {problem}")
        if subdir.lease is not None:
            lines.append(f"    {_lease_line(subdir.lease, status.checked_at)}")
    return lines


def _subdir_headline(subdir: SubdirStatus) -> str:
    if subdir.problem:
        return f"  {subdir.name}: state unreadable ({subdir.problem}); the next run rebuilds it"
    if not subdir.indexed:
        return f"  {subdir.name}: never indexed"
    published = _human_time(subdir.published_at) if subdir.published_at else "at an unknown time"
    counts = [f"{subdir.packages} package{'' if subdir.packages == 1 else 's'} indexed"]
    if subdir.rejected:
        counts.append(f"{len(subdir.rejected)} rejected")
    if subdir.yanked:
        counts.append(f"{len(subdir.yanked)} yanked")
    return f"  {subdir.name}: {', '.join(counts)}; published {published}"


def _lease_line(lease: LeaseStatus, now: float) -> str:
    who = lease.holder or (f"owner {lease.owner[:12]}" if lease.owner else "an unreadable lease")
    if lease.in_force:
        left = lease.expires_at - now
        return f"lease: held by {who} until {_human_time(lease.expires_at)} ({left:.0f} s left)"
    if not lease.expires_at:
        return f"lease: none in force ({who}, counted as expired)"
    return f"lease: none in force (left by {who}, expired {_human_time(lease.expires_at)})"


def run_status(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> int:
    try:
        target = parse_target(args.target)
        status = channel_status(open_store(target, args), target.prefix, clock=clock)
    except (StoreError, ValueError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status.to_dict()))
    else:
        for line in status_lines(status):
            print(line)
    return 0


# --- wait ---------------------------------------------------------------------------------------------------

INDEXED = "indexed"
REJECTED = "rejected"
TIMED_OUT_OUTCOME = "timed out"


class NoSuchFileError(StoreError):
    """The file to wait for is not in the store."""


@dataclass(frozen=True)
class WaitResult:
    outcome: str  # INDEXED, REJECTED or TIMED_OUT_OUTCOME
    etag: str  # the upload waited for
    reason: str = ""  # why it was rejected; for a timeout, the last store error met (if any)
    polls: int = 0
    seconds: float = 0.0


def wait_for_upload(
    subdir: SubdirRef,
    filename: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    clock: Clock = SYSTEM_CLOCK,
) -> WaitResult:
    """Wait until the subdir's state holds `filename` with the ETag it has now (one HEAD), as indexed or as
    rejected, or until `timeout` seconds pass. The pause between polls starts at `interval` and doubles up
    to MAX_INTERVAL (or `interval`, if longer)."""
    store = subdir.store
    upload = store.head(subdir.key(filename))
    if upload is None:
        raise NoSuchFileError(f"no such file: {subdir.describe(filename)}")
    started = clock.monotonic()
    state_key = subdir.key(STATE_FILE)
    seen: str | None = None  # the ETag of the state as last read
    pause, longest = interval, max(MAX_INTERVAL, interval)
    polls, last_error = 0, ""
    while True:
        polls += 1
        try:
            changed = store.read_if_changed(state_key, seen)
        except NotFoundError:
            changed, seen = None, None  # not indexed yet
        except TransientStoreError as error:
            changed, last_error = None, str(error)
        if changed is not None:
            data, seen = changed
            verdict = _verdict(data, filename, upload.etag)
            if verdict is not None:
                outcome, reason = verdict
                return WaitResult(outcome, upload.etag, reason, polls, clock.monotonic() - started)
        left = started + timeout - clock.monotonic()
        if left <= 0:
            return WaitResult(TIMED_OUT_OUTCOME, upload.etag, last_error, polls, clock.monotonic() - started)
        clock.sleep(min(pause, left))
        pause = min(pause * 2, longest)


def _verdict(data: bytes, filename: str, etag: str) -> tuple[str, str] | None:
    try:
        state = SubdirState.from_bytes(data)
    except ValueError:
        return None  # the next run rebuilds it
    indexed = state.packages.get(filename)
    if indexed is not None and indexed.etag == etag:
        return INDEXED, ""
    rejected = state.rejected.get(filename)
    if rejected is not None and rejected.etag == etag:
        return REJECTED, rejected.reason
    return None


def wait_and_report(
    subdir: SubdirRef,
    filename: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """wait_for_upload, said in one line: 0 indexed (stdout), 1 rejected or missing, 124 timed out
    (stderr)."""
    where = subdir.describe(filename)
    try:
        result = wait_for_upload(subdir, filename, timeout=timeout, interval=interval, clock=clock)
    except StoreError as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    if result.outcome == INDEXED:
        print(f"indexed {where} (ETag {result.etag}) after {result.seconds:.0f} s")
        return 0
    if result.outcome == REJECTED:
        print(f"reindexer: rejected {where}: {result.reason}", file=sys.stderr)
        return 1
    last_error = f" (last error: {result.reason})" if result.reason else ""
    print(
        f"reindexer: timed out after {timeout:g} s: {where} (ETag {result.etag}) is neither indexed nor "
        f"rejected yet{last_error}",
        file=sys.stderr,
    )
    return TIMED_OUT


def run_wait(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> int:
    parts = args.file.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or parts[1] not in KNOWN_SUBDIRS or not parts[2].endswith(PACKAGE_SUFFIXES):
        print(
            f"reindexer: error: {args.file!r} is not TARGET/SUBDIR/FILE with a known conda subdir and a "
            f"package file ({' or '.join(PACKAGE_SUFFIXES)})",
            file=sys.stderr,
        )
        return USAGE_ERROR
    target_text, subdir_name, filename = parts
    try:
        target = parse_target(target_text)
        subdir = SubdirRef(open_store(target, args), target.prefix, subdir_name)
    except (StoreError, ValueError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    return wait_and_report(subdir, filename, timeout=args.timeout, interval=args.interval, clock=clock)


# --- helpers ------------------------------------------------------------------------------------------------


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number of seconds, not negative")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
