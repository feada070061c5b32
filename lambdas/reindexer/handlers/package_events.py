"""Lambda handler for S3 notifications of new and deleted packages: parse, group by subdir, update, report.

Accepts an SQS batch of S3 event messages (the deployed route), a direct S3 event, or an EventBridge
"Object Created/Deleted" event. Each subdir is updated once per batch. From SQS, records whose update
failed for a transient reason are returned as batch item failures so SQS redelivers them (and, after the
redrive limit, moves them to the dead-letter queue); malformed messages and bad packages are acknowledged.

What an event says is checked before anything is done with it: a notice for another bucket than
CHANNEL_BUCKET, for a key that is not a package in a known subdir, or for a channel that breaks the channel
prefix rule or is outside CHANNEL_PREFIXES is ignored, acknowledged and counted in one "ignored notices" log
line by reason. One subdir's failure, even a crash, is that subdir's alone: it is logged once, counted, and
only its messages are returned for redelivery; the other subdirs are still updated. So are the messages of
a subdir whose publication stands but whose channel files the store refused to make again: redelivered,
the update has nothing to publish and makes them again (reindexer.updater).

Events for automation (reindexer.channel_events) follow each subdir update that committed: a file indexed,
rejected (only the batch's files: not the older rejections the subdir's state still holds) or removed, and
the subdir published. They are best effort, within the update's budget: one that cannot be put is logged
and counted (EventPutFailures), and never makes the batch's messages come back.

Time. Lambda stops an invocation at its timeout, and a stopped invocation's partial batch response is lost
with it (the whole batch is then redelivered, and the completed updates redone). So no subdir update starts
that cannot finish in time:

- END_MARGIN_SECONDS at the end of the invocation are kept for the response, the log lines and the metrics.
- Before each subdir, the time left (by the Lambda context's own clock, less the margin) must cover a
  reserve: the longest subdir update seen so far in this invocation, and at least MIN_UPDATE_SECONDS. A
  subdir without that time is not started; its messages are returned as batch item failures and come back.
- A started update gets the time then left as its budget: it waits for a subdir held by another indexer at
  most WAIT_SHARE of it and starts no package read after READ_SHARE of it, leaving the rest to publish and
  commit what it read. Files it did not get to read are returned for redelivery like any unfinished file.

A read that has started is not interrupted, so an update can still overrun its budget by the time of its
slowest read (package sizes are capped by MAX_PACKAGE_MB); the margin and the shares are there to absorb it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..channel_events import subdir_events
from ..clock import utc_now
from ..config import HandlerSettings
from ..contract import Metric, channel_prefix_problem
from ..notifications import ObjectNotice, PackageLocation, locate, parse_event
from ..reports import SubdirReport
from ..store import StoreError
from ..updater import update_subdir
from .runtime import logger, metrics, quoted, seconds_left, tracer
from .wiring import Handler, LambdaEntry, TimeBudget, Wiring, instrumented

# Reading packages may use 60 % of an update's budget, waiting for a busy subdir half of it.
READ_SHARE = 0.6
WAIT_SHARE = 0.5
# Kept free at the end of the invocation so the response, log lines and metrics get out before the timeout,
# with room for a package read that was already under way when its update's read deadline passed.
END_MARGIN_SECONDS = 1.0
# The least time a subdir update is started with: a lease, the state, a package and the outputs are a dozen
# S3 round trips even for one file.
MIN_UPDATE_SECONDS = 2.0

SubdirKey = tuple[str, str]  # (channel, subdir)


class TransientIndexingError(Exception):
    """Raised for direct (non-SQS) invocations, so Lambda's own retries run them again."""


@dataclass
class SubdirBatch:
    bucket: str
    channel: str
    subdir: str
    filenames: dict[str, set[str | None]] = field(default_factory=dict)  # file -> SQS message ids
    first_event: datetime | None = None

    def add(self, location: PackageLocation, notice: ObjectNotice) -> None:
        self.filenames.setdefault(location.filename, set()).add(notice.message_id)
        if notice.event_time and (self.first_event is None or notice.event_time < self.first_event):
            self.first_event = notice.event_time

    def message_ids(self, filenames: set[str]) -> set[str]:
        return {message_id for name in filenames for message_id in self.filenames.get(name, ()) if message_id}

    @property
    def name(self) -> str:
        return f"{self.channel}/{self.subdir}" if self.channel else self.subdir


def build_handler(wiring: Wiring) -> Handler:
    """The package-event handler over `wiring`'s settings, stores and clock."""
    return instrumented(handle_package_events, wiring)


handler = LambdaEntry(build_handler)


def handle_package_events(event: dict[str, Any], context: LambdaContext, wiring: Wiring) -> dict[str, Any]:
    parsed = parse_event(event)
    for message_id, reason in parsed.malformed:
        logger.warning("ignored a malformed message", extra={"message_id": message_id, "reason": reason})
    metrics.add_metric(name=Metric.NOTICES_RECEIVED, unit=MetricUnit.Count, value=len(parsed.notices))
    batches = _group(parsed.notices, wiring.settings)
    retry = _update_in_time(batches, context, wiring)
    if parsed.from_sqs:
        failures = sorted(set().union(*retry.values())) if retry else []
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
    if retry:
        subdirs = ", ".join(batches[key].name for key in sorted(retry))
        raise TransientIndexingError(f"could not finish updating {subdirs}; the invocation will be retried")
    return {"subdirs": len(batches)}


def _group(notices: list[ObjectNotice], settings: HandlerSettings) -> dict[SubdirKey, SubdirBatch]:
    """The notices worth acting on, by subdir; the others are counted by reason in one log line."""
    batches: dict[SubdirKey, SubdirBatch] = {}
    ignored: defaultdict[str, int] = defaultdict(int)
    for notice in notices:
        location = _location_to_update(notice, settings)
        if isinstance(location, str):
            ignored[location] += 1
            continue
        key = (location.channel, location.subdir)
        batches.setdefault(key, SubdirBatch(settings.bucket, *key)).add(location, notice)
    if ignored:
        logger.info("ignored notices", extra={"ignored": dict(ignored)})
    return batches


def _location_to_update(notice: ObjectNotice, settings: HandlerSettings) -> PackageLocation | str:
    """Where the noticed package is, or why the notice is to be ignored."""
    if notice.bucket != settings.bucket:
        return f"bucket {quoted(notice.bucket)} is not CHANNEL_BUCKET"
    location = locate(notice.key)
    if location is None:
        return "not a package in a known subdir"
    if problem := channel_prefix_problem(location.channel):
        return f"channel {problem}"
    if not settings.manages(location.channel):
        return "channel not in CHANNEL_PREFIXES"
    return location


def _update_in_time(
    batches: dict[SubdirKey, SubdirBatch], context: LambdaContext, wiring: Wiring
) -> dict[SubdirKey, set[str]]:
    """Update the subdirs in the order their notices came while there is time (see the module docstring);
    return the message ids to deliver again, by subdir."""
    retry: dict[SubdirKey, set[str]] = {}
    not_started: list[str] = []
    longest = 0.0
    for key, batch in batches.items():
        before = seconds_left(context)
        available = before - END_MARGIN_SECONDS
        if available < max(MIN_UPDATE_SECONDS, longest):
            not_started.append(batch.name)
            retry[key] = batch.message_ids(set(batch.filenames))
            continue
        unfinished = _update(batch, wiring.budget(available, READ_SHARE, WAIT_SHARE), wiring)
        longest = max(longest, before - seconds_left(context))
        if unfinished:
            retry[key] = batch.message_ids(unfinished)
    if not_started:
        logger.warning(
            "subdirs not started for lack of time",
            extra={"subdirs": not_started, "seconds_left": seconds_left(context), "longest_update": longest},
        )
        metrics.add_metric(name=Metric.SUBDIRS_POSTPONED, unit=MetricUnit.Count, value=len(not_started))
    return retry


@tracer.capture_method
def _update(batch: SubdirBatch, budget: TimeBudget, wiring: Wiring) -> set[str]:
    """Update one subdir; return the files whose notices must be delivered again."""
    try:
        report = update_subdir(
            wiring.store(batch.bucket),
            batch.channel,
            batch.subdir,
            batch.filenames,
            wiring.index_options(budget),
        )
    except StoreError as error:  # fatal ones (access denied, no bucket) too: the operator may fix them
        report = SubdirReport(batch.subdir, error=str(error))
    except Exception as error:  # a bug or an unforeseen input: this subdir's failure, not the batch's
        report = SubdirReport(
            batch.subdir, error=f"internal error ({type(error).__name__}); the traceback is in the log"
        )
        _observe(batch, report, wiring, crashed=True)  # in the except block: the log line has the traceback
        return set(batch.filenames)
    _observe(batch, report, wiring)
    events = subdir_events(batch.bucket, batch.channel, report, judged=batch.filenames.keys())
    if report.noarch_first is not None:
        # A new channel's noarch index, made before this subdir's: announced as a full run's would be.
        noarch = report.noarch_first
        events += subdir_events(batch.bucket, batch.channel, noarch, judged=noarch.rejected_now)
    wiring.put_events(events, budget.seconds_left(wiring.clock))
    if report.error or (report.channel_files is not None and report.channel_files.retry):
        # A channel-file redraw the store refused comes back with the batch: the redelivered update has
        # nothing to publish, finds the channel files behind this subdir's state, and makes them again.
        return set(batch.filenames)
    return {failure.file for failure in report.failed} | set(report.deferred)


def _observe(batch: SubdirBatch, report: SubdirReport, wiring: Wiring, *, crashed: bool = False) -> None:
    """One log line and the metrics of one subdir update."""
    in_batch = set(batch.filenames)
    rejected = [r.to_dict() for r in report.rejected if r.file in in_batch]
    log = logger.exception if crashed else logger.info
    log(
        "subdir updated" if report.error is None else "subdir update failed",
        extra={
            "bucket": batch.bucket,
            "channel": batch.channel,
            "subdir": batch.subdir,
            "files": len(in_batch),
            "added": report.added + report.updated,
            "removed": report.removed,
            "rejected": rejected,
            "failed": [failure.to_dict() for failure in report.failed],
            "deferred": report.deferred,
            "written": report.written,
            "attempts": report.attempts,
            "seconds": round(report.seconds, 3),
            "error": report.error,
            "channel_files": report.channel_files.to_dict() if report.channel_files else None,
        },
    )
    count = MetricUnit.Count
    metrics.add_metric(
        name=Metric.PACKAGES_INDEXED, unit=count, value=len(report.added) + len(report.updated)
    )
    metrics.add_metric(name=Metric.PACKAGES_REMOVED, unit=count, value=len(report.removed))
    metrics.add_metric(name=Metric.PACKAGES_REJECTED, unit=count, value=len(rejected))
    metrics.add_metric(name=Metric.READ_FAILURES, unit=count, value=len(report.failed))
    metrics.add_metric(name=Metric.COMMIT_CONFLICTS, unit=count, value=max(0, report.attempts - 1))
    metrics.add_metric(name=Metric.SUBDIR_UPDATE_FAILURES, unit=count, value=int(report.error is not None))
    if report.written and batch.first_event is not None:
        latency = (utc_now(wiring.clock) - batch.first_event).total_seconds() * 1000
        metrics.add_metric(
            name=Metric.PUBLICATION_LATENCY, unit=MetricUnit.Milliseconds, value=max(0.0, latency)
        )
