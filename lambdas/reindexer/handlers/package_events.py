"""Lambda handler for S3 notifications of new and deleted packages: parse, group by subdir, update, report.

Accepts an SQS batch of S3 event messages (the deployed route), a direct S3 event, or an EventBridge
"Object Created/Deleted" event. Each subdir is updated once per batch. From SQS, records whose update
failed for a transient reason are returned as batch item failures so SQS redelivers them (and, after the
redrive limit, moves them to the dead-letter queue); malformed messages and bad packages are acknowledged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..notifications import ObjectNotice, PackageLocation, locate, parse_event
from ..reports import SubdirReport
from ..store import StoreError
from ..updater import update_subdir
from .runtime import LambdaContext, TimeBudget, index_options, logger, metrics, settings, store_for, tracer

# Reading packages may use 60 % of the invocation, waiting for a busy subdir half of it.
READ_SHARE = 0.6
WAIT_SHARE = 0.5


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


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    budget = TimeBudget.of(context, READ_SHARE, WAIT_SHARE)
    parsed = parse_event(event)
    for message_id, reason in parsed.malformed:
        logger.warning("ignored a malformed message", extra={"message_id": message_id, "reason": reason})
    metrics.add_metric(name="NoticesReceived", unit=MetricUnit.Count, value=len(parsed.notices))
    batches = _group(parsed.notices)
    retry: dict[tuple[str, str, str], set[str]] = {}
    for group, batch in batches.items():
        unfinished = _update(batch, budget)
        if unfinished:
            retry[group] = batch.message_ids(unfinished)
    if parsed.from_sqs:
        failures = sorted(set().union(*retry.values())) if retry else []
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
    if retry:
        subdirs = ", ".join("/".join(part for part in group[1:] if part) for group in sorted(retry))
        raise TransientIndexingError(f"could not finish updating {subdirs}; the invocation will be retried")
    return {"subdirs": len(batches)}


def _group(notices: list[ObjectNotice]) -> dict[tuple[str, str, str], SubdirBatch]:
    batches: dict[tuple[str, str, str], SubdirBatch] = {}
    ignored: defaultdict[str, int] = defaultdict(int)
    for notice in notices:
        location = locate(notice.key)
        if location is None:
            ignored["not a package in a known subdir"] += 1
            continue
        if not settings().manages(location.channel):
            ignored["channel not in CHANNEL_PREFIXES"] += 1
            continue
        group = (notice.bucket, location.channel, location.subdir)
        batches.setdefault(group, SubdirBatch(*group)).add(location, notice)
    if ignored:
        logger.info("ignored notices", extra={"ignored": dict(ignored)})
    return batches


@tracer.capture_method
def _update(batch: SubdirBatch, budget: TimeBudget) -> set[str]:
    """Update one subdir; return the files whose notices must be delivered again."""
    try:
        report = update_subdir(
            store_for(batch.bucket), batch.channel, batch.subdir, batch.filenames, index_options(budget)
        )
    except StoreError as error:  # fatal ones (access denied, no bucket) too: the operator may fix them
        report = SubdirReport(batch.subdir, error=str(error))
    _observe(batch, report)
    if report.error:
        return set(batch.filenames)
    return {failure.file for failure in report.failed} | set(report.deferred)


def _observe(batch: SubdirBatch, report: SubdirReport) -> None:
    """One log line and the metrics of one subdir update."""
    in_batch = set(batch.filenames)
    rejected = [r.to_dict() for r in report.rejected if r.file in in_batch]
    logger.info(
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
        },
    )
    metrics.add_metric(
        name="PackagesIndexed", unit=MetricUnit.Count, value=len(report.added) + len(report.updated)
    )
    metrics.add_metric(name="PackagesRemoved", unit=MetricUnit.Count, value=len(report.removed))
    metrics.add_metric(name="PackagesRejected", unit=MetricUnit.Count, value=len(rejected))
    metrics.add_metric(name="ReadFailures", unit=MetricUnit.Count, value=len(report.failed))
    metrics.add_metric(name="CommitConflicts", unit=MetricUnit.Count, value=max(0, report.attempts - 1))
    metrics.add_metric(
        name="SubdirUpdateFailures", unit=MetricUnit.Count, value=int(report.error is not None)
    )
    if report.written and batch.first_event is not None:
        latency = (datetime.now(UTC) - batch.first_event).total_seconds() * 1000
        metrics.add_metric(name="PublicationLatency", unit=MetricUnit.Milliseconds, value=max(0.0, latency))
