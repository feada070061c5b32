"""The local Step Functions driver: each simulated feature on small definitions, and the full reindex's
definition in the shape CDK synthesizes (plan, Distributed Map of batches, commit). No test waits on time:
sleeps are recorded, concurrency is shown with events."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from reindexer_cli.state_machine import (
    PAYLOAD_LIMIT_BYTES,
    TOLERATED_FAILURE_CAUSE,
    DefinitionError,
    Execution,
    LocalStateMachine,
    StatesError,
)

ACCOUNT_ARN = "arn:aws:lambda:us-east-1:123456789012:function"
PLAN = f"{ACCOUNT_ARN}:reindexer-plan"
READ = f"{ACCOUNT_ARN}:reindexer-read"
COMMIT = f"{ACCOUNT_ARN}:reindexer-commit"
WORK = f"{ACCOUNT_ARN}:work"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_SERVICE_RETRY = {
    "ErrorEquals": [
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
    ],
    "IntervalSeconds": 2,
    "MaxAttempts": 6,
    "BackoffRate": 2,
}
GATE_TIMEOUT = 10.0  # only a safety net: a gate opens as soon as enough callers arrive


class BatchIncompleteError(Exception):
    """What the read step raises when packages are left (as reindexer.handlers.reindex_steps)."""


class PackageGoneError(Exception):
    pass


class Lambdas:
    """The functions' handlers by ARN, every call recorded (from any thread)."""

    def __init__(self, handlers: dict[str, Callable[[Any], Any]]) -> None:
        self.handlers = handlers
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, function: str, payload: Any) -> Any:
        with self._lock:
            self.calls.append((function, payload))
        return self.handlers[function](payload)

    def payloads(self, function: str) -> list[Any]:
        with self._lock:
            return [payload for called, payload in self.calls if called == function]


class Gate:
    """Holds its first `parties` callers until all of them are in: proves that many ran at once."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.open = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.arrived += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            if self.arrived >= self.parties:
                self.open.set()
        if not self.open.wait(GATE_TIMEOUT):
            raise AssertionError(f"only {self.arrived} of {self.parties} callers ever ran at once")

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.running -= 1


def machine(
    definition: dict[str, Any] | str,
    invoke: Callable[[str, Any], Any] | None = None,
    *,
    objects: dict[tuple[str, str], bytes] | None = None,
    sleeps: list[float] | None = None,
    jitter: float = 0.5,
) -> LocalStateMachine:
    def no_invoke(function: str, payload: Any) -> Any:
        raise AssertionError(f"unexpected invocation of {function}")

    def read_object(bucket: str, key: str) -> bytes:
        return (objects or {})[(bucket, key)]

    def record(seconds: float) -> None:
        if sleeps is None:
            raise AssertionError("unexpected sleep")
        sleeps.append(seconds)

    return LocalStateMachine(
        definition, invoke or no_invoke, read_object, sleep=record, random=lambda: jitter
    )


def one_state(state: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": "Only", "States": {"Only": state, **more}}


def invoke_state(function: str, **fields: Any) -> dict[str, Any]:
    """CDK's LambdaInvoke, whole state input as the payload."""
    return {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {"FunctionName": function, "Payload.$": "$"},
        **fields,
    }


# --- The full reindex's definition as CDK writes it --------------------------------------------------------


def reindex_definition(*, batch_items: int = 3, concurrency: int = 4) -> dict[str, Any]:
    """A new copy each time: tests change it."""
    read_retry = {
        "ErrorEquals": ["BatchIncompleteError"],
        "IntervalSeconds": 5,
        "MaxAttempts": 8,
        "BackoffRate": 2,
        "MaxDelaySeconds": 300,
        "JitterStrategy": "FULL",
    }
    definition = {
        "StartAt": "Plan",
        "States": {
            "Plan": {
                "Next": "Planned?",
                "Retry": [LAMBDA_SERVICE_RETRY],
                "Type": "Task",
                "OutputPath": "$.Payload",
                "Resource": LAMBDA_INVOKE,
                "Parameters": {
                    "FunctionName": PLAN,
                    "Payload": {"request.$": "$", "execution.$": "$$.Execution.Name"},
                },
            },
            "Planned?": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.ok", "BooleanEquals": False, "Next": "BadRequest"},
                    {"Variable": "$.items", "NumericGreaterThan": 0, "Next": "Read"},
                ],
                "Default": "Commit",
            },
            "BadRequest": {"Type": "Fail", "Error": "BadRequest", "CausePath": "$.error"},
            "Read": {
                "Type": "Map",
                "ResultPath": None,
                "Next": "Commit",
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.read_error", "Next": "Commit"}],
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "ReadBatch",
                    "States": {
                        "ReadBatch": invoke_state(
                            READ, End=True, Retry=[read_retry, LAMBDA_SERVICE_RETRY], OutputPath="$.Payload"
                        )
                    },
                },
                "MaxConcurrency": concurrency,
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSON"},
                    "Parameters": {"Bucket.$": "$.manifest.bucket", "Key.$": "$.manifest.key"},
                },
                "ItemBatcher": {
                    "MaxItemsPerBatch": batch_items,
                    "BatchInput": {"bucket.$": "$.bucket", "channel.$": "$.channel", "run.$": "$.run"},
                },
                "ToleratedFailurePercentage": 0,
                "Label": "ReadBatches",
            },
            "Commit": invoke_state(
                COMMIT,
                Next="Complete?",
                Retry=[LAMBDA_SERVICE_RETRY],
                Catch=[
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.commit_error", "Next": "CommitFailed"}
                ],
                OutputPath="$.Payload",
            ),
            "CommitFailed": {"Type": "Fail", "Error": "CommitFailed", "CausePath": "$.commit_error.Cause"},
            "Complete?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.complete", "BooleanEquals": True, "Next": "Indexed"}],
                "Default": "Incomplete",
            },
            "Indexed": {"Type": "Succeed"},
            "Incomplete": {"Type": "Fail", "Error": "ReindexIncomplete", "CausePath": "$.summary"},
        },
        "TimeoutSeconds": 86400,
    }
    return json.loads(json.dumps(definition))


PACKAGES = [f"linux-64/pkg-{index}-1.0-0.conda" for index in range(10)]
MANIFEST = ("channel-bucket", "conda/.reindexer/runs/r1/manifest.json")


class Reindex:
    """The three steps' handlers; `read` fails as a test says."""

    def __init__(self, read: Callable[[Any], Any] | None = None, items: list[str] = PACKAGES) -> None:
        self.items = items
        self.lambdas = Lambdas({PLAN: self.plan, READ: read or self.read, COMMIT: self.commit})
        self.sleeps: list[float] = []

    def plan(self, event: Any) -> Any:
        return {
            "ok": True,
            "bucket": MANIFEST[0],
            "channel": "conda",
            "run": "r1",
            "items": len(self.items),
            "manifest": {"bucket": MANIFEST[0], "key": MANIFEST[1]},
        }

    @staticmethod
    def read(event: Any) -> Any:
        return {"read": len(event["Items"])}

    @staticmethod
    def commit(event: Any) -> Any:
        if "read_error" in event:
            return {"complete": False, "summary": "3 packages of run r1 left unread"}
        return {"complete": True, "summary": "10 packages indexed"}

    def run(self, **definition: Any) -> Execution:
        driver = machine(
            reindex_definition(**definition),
            self.lambdas,
            objects={MANIFEST: json.dumps(self.items).encode()},
            sleeps=self.sleeps,
        )
        return driver.run({"channel": "conda"}, "nightly-1")


def test_cdk_shaped_reindex_partitions_the_manifest_into_batches_in_order() -> None:
    # given
    reindex = Reindex()
    # when
    execution = reindex.run()
    # then
    assert execution.status == "SUCCEEDED", execution
    assert execution.output == {"complete": True, "summary": "10 packages indexed"}
    assert reindex.lambdas.payloads(PLAN) == [{"request": {"channel": "conda"}, "execution": "nightly-1"}]
    batches = sorted(reindex.lambdas.payloads(READ), key=lambda batch: PACKAGES.index(batch["Items"][0]))
    assert [item for batch in batches for item in batch["Items"]] == PACKAGES
    assert [len(batch["Items"]) for batch in batches] == [3, 3, 3, 1]
    assert all(
        batch["BatchInput"] == {"bucket": MANIFEST[0], "channel": "conda", "run": "r1"} for batch in batches
    )
    # the Map's ResultPath null: the commit gets the plan's output untouched
    assert reindex.lambdas.payloads(COMMIT) == [reindex.plan({})]
    assert execution.stats.invocations == {PLAN: 1, READ: 4, COMMIT: 1}
    assert execution.stats.states_entered["ReadBatch"] == 4
    (run,) = execution.stats.map_runs
    assert (run.mode, run.items, run.batches, run.succeeded, run.failed) == ("DISTRIBUTED", 10, 4, 4, 0)


def test_batches_run_concurrently_up_to_max_concurrency() -> None:
    # given: each read holds until three reads are in at once
    gate = Gate(parties=3)

    def read(event: Any) -> Any:
        with gate:
            return {"read": len(event["Items"])}

    reindex = Reindex(read, items=[f"pkg-{index}" for index in range(40)])
    # when
    execution = reindex.run(batch_items=2, concurrency=4)
    # then
    assert execution.status == "SUCCEEDED", execution
    (run,) = execution.stats.map_runs
    assert run.batches == run.succeeded == 20
    assert 3 <= run.max_concurrency <= 4
    assert gate.most_running <= 4


def test_a_batch_failing_once_is_retried_with_jittered_backoff_and_the_map_succeeds() -> None:
    # given
    failed_once: set[str] = set()

    def read(event: Any) -> Any:
        first = event["Items"][0]
        if first == PACKAGES[3] and first not in failed_once:
            failed_once.add(first)
            raise BatchIncompleteError("2 packages left")
        return {"read": len(event["Items"])}

    reindex = Reindex(read)
    # when
    execution = reindex.run()
    # then: IntervalSeconds 5 with full jitter (random() = 0.5)
    assert execution.status == "SUCCEEDED", execution
    assert reindex.sleeps == [2.5]
    assert execution.stats.retries == {"ReadBatch": 1}
    assert execution.stats.invocations[READ] == 5
    assert execution.stats.map_runs[0].failed == 0


def test_a_batch_failing_for_good_fails_the_map_and_the_catch_routes_to_commit() -> None:
    # given
    def read(event: Any) -> Any:
        if PACKAGES[3] in event["Items"]:
            raise BatchIncompleteError("3 packages left")
        return {"read": len(event["Items"])}

    reindex = Reindex(read)
    # when
    execution = reindex.run()
    # then: 8 retries, 5 s doubling, capped at 300 s, full jitter
    assert reindex.sleeps == [delay * 0.5 for delay in (5, 10, 20, 40, 80, 160, 300, 300)]
    (run,) = execution.stats.map_runs
    assert (run.failed, run.failed_items, run.errors) == (1, 3, {"BatchIncompleteError": 1})
    (commit_input,) = reindex.lambdas.payloads(COMMIT)
    assert commit_input["read_error"] == {
        "Error": "States.ExceedToleratedFailureThreshold",
        "Cause": TOLERATED_FAILURE_CAUSE,
    }
    assert commit_input["run"] == "r1"
    assert execution.status == "FAILED"
    assert (execution.error, execution.cause) == ("ReindexIncomplete", "3 packages of run r1 left unread")


def test_no_child_execution_starts_once_the_tolerated_failures_are_exceeded() -> None:
    # given: one batch at a time, the first failing without a retrier for its error
    def read(event: Any) -> Any:
        raise PackageGoneError("gone")

    reindex = Reindex(read)
    # when
    execution = reindex.run(concurrency=1)
    # then
    (run,) = execution.stats.map_runs
    assert (run.batches, run.started, run.failed, run.errors) == (4, 1, 1, {"PackageGoneError": 1})
    assert execution.stats.invocations[READ] == 1
    assert (
        reindex.lambdas.payloads(COMMIT)[0]["read_error"]["Error"] == "States.ExceedToleratedFailureThreshold"
    )


def test_a_bad_request_ends_in_the_fail_state_with_the_plans_error_as_cause() -> None:
    reindex = Reindex()
    reindex.lambdas.handlers[PLAN] = lambda event: {"ok": False, "error": '"channel" is missing'}

    execution = reindex.run()

    assert (execution.status, execution.error, execution.cause) == (
        "FAILED",
        "BadRequest",
        '"channel" is missing',
    )
    assert execution.output is None
    assert execution.stats.invocations == {PLAN: 1}


def test_cdks_batch_input_without_dollar_suffix_reaches_the_children_as_literal_text() -> None:
    # CDK 2.275 renders ItemBatcher(batch_input={"run": JsonPath.string_at("$.run")}) as {"run": "$.run"}:
    # Step Functions then passes the text itself, and so does the driver.
    definition = reindex_definition()
    definition["States"]["Read"]["ItemBatcher"]["BatchInput"] = {"run": "$.run"}
    reindex = Reindex()
    driver = machine(definition, reindex.lambdas, objects={MANIFEST: json.dumps(PACKAGES).encode()})

    driver.run({"channel": "conda"}, "nightly-1")

    assert {json.dumps(batch["BatchInput"]) for batch in reindex.lambdas.payloads(READ)} == {
        '{"run": "$.run"}'
    }


# --- Distributed Map details -------------------------------------------------------------------------------


def distributed_map(**fields: Any) -> dict[str, Any]:
    return {
        "Type": "Map",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "Work",
            "States": {"Work": {"Type": "Task", "Resource": WORK, "End": True}},
        },
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSON"},
            "Parameters": {"Bucket": "b", "Key.$": "$.key"},
        },
        "End": True,
        **fields,
    }


def test_without_a_batcher_each_selected_item_is_a_child_execution_and_max_items_limits_the_reader() -> None:
    lambdas = Lambdas({WORK: lambda event: event["i"]})
    state = distributed_map(
        ItemSelector={"pkg.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index", "k.$": "$.key"}
    )
    state["ItemReader"]["ReaderConfig"]["MaxItems"] = 4
    driver = machine(one_state(state), lambdas, objects={("b", "m.json"): b'["a", "b", "c", "d", "e"]'})

    execution = driver.run({"key": "m.json"})

    assert execution.output == [0, 1, 2, 3]
    assert sorted(lambdas.payloads(WORK), key=lambda event: event["i"]) == [
        {"pkg": pkg, "i": index, "k": "m.json"} for index, pkg in enumerate("abcd")
    ]
    assert execution.stats.map_runs[0].batches == 4


def test_max_input_bytes_per_batch_bounds_each_childs_input() -> None:
    lambdas = Lambdas({WORK: lambda event: len(event["Items"])})
    items = [f"item-{index:03d}-" + "x" * (index % 7) * 10 for index in range(60)]
    state = distributed_map(ItemBatcher={"MaxInputBytesPerBatch": 400, "BatchInput": {"fixed": 1}})
    driver = machine(one_state(state), lambdas, objects={("b", "m.json"): json.dumps(items).encode()})

    execution = driver.run({"key": "m.json"})

    batches = sorted(lambdas.payloads(WORK), key=lambda batch: items.index(batch["Items"][0]))
    assert [item for batch in batches for item in batch["Items"]] == items
    assert all(len(json.dumps(batch, separators=(",", ":")).encode()) <= 400 for batch in batches)
    assert all(batch["BatchInput"] == {"fixed": 1} for batch in batches)
    assert sum(execution.output) == len(items) and len(batches) > 1


@pytest.mark.parametrize(
    ("tolerance", "status"),
    [({"ToleratedFailurePercentage": 30}, "SUCCEEDED"), ({"ToleratedFailureCount": 2}, "FAILED")],
)
def test_failed_items_are_weighed_against_the_tolerated_threshold(
    tolerance: dict[str, Any], status: str
) -> None:
    # given: 10 items in batches of 3, the first batch failing: 3 failed items (30 %)
    def work(event: Any) -> Any:
        if 0 in event["Items"]:
            raise StatesError("Broken", "batch 0")
        return "ok"

    state = distributed_map(ItemBatcher={"MaxItemsPerBatch": 3}, MaxConcurrency=1, **tolerance)
    driver = machine(
        one_state(state), Lambdas({WORK: work}), objects={("b", "m.json"): b"[0,1,2,3,4,5,6,7,8,9]"}
    )
    # when
    execution = driver.run({"key": "m.json"})
    # then
    assert execution.status == status
    if status == "SUCCEEDED":
        assert execution.output == [{"Error": "Broken", "Cause": "batch 0"}, "ok", "ok", "ok"]
    else:
        assert execution.error == "States.ExceedToleratedFailureThreshold"
        assert execution.stats.map_runs[0].started == 1


def test_a_batch_over_the_quota_fails_its_child_execution_with_data_limit_exceeded() -> None:
    items = ["small", "x" * PAYLOAD_LIMIT_BYTES, "small too"]
    state = distributed_map(ItemBatcher={"MaxItemsPerBatch": 10}, ToleratedFailureCount=1)
    driver = machine(
        one_state(state),
        Lambdas({WORK: lambda event: "ok"}),
        objects={("b", "m.json"): json.dumps(items).encode()},
    )

    execution = driver.run({"key": "m.json"})

    (run,) = execution.stats.map_runs
    assert (run.batches, run.failed_items, run.errors) == (3, 1, {"States.DataLimitExceeded": 1})
    assert execution.output[0] == execution.output[2] == "ok"


@pytest.mark.parametrize(
    ("body", "detail"), [(b'{"items": []}', "does not hold a JSON array"), (None, "failed: KeyError")]
)
def test_an_unreadable_manifest_fails_the_map_with_item_reader_failed(
    body: bytes | None, detail: str
) -> None:
    state = distributed_map(
        Catch=[{"ErrorEquals": ["States.ItemReaderFailed"], "Next": "Caught"}], Next="Done"
    )
    del state["End"]
    objects = {} if body is None else {("b", "m.json"): body}
    driver = machine(
        one_state(state, Caught={"Type": "Pass", "End": True}, Done={"Type": "Succeed"}), objects=objects
    )

    execution = driver.run({"key": "m.json"})

    assert execution.output["Error"] == "States.ItemReaderFailed"
    assert detail in execution.output["Cause"]
    assert execution.stats.states_entered["Caught"] == 1


def test_a_retrier_on_the_map_starts_a_new_map_run() -> None:
    attempts: list[int] = []

    def work(item: Any) -> Any:
        attempts.append(item)
        if len(attempts) == 1:
            raise StatesError("Flaky")
        return item

    retry = [{"ErrorEquals": ["States.ExceedToleratedFailureThreshold"], "MaxAttempts": 1}]
    sleeps: list[float] = []
    state = distributed_map(MaxConcurrency=1, Retry=retry)
    driver = machine(
        one_state(state), Lambdas({WORK: work}), objects={("b", "m.json"): b"[7, 8]"}, sleeps=sleeps
    )

    execution = driver.run({"key": "m.json"})

    assert (execution.status, execution.output, sleeps) == ("SUCCEEDED", [7, 8], [1.0])
    assert len(execution.stats.map_runs) == 2


# --- Inline Map --------------------------------------------------------------------------------------------


def test_inline_map_iterates_items_path_with_item_selector_and_context() -> None:
    state = {
        "Type": "Map",
        "ItemsPath": "$.packages",
        "ItemSelector": {
            "name.$": "$$.Map.Item.Value",
            "index.$": "$$.Map.Item.Index",
            "channel.$": "$.channel",
        },
        "ItemProcessor": {"StartAt": "Keep", "States": {"Keep": {"Type": "Pass", "End": True}}},
        "ResultPath": "$.results",
        "End": True,
    }
    execution = machine(one_state(state)).run({"channel": "c", "packages": ["a", "b"]})

    assert execution.output["results"] == [
        {"name": "a", "index": 0, "channel": "c"},
        {"name": "b", "index": 1, "channel": "c"},
    ]


def test_legacy_iterator_and_parameters_run_concurrently_and_a_failed_iteration_is_caught() -> None:
    gate = Gate(parties=2)

    def work(event: Any) -> Any:
        with gate:
            if event["n"] == 3:
                raise PackageGoneError("no such package")
            return event["n"] * 10

    state = {
        "Type": "Map",
        "MaxConcurrency": 2,
        "ItemsPath": "$.items",
        "Parameters": {"n.$": "$$.Map.Item.Value"},
        "Iterator": {"StartAt": "Work", "States": {"Work": {"Type": "Task", "Resource": WORK, "End": True}}},
        "Catch": [{"ErrorEquals": ["PackageGoneError"], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True,
    }
    driver = machine(one_state(state, Caught={"Type": "Succeed"}), Lambdas({WORK: work}))

    succeeded = driver.run({"items": [1, 2]})
    failed = driver.run({"items": [1, 2, 3, 4]})

    assert succeeded.output == [10, 20]
    assert succeeded.stats.map_runs[0].max_concurrency == 2
    assert failed.status == "SUCCEEDED"
    assert failed.output["error"]["Error"] == "PackageGoneError"
    assert json.loads(failed.output["error"]["Cause"])["errorMessage"] == "no such package"


def test_a_fail_state_in_an_iteration_fails_the_inline_map_with_its_error() -> None:
    state = {
        "Type": "Map",
        "ItemProcessor": {
            "StartAt": "Stop",
            "States": {"Stop": {"Type": "Fail", "Error": "Stopped", "Cause": "by the iteration"}},
        },
        "End": True,
    }
    execution = machine(one_state(state)).run([1])

    assert (execution.status, execution.error, execution.cause) == ("FAILED", "Stopped", "by the iteration")


# --- Tasks, Retry and Catch --------------------------------------------------------------------------------


def test_lambda_invoke_returns_the_payload_in_the_invoke_response_and_a_function_arn_the_value() -> None:
    lambdas = Lambdas({WORK: lambda event: {"got": event}})
    definition = {
        "StartAt": "Invoke",
        "States": {
            "Invoke": invoke_state(WORK, ResultPath="$.invoked", Next="Direct"),
            "Direct": {
                "Type": "Task",
                "Resource": WORK,
                "InputPath": "$.invoked",
                "Parameters": {"status.$": "$.StatusCode"},
                "ResultSelector": {"direct.$": "$.got"},
                "End": True,
            },
        },
    }
    execution = machine(definition, lambdas).run({"x": 1})

    invoked = lambdas.payloads(WORK)
    assert invoked[0] == {"x": 1}
    assert invoked[1] == {"status": 200}
    assert execution.output == {"direct": {"status": 200}}


def test_the_invoke_response_has_the_fields_aws_returns() -> None:
    execution = machine(one_state(invoke_state(WORK, End=True)), Lambdas({WORK: lambda event: [1]})).run({})

    assert execution.output["Payload"] == [1]
    assert execution.output["StatusCode"] == 200
    assert execution.output["ExecutedVersion"] == "$LATEST"
    assert execution.output["SdkHttpMetadata"]["HttpStatusCode"] == 200
    assert execution.output["SdkResponseMetadata"]["RequestId"]


def test_an_unhandled_exception_is_reported_as_lambda_reports_it() -> None:
    def handler(event: Any) -> Any:
        raise PackageGoneError("linux-64/a-1-0.conda is gone")

    execution = machine(one_state(invoke_state(WORK, End=True)), Lambdas({WORK: handler})).run({})

    assert (execution.status, execution.error) == ("FAILED", "PackageGoneError")
    cause = json.loads(execution.cause or "")
    assert cause["errorMessage"] == "linux-64/a-1-0.conda is gone"
    assert cause["errorType"] == "PackageGoneError"
    assert any("in handler" in line for line in cause["stackTrace"])


def test_a_value_lambda_cannot_serialize_is_a_marshal_error() -> None:
    execution = machine(one_state(invoke_state(WORK, End=True)), Lambdas({WORK: lambda event: object()})).run(
        {}
    )

    assert execution.error == "Runtime.MarshalError"


def flaky(*errors: str) -> Lambdas:
    """A function raising the given errors in turn, then returning "done"."""
    pending = list(errors)

    def handler(event: Any) -> Any:
        if pending:
            raise StatesError(pending.pop(0), "try again")
        return "done"

    return Lambdas({WORK: handler})


@pytest.mark.parametrize(
    ("retrier", "jitter", "delays"),
    [
        ({}, 1.0, [1, 2, 4]),
        (
            {"IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 4, "MaxDelaySeconds": 20},
            1.0,
            [2, 6, 18, 20],
        ),
        (
            {"IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 4, "JitterStrategy": "FULL"},
            0.25,
            [0.5, 1.5, 4.5, 13.5],
        ),
        (
            {"IntervalSeconds": 4, "BackoffRate": 1.5, "MaxAttempts": 2, "JitterStrategy": "NONE"},
            0.25,
            [4, 6],
        ),
        ({"MaxAttempts": 0}, 1.0, []),
    ],
)
def test_retry_backoff(retrier: dict[str, Any], jitter: float, delays: list[float]) -> None:
    # given: a function that always fails
    sleeps: list[float] = []
    state = {"Type": "Task", "Resource": WORK, "Retry": [{"ErrorEquals": ["Flaky"], **retrier}], "End": True}
    driver = machine(one_state(state), flaky(*["Flaky"] * 10), sleeps=sleeps, jitter=jitter)
    # when
    execution = driver.run({})
    # then
    assert sleeps == delays
    assert (execution.status, execution.error) == ("FAILED", "Flaky")
    assert execution.stats.invocations[WORK] == len(delays) + 1
    assert execution.stats.retries["Only"] == len(delays)


def test_each_retrier_counts_its_own_attempts_and_the_first_match_decides() -> None:
    sleeps: list[float] = []
    retry = [
        {"ErrorEquals": ["A"], "MaxAttempts": 2},
        {"ErrorEquals": ["B"], "MaxAttempts": 2},
        {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5},
    ]
    state = {"Type": "Task", "Resource": WORK, "Retry": retry, "End": True}

    execution = machine(one_state(state), flaky("A", "B", "A", "B", "A"), sleeps=sleeps, jitter=1.0).run({})

    # A's third failure finds A's retrier spent: the later States.ALL retrier is not asked
    assert sleeps == [1, 1, 2, 2]
    assert (execution.status, execution.error) == ("FAILED", "A")


@pytest.mark.parametrize(
    ("names", "error", "retried"),
    [
        (["States.TaskFailed"], "BatchIncompleteError", True),
        (["States.TaskFailed"], "States.Timeout", False),
        (["States.ALL"], "States.Timeout", True),
        (["Other"], "BatchIncompleteError", False),
    ],
)
def test_retrier_error_matching(names: list[str], error: str, retried: bool) -> None:
    sleeps: list[float] = []
    state = {"Type": "Task", "Resource": WORK, "Retry": [{"ErrorEquals": names}], "End": True}

    execution = machine(one_state(state), flaky(error), sleeps=sleeps).run({})

    assert (execution.status == "SUCCEEDED") is retried


def test_catch_puts_error_and_cause_at_its_result_path_and_picks_the_first_matching_catcher() -> None:
    catchers = [
        {"ErrorEquals": ["Other"], "Next": "Wrong"},
        {"ErrorEquals": ["Broken"], "ResultPath": "$.error", "Next": "Caught"},
        {"ErrorEquals": ["States.ALL"], "Next": "Wrong"},
    ]
    definition = one_state(
        {"Type": "Task", "Resource": WORK, "Catch": catchers, "End": True},
        Caught={"Type": "Pass", "End": True},
        Wrong={"Type": "Fail"},
    )
    execution = machine(definition, flaky("Broken")).run({"kept": True})

    assert execution.output == {"kept": True, "error": {"Error": "Broken", "Cause": "try again"}}


def test_catch_without_result_path_replaces_the_input_with_the_error() -> None:
    definition = one_state(
        {
            "Type": "Task",
            "Resource": WORK,
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            "End": True,
        },
        Caught={"Type": "Succeed"},
    )
    execution = machine(definition, flaky("Broken")).run({"kept": True})

    assert execution.output == {"Error": "Broken", "Cause": "try again"}


# --- Input and output processing ---------------------------------------------------------------------------


def test_parameters_render_nested_paths_context_and_static_values() -> None:
    parameters = {
        "a": {"b.$": "$.x", "list": [{"c.$": "$['odd key']"}, 1, "$.not-a-path"]},
        "second.$": "$.list[1]",
        "whole.$": "$",
        "name.$": "$$.Execution.Name",
        "id.$": "$$.Execution.Id",
        "input.$": "$$.Execution.Input",
        "state.$": "$$.State.Name",
        "machine.$": "$$.StateMachine.Id",
        "started.$": "$$.Execution.StartTime",
        "entered.$": "$$.State.EnteredTime",
    }
    data = {"x": 1, "odd key": 2, "list": ["p", "q"]}
    execution = machine(one_state({"Type": "Pass", "Parameters": parameters, "End": True})).run(data, "run-7")

    output = execution.output
    assert output["a"] == {"b": 1, "list": [{"c": 2}, 1, "$.not-a-path"]}
    assert (output["second"], output["whole"], output["input"]) == ("q", data, data)
    assert (output["name"], output["state"]) == ("run-7", "Only")
    assert output["id"] == "arn:aws:states:us-east-1:123456789012:execution:local:run-7"
    assert output["machine"] == "arn:aws:states:us-east-1:123456789012:stateMachine:local"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", output["started"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", output["entered"])


@pytest.mark.parametrize(
    ("fields", "output"),
    [
        ({"ResultPath": None}, {"a": {"b": 1}}),
        ({"ResultPath": "$"}, "R"),
        ({}, "R"),
        ({"ResultPath": "$.a.c"}, {"a": {"b": 1, "c": "R"}}),
        ({"ResultPath": "$.new.deep"}, {"a": {"b": 1}, "new": {"deep": "R"}}),
        ({"ResultPath": "$.new", "OutputPath": "$.new"}, "R"),
        (
            {"InputPath": "$.a", "Parameters": {"got.$": "$.b"}, "ResultPath": "$.p"},
            {"a": {"b": 1}, "p": "R"},
        ),
        ({"InputPath": None, "Result": None, "ResultPath": "$.empty"}, {"a": {"b": 1}, "empty": None}),
        ({"OutputPath": None}, {}),
    ],
)
def test_result_path_and_output_path(fields: dict[str, Any], output: Any) -> None:
    state = {"Type": "Pass", "Result": "R", "End": True, **fields}

    assert machine(one_state(state)).run({"a": {"b": 1}}).output == output


def test_pass_without_result_passes_its_input_after_parameters() -> None:
    state = {
        "Type": "Pass",
        "InputPath": "$.a",
        "Parameters": {"got.$": "$.b"},
        "ResultPath": "$.p",
        "End": True,
    }

    assert machine(one_state(state)).run({"a": {"b": 1}}).output == {"a": {"b": 1}, "p": {"got": 1}}


def test_result_path_through_a_string_is_a_catchable_result_path_match_failure() -> None:
    definition = one_state(
        {
            "Type": "Task",
            "Resource": WORK,
            "ResultPath": "$.a.b",
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            "End": True,
        },
        Caught={"Type": "Succeed"},
    )
    execution = machine(definition, Lambdas({WORK: lambda event: 1})).run({"a": "text"})

    assert execution.output["Error"] == "States.ResultPathMatchFailure"


@pytest.mark.parametrize(
    "field",
    [{"InputPath": "$.missing"}, {"Parameters": {"x.$": "$.missing"}}, {"OutputPath": "$.missing"}],
)
def test_a_path_selecting_nothing_fails_the_execution_whatever_the_catchers(field: dict[str, Any]) -> None:
    catch = [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]
    retry = [{"ErrorEquals": ["States.ALL"]}]
    state = {"Type": "Task", "Resource": WORK, "Retry": retry, "Catch": catch, "End": True, **field}
    execution = machine(one_state(state, Caught={"Type": "Succeed"}), Lambdas({WORK: lambda event: {}})).run(
        {}
    )

    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert "'$.missing'" in (execution.cause or "") and "'Only'" in (execution.cause or "")


def test_a_result_over_the_quota_is_data_limit_exceeded_and_cannot_be_caught() -> None:
    catch = [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]
    definition = one_state(invoke_state(WORK, Catch=catch, End=True), Caught={"Type": "Succeed"})
    big = "x" * PAYLOAD_LIMIT_BYTES

    execution = machine(definition, Lambdas({WORK: lambda event: big})).run({})

    assert (execution.status, execution.error) == ("FAILED", "States.DataLimitExceeded")


def test_a_state_output_over_the_quota_is_data_limit_exceeded() -> None:
    half = "y" * (PAYLOAD_LIMIT_BYTES // 2)
    state = {"Type": "Pass", "Parameters": {"a.$": "$.half", "b.$": "$.half"}, "End": True}

    execution = machine(one_state(state)).run({"half": half})

    assert execution.error == "States.DataLimitExceeded"


def test_an_execution_input_over_the_quota_is_refused() -> None:
    with pytest.raises(ValueError, match="262144"):
        machine(one_state({"Type": "Succeed"})).run("z" * PAYLOAD_LIMIT_BYTES)


# --- Choice, Wait, Fail ------------------------------------------------------------------------------------

CHOICE_INPUT = {"s": "linux-64/pkg.conda", "n": 3, "f": 2.5, "t": True, "null": None, "other": 3, "word": "b"}


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ({"Variable": "$.s", "StringEquals": "linux-64/pkg.conda"}, True),
        ({"Variable": "$.n", "StringEquals": "3"}, False),
        ({"Variable": "$.s", "StringMatches": "linux-64/*.conda"}, True),
        ({"Variable": "$.s", "StringMatches": "*.tar.bz2"}, False),
        ({"Variable": "$.word", "StringLessThan": "c"}, True),
        ({"Variable": "$.n", "NumericEquals": 3}, True),
        ({"Variable": "$.f", "NumericGreaterThan": 2}, True),
        ({"Variable": "$.n", "NumericGreaterThanEquals": 3}, True),
        ({"Variable": "$.n", "NumericLessThan": 3}, False),
        ({"Variable": "$.f", "NumericLessThanEquals": 2.5}, True),
        ({"Variable": "$.t", "NumericEquals": 1}, False),
        ({"Variable": "$.t", "BooleanEquals": True}, True),
        ({"Variable": "$.n", "NumericEqualsPath": "$.other"}, True),
        ({"Variable": "$.s", "StringEqualsPath": "$.word"}, False),
        ({"Variable": "$.missing", "IsPresent": False}, True),
        ({"Variable": "$.null", "IsPresent": True}, True),
        ({"Variable": "$.null", "IsNull": True}, True),
        ({"Variable": "$.t", "IsBoolean": True}, True),
        ({"Variable": "$.n", "IsNumeric": True}, True),
        ({"Variable": "$.s", "IsString": False}, False),
        (
            {"And": [{"Variable": "$.t", "BooleanEquals": True}, {"Variable": "$.n", "NumericEquals": 3}]},
            True,
        ),
        (
            {"Or": [{"Variable": "$.t", "BooleanEquals": False}, {"Variable": "$.n", "NumericEquals": 4}]},
            False,
        ),
        ({"Not": {"Variable": "$.t", "BooleanEquals": False}}, True),
        ({"Variable": "$$.Execution.Name", "StringEquals": "local-execution"}, True),
    ],
)
def test_choice_rules(rule: dict[str, Any], matches: bool) -> None:
    choice = {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"}
    definition = one_state(
        choice,
        Yes={"Type": "Pass", "Result": "yes", "End": True},
        No={"Type": "Pass", "Result": "no", "End": True},
    )

    assert machine(definition).run(CHOICE_INPUT).output == ("yes" if matches else "no")


def test_string_matches_escapes() -> None:
    choice = {
        "Type": "Choice",
        "Choices": [{"Variable": "$", "StringMatches": r"a\*b\\*", "Next": "Yes"}],
        "Default": "No",
    }
    definition = one_state(choice, Yes={"Type": "Succeed"}, No={"Type": "Fail", "Error": "No"})

    assert machine(definition).run("a*b\\tail").status == "SUCCEEDED"
    assert machine(definition).run("axb\\tail").status == "FAILED"


def test_choice_without_a_match_or_default_fails_with_no_choice_matched() -> None:
    choice = {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "Yes"}]}

    execution = machine(one_state(choice, Yes={"Type": "Succeed"})).run({"n": 2})

    assert execution.error == "States.NoChoiceMatched"


def test_a_choice_on_a_missing_variable_is_a_runtime_error() -> None:
    choice = {
        "Type": "Choice",
        "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "Yes"}],
        "Default": "Yes",
    }

    assert machine(one_state(choice, Yes={"Type": "Succeed"})).run({}).error == "States.Runtime"


def test_wait_sleeps_through_the_injected_sleep() -> None:
    sleeps: list[float] = []
    definition = {
        "StartAt": "Fixed",
        "States": {
            "Fixed": {"Type": "Wait", "Seconds": 5, "Next": "FromInput"},
            "FromInput": {"Type": "Wait", "SecondsPath": "$.wait", "End": True},
        },
    }
    assert machine(definition, sleeps=sleeps).run({"wait": 7}).output == {"wait": 7}
    assert sleeps == [5, 7]
    assert machine(definition, sleeps=[]).run({"wait": "soon"}).error == "States.Runtime"


@pytest.mark.parametrize(
    ("fail", "error", "cause"),
    [
        ({"Error": "Stopped", "Cause": "because"}, "Stopped", "because"),
        ({"ErrorPath": "$.e", "CausePath": "$.c.text"}, "FromInput", "one line"),
        ({"Error": "Stopped", "CausePath": "$.c"}, "States.Runtime", None),
    ],
)
def test_fail_reports_error_and_cause(fail: dict[str, Any], error: str, cause: str | None) -> None:
    execution = machine(one_state({"Type": "Fail", **fail})).run(
        {"e": "FromInput", "c": {"text": "one line"}}
    )

    assert (execution.status, execution.error) == ("FAILED", error)
    if cause is not None:
        assert execution.cause == cause


# --- Definitions refused -----------------------------------------------------------------------------------


def with_change(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    definition = reindex_definition()
    change(definition)
    return definition


STATES = "States"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[STATES]["Read"].update(ResultWriter={}), "state 'Read' (Map): field 'ResultWriter'"),
        (lambda d: d[STATES]["Plan"].update(Credentials={}), "state 'Plan' (Task): field 'Credentials'"),
        (lambda d: d.update(Extra=1), "definition: field 'Extra'"),
        (lambda d: d[STATES]["Indexed"].update(Type="Parallel"), "state type 'Parallel' is not simulated"),
        (
            lambda d: d[STATES]["Read"]["ItemReader"]["ReaderConfig"].update(InputType="CSV"),
            "InputType 'CSV' is not simulated",
        ),
        (
            lambda d: d[STATES]["Read"]["ItemReader"].update(Resource="arn:aws:states:::s3:listObjectsV2"),
            "not simulated (only arn:aws:states:::s3:getObject)",
        ),
        (
            lambda d: d[STATES]["Plan"]["Parameters"]["Payload"].update({"x.$": "States.Format('{}', $.a)"}),
            "intrinsic function",
        ),
        (lambda d: d[STATES]["Plan"].update(Resource="arn:aws:states:::sqs:sendMessage"), "is not simulated"),
        (lambda d: d[STATES]["Plan"].update(Next="Nowhere"), "Next 'Nowhere' is not a state"),
        (lambda d: d.update(StartAt="Nowhere"), "StartAt 'Nowhere' is not a state"),
        (lambda d: d[STATES]["Plan"].pop("Next"), 'needs Next or "End": true'),
        (
            lambda d: d[STATES].update(Orphan={"Type": "Succeed"}),
            "state 'Orphan': is not reachable from StartAt",
        ),
        (
            lambda d: d[STATES]["Commit"]["Catch"].append({"ErrorEquals": ["Other"], "Next": "CommitFailed"}),
            "States.ALL must appear alone, in the last",
        ),
        (
            lambda d: d[STATES]["Plan"].update(OutputPath="$.items[*]"),
            "JSONPath '$.items[*]' is not simulated",
        ),
        (
            lambda d: d[STATES]["Read"]["ItemBatcher"].update(MaxInputBytesPerBatch=300_000),
            "MaxInputBytesPerBatch",
        ),
        (lambda d: d[STATES]["Read"].update(MaxConcurrencyPath="$.n"), "field 'MaxConcurrencyPath'"),
        (
            lambda d: d[STATES]["Complete?"]["Choices"][0].update(TimestampEquals="2024-01-01T00:00:00Z"),
            "field 'TimestampEquals' is not simulated",
        ),
        (
            lambda d: d[STATES]["Plan"]["Retry"][0].update(JitterStrategy="HALF"),
            "JitterStrategy must be FULL or NONE",
        ),
        (lambda d: d.update(QueryLanguage="JSONata"), "QueryLanguage 'JSONata' is not simulated"),
    ],
)
def test_definitions_using_what_the_driver_does_not_simulate_are_refused(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        machine(with_change(change))

    assert message in str(refused.value)


def test_every_problem_is_listed_at_once() -> None:
    def change(definition: dict[str, Any]) -> None:
        definition[STATES]["Read"]["ResultWriter"] = {}
        definition[STATES]["Plan"]["Credentials"] = {}

    with pytest.raises(DefinitionError) as refused:
        machine(with_change(change))

    assert "'ResultWriter'" in str(refused.value) and "'Credentials'" in str(refused.value)


def test_a_definition_is_accepted_as_json_text_with_timeouts_and_comments() -> None:
    definition = reindex_definition()
    definition["Comment"] = "full reindex"
    definition[STATES]["Plan"].update(TimeoutSeconds=900, HeartbeatSeconds=60, Comment="plan")

    driver = machine(json.dumps(definition), Reindex().lambdas, objects={MANIFEST: b"[]"})
    execution = driver.run({})

    assert execution.status == "SUCCEEDED"
    assert execution.stats.map_runs[0].batches == 0
