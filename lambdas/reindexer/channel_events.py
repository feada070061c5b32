"""Events for automation: what a subdir run did to a channel, as events on an EventBridge bus.

Four detail types (reindexer.contract.DetailType), all with `source` EVENT_SOURCE and a detail naming the
bucket, channel and subdir:

- `Package Indexed`: a file added to or updated in the index (`file`, `key`, `change`: added | updated);
- `Package Rejected`: a file this run refused, with its one-line `reason`;
- `Package Removed`: a file that left the index (deleted, or replaced by a file that was refused);
- `Subdir Published`: the subdir's outputs were written (`counts` of this run and the published `keys`).

Building them from a SubdirReport is pure (`subdir_events`). A report lists every rejection its state
holds, old ones included, so the caller says which files this run judged: only their rejections are news.

Sinks put events somewhere, best effort (`EventSink.put` never raises and answers how many it could not put):
EventBridgeSink (PutEvents in batches, one retry of failed entries), PrintingSink (one line per event, for
`reindexer local`), CollectingSink (a list, for tests) and DiscardingSink (no bus configured).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .clock import SYSTEM_CLOCK, Clock
from .contract import (
    DEFAULT_EVENT_BUS,
    EVENT_SOURCE,
    PUBLISHED_FILES,
    RUN_EXPORTS_JSON,
    DetailType,
    join_key,
)
from .reports import SubdirReport, one_line_reason

logger = logging.getLogger(__name__)

# What every publication of a subdir writes: the keys a Subdir Published event names. (The unpatched repodata
# is written beside them while patch instructions are in force; a report does not say when.)
ALWAYS_PUBLISHED = (*PUBLISHED_FILES, RUN_EXPORTS_JSON)
# PutEvents takes at most 10 entries, and a request's entries must add up to less than 256 KB.
MAX_BATCH_ENTRIES = 10
MAX_REQUEST_BYTES = 256 * 1024
# The bus answers within milliseconds; a network that cannot reach it must not hold an invocation for long.
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
# botocore's own attempts at one request (throttling, 5xx, connection errors), the first one included.
MAX_ATTEMPTS = 2
# Between the first attempt and the retry of the entries the bus refused.
RETRY_PAUSE_SECONDS = 0.1
# The error code recorded for events no request was made for (no time left, or the bus unreachable).
NOT_SENT = "NotSent"
TOO_LARGE = "EntryTooLarge"


@dataclass(frozen=True)
class ChannelEvent:
    """One event: its detail type and its detail (JSON-serializable)."""

    detail_type: str
    detail: Mapping[str, Any]

    def entry(self, bus: str) -> dict[str, str]:
        """The event as a PutEvents request entry for `bus` (a name or an ARN)."""
        return {
            "Source": EVENT_SOURCE,
            "DetailType": self.detail_type,
            "Detail": json.dumps(self.detail, separators=(",", ":")),
            "EventBusName": bus,
        }

    def line(self) -> str:
        """`<detail-type> <channel>/<subdir>/<file>[: reason]`, one line whatever the names hold."""
        detail = self.detail
        where = join_key(detail["channel"], detail["subdir"], detail.get("file") or "")
        text = f"{self.detail_type} {_printable(where)}"
        if "reason" in detail:
            text += f": {detail['reason']}"
        elif "counts" in detail:
            text += ": " + ", ".join(f"{value} {name}" for name, value in detail["counts"].items())
        return text


def entry_size(entry: Mapping[str, Any]) -> int:
    """An entry's size as EventBridge counts it against its limits: the UTF-8 bytes of the source, detail
    type, detail and resources, and 14 bytes for a time."""
    size = 14 if "Time" in entry else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(entry.get(name, "").encode())
    return size + sum(len(resource.encode()) for resource in entry.get("Resources", ()))


def subdir_events(
    bucket: str, channel: str, report: SubdirReport, *, judged: Collection[str]
) -> list[ChannelEvent]:
    """The events of one subdir run, in the order files then publication; none for a run that failed (it
    committed nothing).

    `judged`: the files this run gave a verdict on (on the event path, the batch's files). The report's
    other rejections are older ones its state still holds, and make no event.
    """
    if report.error is not None:
        return []
    where = {"bucket": bucket, "channel": channel, "subdir": report.subdir}

    def about(name: str, **more: str) -> dict[str, Any]:
        return {**where, "file": name, "key": join_key(channel, report.subdir, name), **more}

    rejected = [rejection for rejection in report.rejected if rejection.file in judged]
    events = [
        *(ChannelEvent(DetailType.PACKAGE_INDEXED, about(name, change="added")) for name in report.added),
        *(ChannelEvent(DetailType.PACKAGE_INDEXED, about(name, change="updated")) for name in report.updated),
        *(
            ChannelEvent(DetailType.PACKAGE_REJECTED, about(r.file, reason=one_line_reason(r.reason)))
            for r in rejected
        ),
        *(ChannelEvent(DetailType.PACKAGE_REMOVED, about(name)) for name in report.removed),
    ]
    if report.written:
        counts = {
            "added": len(report.added),
            "updated": len(report.updated),
            "removed": len(report.removed),
            "rejected": len(rejected),
        }
        keys = [join_key(channel, report.subdir, name) for name in ALWAYS_PUBLISHED]
        events.append(ChannelEvent(DetailType.SUBDIR_PUBLISHED, {**where, "counts": counts, "keys": keys}))
    return events


def _printable(text: str) -> str:
    """`text` with any character that would break a line (or a terminal) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- sinks --------------------------------------------------------------------------------------------------


class EventSink(Protocol):
    def put(self, events: Sequence[ChannelEvent], *, seconds: float | None = None) -> int:
        """Put `events`, spending at most about `seconds` (None: no limit); answer how many could not be put.
        Never raises: events are best effort and must not fail the indexing they report."""
        ...


class DiscardingSink:
    """No bus: the events go nowhere (the wiring of tests and tools that configure none)."""

    def put(self, events: Sequence[ChannelEvent], *, seconds: float | None = None) -> int:
        return 0


@dataclass
class CollectingSink:
    """The events, appended to a list (tests)."""

    events: list[ChannelEvent] = field(default_factory=list)

    def put(self, events: Sequence[ChannelEvent], *, seconds: float | None = None) -> int:
        self.events.extend(events)
        return 0


class PrintingSink:
    """One line per event (ChannelEvent.line), written whole even from several threads: `reindexer local`."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or _print_line
        self._lock = threading.Lock()

    def put(self, events: Sequence[ChannelEvent], *, seconds: float | None = None) -> int:
        with self._lock:
            for event in events:
                self._write(event.line())
        return 0


def _print_line(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class EventBusEndpoint:
    """Which bus, and how to reach EventBridge: AWS in `region` (url None) or another endpoint."""

    bus: str = DEFAULT_EVENT_BUS
    url: str | None = None
    region: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], bus: str = DEFAULT_EVENT_BUS) -> EventBusEndpoint:
        """AWS_ENDPOINT_URL_EVENTS / AWS_ENDPOINT_URL (unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS) as the AWS
        SDKs read them, and AWS_REGION (Lambda's own) or AWS_DEFAULT_REGION."""
        url = None
        if environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
            url = environ.get("AWS_ENDPOINT_URL_EVENTS") or environ.get("AWS_ENDPOINT_URL") or None
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None
        return cls(bus=bus, url=url, region=region)


class EventBridgeSink:
    """Puts events on an EventBridge bus with PutEvents: batches of at most MAX_BATCH_ENTRIES entries and
    MAX_REQUEST_BYTES, sent one after the other while time is left.

    Entries the bus refuses (FailedEntryCount) are sent once more; a request that fails as a whole (botocore
    has retried it already) stops the put, since the next ones would fail alike. Any failure makes one log
    line with the error codes, of the first attempt and of what is not put in the end; the answer counts the
    latter. The botocore client is created at
    the first put, so importing and wiring the handlers loads no AWS SDK.
    """

    def __init__(
        self, endpoint: EventBusEndpoint, *, client: Any = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.endpoint = endpoint
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._create_client()
            return self._client

    def _create_client(self) -> Any:
        import botocore.session
        from botocore.config import Config

        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        )
        return botocore.session.Session().create_client(
            "events", region_name=self.endpoint.region, endpoint_url=self.endpoint.url, config=config
        )

    def put(self, events: Sequence[ChannelEvent], *, seconds: float | None = None) -> int:
        if not events:
            return 0
        deadline = None if seconds is None else self._clock.monotonic() + max(0.0, seconds)
        first = self._send([event.entry(self.endpoint.bus) for event in events], deadline)
        failed = [*first.lost, *(code for _, code in first.refused)]
        if not failed:
            return 0
        unput, error, retried = failed, first.error, 0
        if first.refused and first.error is None:
            self._clock.sleep(RETRY_PAUSE_SECONDS)  # most refusals are throttling: give the bus a moment
            again = self._send([entry for entry, _ in first.refused], deadline)
            unput = [*first.lost, *again.lost, *(code for _, code in again.refused)]
            error, retried = again.error, len(first.refused)
        logger.warning(
            "events on the bus %s: %d of %d failed (%s); %d retried; %d not put (%s)%s",
            self.endpoint.bus,
            len(failed),
            len(events),
            _codes(failed),
            retried,
            len(unput),
            _codes(unput),
            f"; {error}" if error else "",
        )
        return len(unput)

    def _send(self, entries: list[dict[str, str]], deadline: float | None) -> _Sent:
        """Send `entries` batch by batch until they are all sent, time is up, or a request fails."""
        sent = _Sent()
        batches = list(_batches(entries, sent.lost))
        for number, batch in enumerate(batches):
            if deadline is not None and self._clock.monotonic() >= deadline:
                sent.lost += [NOT_SENT for later in batches[number:] for _ in later]
                break
            try:
                response = self.client.put_events(Entries=batch)
            except Exception as error:  # best effort: no failure to put an event may reach the handler
                code = _error_code(error)
                sent.error = f"{code}: {one_line_reason(str(error))}"
                sent.lost += [code] * len(batch)
                sent.lost += [NOT_SENT for later in batches[number + 1 :] for _ in later]
                break
            if response.get("FailedEntryCount"):
                # The answer's entries are in the request's order; an ErrorCode marks one not put.
                for entry, result in zip(batch, response.get("Entries", ()), strict=False):
                    if result.get("ErrorCode"):
                        sent.refused.append((entry, str(result["ErrorCode"])))
        return sent


@dataclass
class _Sent:
    """What one pass over entries could not put: entries the bus refused (with the error code), the codes
    of entries not sent (too large, no time left, the request failed) and the failed request's error."""

    refused: list[tuple[dict[str, str], str]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    error: str | None = None


def _batches(entries: list[dict[str, str]], lost: list[str]) -> Iterator[list[dict[str, str]]]:
    """`entries` in PutEvents-sized batches; an entry too large for any request is counted in `lost`."""
    batch: list[dict[str, str]] = []
    size = 0
    for entry in entries:
        entry_bytes = entry_size(entry)
        if entry_bytes >= MAX_REQUEST_BYTES:
            lost.append(TOO_LARGE)
            continue
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + entry_bytes >= MAX_REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_bytes
    if batch:
        yield batch


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


def _codes(codes: list[str]) -> str:
    """`ThrottlingException x3, NotSent x10`, or none."""
    counted = Counter(codes)
    return ", ".join(f"{code} x{count}" for code, count in sorted(counted.items())) or "none"
