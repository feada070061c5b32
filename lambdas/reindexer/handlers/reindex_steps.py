"""Lambda handlers of the fan-out full reindex's steps (reindexer.reindex_runs), as the stack's state machine
calls them: plan, read one batch of the Distributed Map, commit.

An operator's request that is not valid ends the execution through the plan's `{"ok": false, "error"}`
answer (the state machine's Fail state shows the one line). Work worth trying again raises the errors the
state machine retries with backoff (contract.BATCH_INCOMPLETE_ERROR, COMMIT_INCOMPLETE_ERROR).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..clock import utc_now
from ..contract import SECONDS_PER_DAY, Metric
from ..reindex_runs import (
    RunInputError,
    check_run_name,
    commit_run,
    items_of,
    plan_run,
    read_batch,
    run_name,
)
from ..reports import ChannelReport
from ..store import StoreError
from .full_reindex import BadRequestError, FullReindexRequest, observe_full_run
from .runtime import logger, metrics, seconds_left
from .wiring import Handler, LambdaEntry, Wiring, instrumented

# A read step starts no package read after this share of its invocation: the rest writes the result.
READ_SHARE = 0.75
# The commit reads what the batches left (uploads since the plan, failed batches) within this share.
COMMIT_READ_SHARE = 0.5
WAIT_SHARE = 0.3
# Files left unread shown per subdir in the commit's answer (the counts are all there), and the map error's
# cause kept: the answer is the execution's output, at most 256 KiB.
EXAMPLES = 5
MAX_CAUSE = 2000


class BatchIncompleteError(Exception):
    """Some packages of the batch are not read yet; retried, the step reads only those."""


class CommitIncompleteError(Exception):
    """A subdir could not be committed (busy, conflicting, unavailable); retried, the commit starts over."""


def build_plan_handler(wiring: Wiring) -> Handler:
    return instrumented(handle_plan, wiring)


def build_read_handler(wiring: Wiring) -> Handler:
    return instrumented(handle_read, wiring)


def build_commit_handler(wiring: Wiring) -> Handler:
    return instrumented(handle_commit, wiring)


plan_handler = LambdaEntry(build_plan_handler)
read_handler = LambdaEntry(build_read_handler)
commit_handler = LambdaEntry(build_commit_handler)


def handle_plan(event: dict[str, Any], context: LambdaContext, wiring: Wiring) -> dict[str, Any]:
    """`{"request": <the execution's input>, "execution": <its name>}` → the run for the next steps."""
    try:
        request = _request(event.get("request") if isinstance(event, dict) else None, wiring)
        execution = event.get("execution")
        if not isinstance(execution, str) or not execution:
            raise BadRequestError('"execution" (the execution\'s name) is missing')
    except BadRequestError as error:
        logger.error(f"bad full-reindex request: {error}")
        metrics.add_metric(name=Metric.INVALID_REQUESTS, unit=MetricUnit.Count, value=1)
        return {"ok": False, "error": str(error)}
    run = run_name(execution, utc_now(wiring.clock))
    options = wiring.index_options(
        wiring.budget(seconds_left(context), 1.0, WAIT_SHARE), subdirs=request.subdirs, force=request.force
    )
    try:
        plan = plan_run(wiring.store(request.bucket), request.channel, run, options)
    except StoreError as error:
        logger.error(f"planning the full reindex of {request.channel!r} failed: {error}")
        return {"ok": False, "error": str(error)}
    logger.info("full reindex planned", extra={"run": run, "items": plan.items, "by_subdir": plan.by_subdir})
    return {
        "ok": True,
        "bucket": request.bucket,
        "channel": request.channel,
        "subdirs": list(request.subdirs) if request.subdirs else None,
        "force": request.force,
        "run": run,
        "items": plan.items,
        "by_subdir": plan.by_subdir,
        "manifest": {"bucket": request.bucket, "key": plan.manifest_key} if plan.manifest_key else None,
        "expired_runs_deleted": plan.expired_runs_deleted,
    }


def handle_read(event: dict[str, Any], context: LambdaContext, wiring: Wiring) -> dict[str, Any]:
    """`{"Items": [item...], "BatchInput": {"bucket", "channel", "run"}}` (an ItemBatcher's batch) → the
    counts of what the batch's result object holds; BatchIncompleteError while packages are left."""
    batch = event.get("BatchInput") if isinstance(event, dict) else None
    if not isinstance(batch, dict):
        raise RunInputError('the batch has no "BatchInput"')
    request = _request({"channel": batch.get("channel"), "bucket": batch.get("bucket")}, wiring)
    run = check_run_name(batch.get("run"))
    values = event.get("Items")
    if not isinstance(values, list) or not values:
        raise RunInputError('the batch has no "Items"')
    items = items_of(values)
    options = wiring.index_options(wiring.budget(seconds_left(context), READ_SHARE, WAIT_SHARE))
    result = read_batch(wiring.store(request.bucket), request.channel, run, items, options)
    logger.info("batch read", extra={"run": run, "items": len(items), **result.to_dict()})
    metrics.add_metric(name=Metric.READ_FAILURES, unit=MetricUnit.Count, value=len(result.failed))
    if not result.complete:
        first = result.failed[0].reason if result.failed else "the time ran out"
        raise BatchIncompleteError(
            f"{len(result.failed) + len(result.deferred)} of {len(items)} packages not read yet "
            f"(first reason: {first}); the retry reads only those"
        )
    return result.to_dict()


def handle_commit(event: dict[str, Any], context: LambdaContext, wiring: Wiring) -> dict[str, Any]:
    """The plan's answer (and the Map's error, when it failed) → the run's report; CommitIncompleteError
    when a subdir could not be committed."""
    if not isinstance(event, dict):
        raise RunInputError("the commit's input is not the plan's answer")
    request = _request(
        {
            "channel": event.get("channel"),
            "bucket": event.get("bucket"),
            "force": event.get("force", False),
            **({"subdirs": event["subdirs"]} if event.get("subdirs") else {}),
        },
        wiring,
    )
    run = check_run_name(event.get("run"))
    options = wiring.index_options(
        wiring.budget(seconds_left(context), COMMIT_READ_SHARE, WAIT_SHARE),
        subdirs=request.subdirs,
        force=request.force,
        shard_retention=wiring.settings.shard_retention_days * SECONDS_PER_DAY,
    )
    report = commit_run(wiring.store(request.bucket), request.channel, run, options)
    observe_full_run(request.bucket, request.channel, report, request.force, wiring, context)
    if not report.ok:
        failed = {name: subdir.error for name, subdir in sorted(report.subdirs.items()) if subdir.error}
        raise CommitIncompleteError(f"not committed: {failed}")
    return _commit_answer(run, report, event.get("read_error"))


def _request(event: Any, wiring: Wiring) -> FullReindexRequest:
    """The full-reindex function's request, checked the same way; operations and dry runs go to it."""
    request = FullReindexRequest.from_event(event, wiring.settings)
    if request.operation is not None or request.dry_run:
        raise BadRequestError("yank, unyank, patch and dry_run go to the full-reindex function, not here")
    return request


def _commit_answer(run: str, report: ChannelReport, read_error: Any) -> dict[str, Any]:
    """The run's report as the execution's output: counts, and a few of the files left with their reasons.
    Step Functions refuses a state's output over 256 KiB, which lists of every file would pass."""
    subdirs = {}
    for name, subdir in sorted(report.subdirs.items()):
        left = [
            *(f.to_dict() for f in subdir.failed),
            *({"file": f, "reason": "deferred"} for f in subdir.deferred),
        ]
        subdirs[name] = {
            "added": len(subdir.added),
            "updated": len(subdir.updated),
            "removed": len(subdir.removed),
            "unchanged": subdir.unchanged,
            "rejected": len(subdir.rejected),
            "left": len(left),
            "left_examples": left[:EXAMPLES],
            "error": subdir.error,
        }
    # A map that failed ends the execution failed (and alarmed) even when the commit read what it left.
    complete = report.complete and not read_error
    return {
        "run": run,
        "target": report.target,
        "complete": complete,
        "summary": _summary(complete, subdirs, report.skipped, read_error),
        "subdirs": subdirs,
        "skipped_subdirs": report.skipped,
        "misplaced": len(report.rejected),
        "read_error": _bounded(read_error),
        "requests": dict(sorted(report.requests.items())),
        "seconds": round(report.seconds, 3),
    }


def _summary(complete: bool, subdirs: dict[str, dict[str, Any]], skipped: list[str], read_error: Any) -> str:
    """One line for the execution's end: complete, or what is left and why."""
    if complete:
        return "complete"
    reasons = []
    if read_error:
        error = read_error.get("Error") if isinstance(read_error, dict) else read_error
        reasons.append(f"the read map failed ({str(error)[:200]}; the commit read what it left)")
    left = {name: subdir["left"] for name, subdir in subdirs.items() if subdir["left"]}
    if left:
        reasons.append(f"packages left unread by subdir {left}")
    if skipped:
        reasons.append(f"subdirs not started in time {skipped}")
    return "incomplete: " + "; ".join(reasons) + "; start the reindex again to continue"


def _bounded(read_error: Any) -> Any:
    """The map's error as Step Functions gave it, its cause cut to a readable length."""
    if not isinstance(read_error, dict):
        return read_error
    return {key: str(value)[:MAX_CAUSE] for key, value in read_error.items()}
