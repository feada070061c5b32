"""Lambda handler for an on-demand full reindex, started from the console with a test event such as
`{"channel": "my-channel"}`; optional `"subdirs"`, `"force": true`, `"dry_run": true` and `"bucket"` (which
must then be the function's own CHANNEL_BUCKET).

Runs the same code as `reindexer index`. Reading stops early enough to commit what was read before the
function times out; the result then says `"complete": false`, and invoking it again continues. A bad
request, an S3 failure or a crash all answer `{"ok": false, "error": "<one line>"}`; a crash's traceback goes
to the log only.

Events for automation (reindexer.channel_events) follow a run that is not a dry run, and an operation's
republication: files indexed and removed, the subdirs published, and the rejections the run is known to have
judged (see `_judged`). They are best effort, put with the time the invocation has left.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..channel_events import ChannelEvent, subdir_events
from ..config import HandlerSettings
from ..contract import SECONDS_PER_DAY, DetailType, Metric, channel_prefix_problem
from ..indexer import index_channel
from ..layout import KNOWN_SUBDIRS
from ..operations import (
    Edit,
    OperationError,
    check_package_files,
    install_patch,
    preview_patch,
    unyank,
    yank,
)
from ..options import IndexOptions
from ..patches import PatchError, PatchInstructions
from ..reports import ChannelReport, SubdirReport
from ..store import Store, StoreError
from ..subdir_ref import SubdirRef
from .runtime import logger, metrics, quoted, seconds_left
from .wiring import Handler, LambdaEntry, Wiring, instrumented

# Reading may use 70 % of the invocation; the rest is left to publish and commit what was read.
READ_SHARE = 0.7
WAIT_SHARE = 0.2
# Kept free at the end of the invocation, after the events, for the answer, the log lines and the metrics.
END_MARGIN_SECONDS = 1.0
# Files of each list a "subdir reindexed" log line and the answer show (the count of all is beside them).
LOGGED_FILES = 50
ANSWERED_FILES = 500


class BadRequestError(ValueError):
    """The test event is not a valid full-reindex request; the message says what to fix."""


@dataclass(frozen=True)
class FullReindexRequest:
    bucket: str
    channel: str
    subdirs: tuple[str, ...] | None
    force: bool
    dry_run: bool
    # An operator's change instead of a reindex: yank / unyank files, or install a subdir's instructions.
    operation: Operation | None = None

    @classmethod
    def from_event(cls, event: Any, settings: HandlerSettings) -> FullReindexRequest:
        if not isinstance(event, dict):
            raise BadRequestError('the event must be a JSON object such as {"channel": "my-channel"}')
        unknown = set(event) - {"bucket", "channel", "subdirs", "force", "dry_run", *OPERATION_FIELDS}
        if unknown:
            raise BadRequestError(f"unknown field(s) {quoted(', '.join(sorted(map(str, unknown))))}")
        channel = _channel(event.get("channel"), settings)
        bucket = settings.bucket
        if "bucket" in event and event["bucket"] != bucket:
            raise BadRequestError(
                f'"bucket" {quoted(event["bucket"])} is not this function\'s CHANNEL_BUCKET {bucket!r}; '
                "leave it out"
            )
        subdirs = event.get("subdirs")
        if subdirs is not None:
            if not isinstance(subdirs, list) or not all(isinstance(s, str) for s in subdirs):
                raise BadRequestError('"subdirs" must be a list of subdir names such as ["linux-64"]')
            if unknown_subdirs := sorted(set(subdirs) - KNOWN_SUBDIRS):
                raise BadRequestError(f"unknown subdir(s) {quoted(', '.join(unknown_subdirs))}")
        for flag in ("force", "dry_run"):
            if not isinstance(event.get(flag, False), bool):
                raise BadRequestError(f'"{flag}" must be true or false')
        return cls(
            bucket=bucket,
            channel=channel,
            subdirs=tuple(subdirs) if subdirs else None,
            force=event.get("force", False),
            dry_run=event.get("dry_run", False),
            operation=Operation.from_event(event),
        )


OPERATION_FIELDS = ("yank", "unyank", "reason", "patch")


@dataclass(frozen=True)
class Operation:
    """`{"yank": ["linux-64/x-1-0.conda", ...], "reason": "..."}`, `{"unyank": [...]}` or
    `{"patch": {"subdir": "linux-64", "instructions": {...conda's patch_instructions.json...}}}`."""

    kind: str
    files: dict[str, list[str]]
    reason: str | None = None
    instructions: PatchInstructions | None = None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Operation | None:
        kinds = [kind for kind in ("yank", "unyank", "patch") if kind in event]
        if not kinds:
            if "reason" in event:
                raise BadRequestError('"reason" goes with "yank"')
            return None
        if len(kinds) > 1:
            raise BadRequestError(f"one operation per request, not {' and '.join(kinds)}")
        kind = kinds[0]
        if ignored := [field for field in ("subdirs", "force") if field in event]:
            raise BadRequestError(f'"{ignored[0]}" goes with a reindex, not with "{kind}"')
        reason = event.get("reason")
        if reason is not None and (kind != "yank" or not isinstance(reason, str) or len(reason) > 200):
            raise BadRequestError('"reason" goes with "yank" and is text of at most 200 characters')
        if kind == "patch":
            return cls(kind, *_patch(event["patch"]))
        return cls(kind, _files(event[kind], kind), reason)

    def run(self, store: Store, channel: str, options: IndexOptions) -> dict[str, Edit]:
        if self.kind != "patch":  # every file checked before any subdir is edited
            for subdir_name, names in self.files.items():
                check_package_files(
                    SubdirRef(store, channel, subdir_name), names, must_exist=self.kind == "yank"
                )
        edits = {}
        for subdir_name, names in sorted(self.files.items()):
            subdir = SubdirRef(store, channel, subdir_name)
            if self.kind == "yank":
                edits[subdir_name] = yank(subdir, names, self.reason, options)
            elif self.kind == "unyank":
                edits[subdir_name] = unyank(subdir, names, options)
            else:
                assert self.instructions is not None
                # Checked against the subdir's records first, as `reindexer patch` does (PatchError).
                preview_patch(subdir, self.instructions)
                edits[subdir_name] = install_patch(subdir, self.instructions, options)
        return edits


def _files(value: object, kind: str) -> dict[str, list[str]]:
    """["<subdir>/<file>", ...] by subdir."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise BadRequestError(
            f'"{kind}" must be a list of "<subdir>/<file>" such as ["linux-64/x-1-0.conda"]'
        )
    files: dict[str, list[str]] = {}
    for item in value:
        subdir, _, name = item.partition("/")
        if subdir not in KNOWN_SUBDIRS or not name or "/" in name:
            raise BadRequestError(f'"{kind}" entry {quoted(item)} is not "<subdir>/<file>"')
        files.setdefault(subdir, []).append(name)
    return files


def _patch(value: object) -> tuple[dict[str, list[str]], None, PatchInstructions]:
    if not isinstance(value, dict) or set(value) != {"subdir", "instructions"}:
        raise BadRequestError('"patch" must be {"subdir": "<subdir>", "instructions": {...}}')
    subdir = value["subdir"]
    if subdir not in KNOWN_SUBDIRS:
        raise BadRequestError(f"unknown subdir {quoted(subdir)}")
    try:
        instructions = PatchInstructions.parse(json.dumps(value["instructions"]).encode())
    except (PatchError, TypeError, ValueError) as error:
        raise BadRequestError(f"patch instructions refused: {error}") from None
    return {subdir: []}, None, instructions


def _channel(value: object, settings: HandlerSettings) -> str:
    if not isinstance(value, str):
        raise BadRequestError('"channel" is required: the channel prefix, or "" for the bucket root')
    channel = value.strip("/")  # '/org/dev/' is forgiven; 'org//dev' and '../x' are not
    if problem := channel_prefix_problem(channel):
        raise BadRequestError(f"channel {quoted(channel)} {problem}")
    if not settings.manages(channel):
        raise BadRequestError(f"channel {quoted(channel)} is not one of CHANNEL_PREFIXES")
    return channel


def build_handler(wiring: Wiring) -> Handler:
    """The full-reindex handler over `wiring`'s settings, stores and clock."""
    return instrumented(handle_full_reindex, wiring)


handler = LambdaEntry(build_handler)


def handle_full_reindex(event: dict[str, Any], context: LambdaContext, wiring: Wiring) -> dict[str, Any]:
    budget = wiring.budget(seconds_left(context), READ_SHARE, WAIT_SHARE)
    try:
        request = FullReindexRequest.from_event(event, wiring.settings)
    except BadRequestError as error:
        logger.error(f"bad full-reindex request: {error}")
        metrics.add_metric(name=Metric.INVALID_REQUESTS, unit=MetricUnit.Count, value=1)
        return {"ok": False, "complete": False, "error": str(error)}
    options = wiring.index_options(
        budget,
        subdirs=request.subdirs,
        force=request.force,
        dry_run=request.dry_run,
        shard_retention=wiring.settings.shard_retention_days * SECONDS_PER_DAY,
    )
    target = f"s3://{request.bucket}/{request.channel}"
    if request.operation is not None:
        return _operate(request, request.operation, options, wiring, context)
    try:
        report = index_channel(wiring.store(request.bucket), request.channel, options)
    except StoreError as error:
        logger.error(f"full reindex of {target} failed: {error}")
        metrics.add_metric(name=Metric.SUBDIR_UPDATE_FAILURES, unit=MetricUnit.Count, value=1)
        return {"ok": False, "complete": False, "error": str(error)}
    except Exception as error:  # a bug: answer in one line and keep the traceback for the log
        logger.exception(f"full reindex of {target} crashed")
        metrics.add_metric(name=Metric.SUBDIR_UPDATE_FAILURES, unit=MetricUnit.Count, value=1)
        return {"ok": False, "complete": False, "error": _crash_reason(error)}
    observe_full_run(request.bucket, request.channel, report, request.force, wiring, context)
    answer = report.to_dict()
    # Lambda refuses an answer over 6 MB: a cold index of a large channel lists too many files in one.
    answer["subdirs"] = {
        name: cut_lists(subdir, ANSWERED_FILES) for name, subdir in answer["subdirs"].items()
    }
    return {"bucket": request.bucket, "channel": request.channel, **cut_lists(answer, ANSWERED_FILES)}


def observe_full_run(
    bucket: str, channel: str, report: ChannelReport, force: bool, wiring: Wiring, context: LambdaContext
) -> None:
    """A full run's log lines, metrics and events for automation (none for a dry run)."""
    for name, subdir in sorted(report.subdirs.items()):
        logger.info(
            "subdir reindexed",
            extra={
                "bucket": bucket,
                "channel": channel,
                "subdir": name,
                **cut_lists(subdir.to_dict(), LOGGED_FILES),
            },
        )
        count = MetricUnit.Count
        metrics.add_metric(name=Metric.PACKAGES_INDEXED, unit=count, value=len(subdir.added + subdir.updated))
        metrics.add_metric(name=Metric.PACKAGES_REMOVED, unit=count, value=len(subdir.removed))
        metrics.add_metric(name=Metric.PACKAGES_REJECTED, unit=count, value=len(subdir.rejected_now))
        metrics.add_metric(
            name=Metric.SUBDIR_UPDATE_FAILURES, unit=count, value=int(subdir.error is not None)
        )
    # Progress of a channel larger than one invocation: subdirs done, and those left for the next one.
    done = sum(subdir.complete for subdir in report.subdirs.values())
    metrics.add_metric(name=Metric.SUBDIRS_REINDEXED, unit=MetricUnit.Count, value=done)
    metrics.add_metric(
        name=Metric.SUBDIRS_SKIPPED,
        unit=MetricUnit.Count,
        value=len(report.subdirs) - done + len(report.skipped),
    )
    if not report.dry_run:
        events = [
            event
            for _, subdir in sorted(report.subdirs.items())
            for event in subdir_events(bucket, channel, subdir, judged=_judged(subdir, force))
        ]
        wiring.put_events(_publications_first(events), seconds_left(context) - END_MARGIN_SECONDS)


def cut_lists(report: dict[str, Any], limit: int) -> dict[str, Any]:
    """A report with each list longer than `limit` cut to its first entries and its length beside it
    (`<key>_count`): for a log line (one CloudWatch Logs event) or an answer (Lambda's 6 MB)."""
    cut = dict(report)
    for key, value in report.items():
        if isinstance(value, list) and len(value) > limit:
            cut[key] = value[:limit]
            cut[f"{key}_count"] = len(value)
    return cut


def _judged(report: SubdirReport, force: bool) -> Collection[str]:
    """The files whose rejection is news: those this run decided (new, or for another upload or reason), and
    with force every one (all were read again). A nightly run does not announce old rejections again."""
    if force:
        return {rejection.file for rejection in report.rejected}
    return set(report.rejected_now)


def _publications_first(events: list[ChannelEvent]) -> list[ChannelEvent]:
    """A channel's run can make many file events: when time runs out, the subdirs' publications are out."""
    return sorted(events, key=lambda event: event.detail_type != DetailType.SUBDIR_PUBLISHED)


def _operate(
    request: FullReindexRequest,
    operation: Operation,
    options: IndexOptions,
    wiring: Wiring,
    context: LambdaContext,
) -> dict[str, Any]:
    """Run an operator's change; the answer says per subdir whether the instructions changed and how the
    republication went."""
    target = f"s3://{request.bucket}/{request.channel}"
    try:
        edits = operation.run(wiring.store(request.bucket), request.channel, options)
    except (OperationError, PatchError, StoreError) as error:
        logger.error(f"{operation.kind} in {target} failed: {error}")
        metrics.add_metric(name=Metric.INVALID_REQUESTS, unit=MetricUnit.Count, value=1)
        return {"ok": False, "operation": operation.kind, "error": str(error)}
    except Exception as error:  # a bug: answer in one line and keep the traceback for the log
        logger.exception(f"{operation.kind} in {target} crashed")
        metrics.add_metric(name=Metric.SUBDIR_UPDATE_FAILURES, unit=MetricUnit.Count, value=1)
        return {"ok": False, "operation": operation.kind, "error": _crash_reason(error)}
    subdirs = {
        name: {
            "changed": edit.after != edit.before,
            **(edit.report.to_dict() if edit.report else {}),
        }
        for name, edit in edits.items()
    }
    logger.info(f"{operation.kind} in {target}", extra={"subdirs": subdirs})
    # The republication: an operation judges no package file, so no rejection is news.
    events = [
        event
        for edit in edits.values()
        if edit.report is not None
        for event in subdir_events(request.bucket, request.channel, edit.report, judged=())
    ]
    wiring.put_events(events, seconds_left(context) - END_MARGIN_SECONDS)
    ok = all(edit.report is None or edit.report.error is None for edit in edits.values())
    changed = sum(edit.after != edit.before for edit in edits.values())
    metrics.add_metric(name=Metric.PATCH_EDITS, unit=MetricUnit.Count, value=changed)
    metrics.add_metric(name=Metric.SUBDIR_UPDATE_FAILURES, unit=MetricUnit.Count, value=int(not ok))
    return {
        "ok": ok,
        "operation": operation.kind,
        "bucket": request.bucket,
        "channel": request.channel,
        "subdirs": subdirs,
    }


def _crash_reason(error: Exception) -> str:
    return f"internal error ({type(error).__name__}); the traceback is in the function's log"
