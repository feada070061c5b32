"""The fan-out benchmark's child: one full reindex in the fresh interpreter this runs in, so that its CPU time
and peak RSS are its own (bench.fanout runs it through bench.children.run_measured).

argv: `synth <output file>`: the stack's synthesized state machine (definition and which handler each
placeholder function ARN runs) written as JSON; `single <config file> <result file>`: the full-reindex
handler invoked until its answer says complete; `fanout <config file> <result file>`: the state machine run
by the local driver (reindexer_cli.state_machine), its three step handlers called in-process.
The config is a JSON object: bucket, channel, timeout and memory_mb (what each invocation's context reports),
max_invocations (single), definition, handlers, threads, execution (fanout). The result file gets a JSON
object of what was counted and timed. Every S3 request the handlers send is counted here, client-side, by
our S3Store's on_request hook (one per call; a listing counts its pages of 1,000 keys, as S3 pages).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from reindexer.contract import (
    PACKAGE_SUFFIXES,
    RUN_COMMIT_HANDLER,
    RUN_PLAN_HANDLER,
    RUN_READ_HANDLER,
    RUN_RESULTS_FOLDER,
    RUNS_FOLDER,
    join_key,
)
from reindexer.handlers import full_reindex, reindex_steps
from reindexer.handlers.wiring import Handler, Wiring
from reindexer.reindex_runs import run_folder
from reindexer.storage.s3 import S3Endpoint, S3Store
from reindexer_cli.lambda_events import LocalLambdaContext
from reindexer_cli.state_machine import LocalStateMachine

LIST = "LIST"
GET_PACKAGE = "GET pkg"
GET_OTHER = "GET other"
HEAD = "HEAD"
PUT = "PUT"
DELETE = "DELETE"
OTHER = "other"
KINDS = (LIST, GET_PACKAGE, GET_OTHER, HEAD, PUT, DELETE, OTHER)
_KIND_OF_OPERATION = {
    "ListObjectsV2": LIST,
    "ListObjects": LIST,
    "HeadObject": HEAD,
    "PutObject": PUT,
    "CopyObject": PUT,
    "CreateMultipartUpload": PUT,
    "UploadPart": PUT,
    "CompleteMultipartUpload": PUT,
    "DeleteObject": DELETE,
    "DeleteObjects": DELETE,
}
STEP_BUILDERS: dict[str, Callable[[Wiring], Handler]] = {
    RUN_PLAN_HANDLER: reindex_steps.build_plan_handler,
    RUN_READ_HANDLER: reindex_steps.build_read_handler,
    RUN_COMMIT_HANDLER: reindex_steps.build_commit_handler,
}
STEP_NAMES = {RUN_PLAN_HANDLER: "plan", RUN_READ_HANDLER: "read", RUN_COMMIT_HANDLER: "commit"}


def request_kind(operation: str, key: str) -> str:
    """The kind of one S3 request, as the benchmark tables show it."""
    if operation == "GetObject":
        return GET_PACKAGE if key.endswith(PACKAGE_SUFFIXES) else GET_OTHER
    return _KIND_OF_OPERATION.get(operation, OTHER)


class RequestTally:
    """Every request the stores it is hooked to send, by kind; those on a run's own objects (under the runs
    folder: manifest, result objects) also apart."""

    def __init__(self, runs_prefix: str) -> None:
        self.runs_prefix = f"{runs_prefix}/"
        self.all: Counter[str] = Counter()
        self.run_objects: Counter[str] = Counter()
        self.by_operation: Counter[str] = Counter()
        self._lock = threading.Lock()

    def hook(self, store: Any) -> None:
        if not isinstance(store, S3Store):
            raise TypeError(f"the handlers' store is a {type(store).__name__}, not our S3Store")
        store.on_request = self.record

    def record(self, operation: str, key: str) -> None:
        kind = request_kind(operation, key)
        with self._lock:
            self.all[kind] += 1
            self.by_operation[operation] += 1
            if key.startswith(self.runs_prefix):
                self.run_objects[kind] += 1

    def to_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "all": {kind: self.all[kind] for kind in KINDS},
                "run_objects": {kind: self.run_objects[kind] for kind in KINDS},
                "by_operation": dict(sorted(self.by_operation.items())),
            }


@dataclass
class Invocation:
    """One handler call: its wall time, this process's CPU time meanwhile (None for a read batch, which runs
    beside others) and how many packages it was given (a read batch's items)."""

    step: str
    seconds: float
    cpu_seconds: float | None
    items: int = 0
    error: str | None = None


@dataclass
class RunObjects:
    """A fan-out run's own objects just before the commit deletes them."""

    manifest_bytes: int = 0
    result_objects: int = 0
    result_bytes: int = 0


def context(timeout: float, memory_mb: int, function_name: str) -> LocalLambdaContext:
    return LocalLambdaContext(function_name=function_name, memory_limit_in_mb=memory_mb, timeout=timeout)


def counted_wiring(bucket: str, tally: RequestTally) -> Wiring:
    """The deployed wiring (from this environment, as Lambda builds it), its bucket's store counted."""
    wiring = Wiring.from_environment(os.environ)
    tally.hook(wiring.store(bucket))
    return wiring


def run_single(config: dict[str, Any]) -> dict[str, Any]:
    """The full-reindex function, invoked again while its answer says it is not complete."""
    bucket, channel = config["bucket"], config["channel"]
    tally = RequestTally(join_key(channel, RUNS_FOLDER))
    handler = full_reindex.build_handler(counted_wiring(bucket, tally))
    invocations: list[Invocation] = []
    answer: dict[str, Any] = {}
    while len(invocations) < config["max_invocations"]:
        started, cpu = time.perf_counter(), time.process_time()
        answer = handler(
            {"channel": channel}, context(config["timeout"], config["memory_mb"], "bench-full-reindex")
        )
        invocations.append(
            Invocation(
                "full reindex",
                time.perf_counter() - started,
                time.process_time() - cpu,
                items=sum(
                    len(subdir["added"]) + len(subdir["updated"])
                    for subdir in answer.get("subdirs", {}).values()
                ),
                error=answer.get("error"),
            )
        )
        if answer.get("complete") is True or answer.get("ok") is False:
            break
    return {
        "invocations": [asdict(invocation) for invocation in invocations],
        "complete": answer.get("complete") is True,
        "error": answer.get("error"),
        "requests": tally.to_dict(),
    }


@dataclass
class StepFunctions:
    """The three step functions as the driver invokes them: each its real handler over a wiring of its own
    (one warm container per function), every call timed; the run's objects measured before the commit."""

    handlers: dict[str, str]  # placeholder function ARN -> handler
    bucket: str
    timeout: float
    memory_mb: int
    tally: RequestTally
    invocations: list[Invocation] = field(default_factory=list)
    run_objects: RunObjects | None = None
    # When the plan ended and the commit started (wall clock, this process's CPU time): the map in between.
    plan_ended: tuple[float, float] | None = None
    commit_started: tuple[float, float] | None = None
    _built: dict[str, Handler] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def invoke(self, function: str, payload: Any) -> Any:
        handler_name = self.handlers[function]
        with self._lock:
            if handler_name not in self._built:
                wiring = counted_wiring(self.bucket, self.tally)
                self._built[handler_name] = STEP_BUILDERS[handler_name](wiring)
            handler = self._built[handler_name]
        step = STEP_NAMES[handler_name]
        if step == "commit" and self.commit_started is None:
            self.commit_started = (time.perf_counter(), time.process_time())
            self.run_objects = measure_run_objects(self.bucket, payload["channel"], payload["run"])
        started, cpu = time.perf_counter(), time.process_time()
        error = None
        try:
            return handler(payload, context(self.timeout, self.memory_mb, f"bench-{step}"))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            ended_cpu = time.process_time()
            items = len(payload.get("Items", [])) if step == "read" else 0
            with self._lock:
                alone = None if step == "read" else ended_cpu - cpu
                self.invocations.append(Invocation(step, time.perf_counter() - started, alone, items, error))
                if step == "plan":
                    self.plan_ended = (time.perf_counter(), ended_cpu)


def measure_run_objects(bucket: str, channel: str, run: str) -> RunObjects:
    """The sizes of a run's manifest and result objects, listed by a store of its own (not counted)."""
    store = S3Store(bucket, S3Endpoint.from_environment(os.environ))
    folder = run_folder(channel, run)
    manifest = [obj.size for obj in store.list_folder(folder).objects]
    results = [obj.size for obj in store.list_folder(join_key(folder, RUN_RESULTS_FOLDER)).objects]
    return RunObjects(sum(manifest), len(results), sum(results))


def run_fanout(config: dict[str, Any]) -> dict[str, Any]:
    """One execution of the synthesized state machine by the local driver."""
    bucket, channel = config["bucket"], config["channel"]
    tally = RequestTally(join_key(channel, RUNS_FOLDER))
    functions = StepFunctions(config["handlers"], bucket, config["timeout"], config["memory_mb"], tally)
    # The ItemReader's GET of the manifest is Step Functions' own request: counted with the rest.
    states_store = S3Store(bucket, S3Endpoint.from_environment(os.environ))
    tally.hook(states_store)

    def read_object(object_bucket: str, key: str) -> bytes:
        if object_bucket != bucket:
            raise ValueError(f"the ItemReader names bucket {object_bucket!r}, not {bucket!r}")
        return states_store.read(key)[0]

    driver = LocalStateMachine(
        config["definition"], functions.invoke, read_object, max_threads=config["threads"]
    )
    started = time.perf_counter()
    execution = driver.run({"channel": channel}, name=config["execution"])
    seconds = time.perf_counter() - started
    output = execution.output if isinstance(execution.output, dict) else {}
    stats = execution.stats
    map_seconds = map_cpu = None
    if functions.plan_ended is not None and functions.commit_started is not None:
        map_seconds = functions.commit_started[0] - functions.plan_ended[0]
        map_cpu = functions.commit_started[1] - functions.plan_ended[1]
    return {
        "status": execution.status,
        "error": execution.error,
        "cause": (execution.cause or "")[:2000] or None,
        "complete": output.get("complete") is True,
        "summary": output.get("summary"),
        "execution_seconds": seconds,
        "map_seconds": map_seconds,
        "map_cpu_seconds": map_cpu,
        "invocations": [asdict(invocation) for invocation in functions.invocations],
        "invoked": {
            STEP_NAMES.get(config["handlers"].get(arn, ""), arn): count
            for arn, count in stats.invocations.items()
        },
        "retries": dict(stats.retries),
        "map_runs": [
            {
                "items": run.items,
                "batches": run.batches,
                "started": run.started,
                "succeeded": run.succeeded,
                "failed": run.failed,
                "max_concurrency": run.max_concurrency,
                "errors": dict(run.errors),
            }
            for run in stats.map_runs
        ],
        "run_objects": asdict(functions.run_objects) if functions.run_objects else None,
        "requests": tally.to_dict(),
    }


def synthesize(output: str) -> None:
    """The stack's state machine, as tests/infra synthesizes it (inline code: no bundling)."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template

    from devtools.state_machine_template import state_machines
    from infra.channel_stack import ChannelStack
    from infra.settings import ChannelSettings

    stack = ChannelStack(
        cdk.App(),
        "FanoutBench",
        settings=ChannelSettings.from_context({}),
        code=lambda_.Code.from_inline("#"),
    )
    (machine,) = state_machines(dict(Template.from_stack(stack).to_json())).values()
    with open(output, "w") as file:
        json.dump({"definition": machine.definition, "handlers": machine.handlers}, file)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    mode = args[0]
    if mode == "synth":
        synthesize(args[1])
        return 0
    with open(args[1]) as file:
        config = json.load(file)
    if mode not in ("single", "fanout"):
        raise SystemExit(f"unknown mode {mode!r}: synth, single or fanout")
    result = run_single(config) if mode == "single" else run_fanout(config)
    with open(args[2], "w") as file:
        json.dump(result, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
