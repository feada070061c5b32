"""The fan-out full reindex's state machine as synthesized: its definition (plan, the Distributed Map's item
reader, batcher, concurrency, retries and error handling, commit, the end states), and a role that may invoke
only its three functions and read only the runs' manifests."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.state_machine_template import SynthesizedStateMachine, state_machines
from reindexer.contract import (
    BATCH_INCOMPLETE_ERROR,
    COMMIT_INCOMPLETE_ERROR,
    DEFAULT_FANOUT_BATCH_ITEMS,
    DEFAULT_FANOUT_CONCURRENCY,
    FANOUT_BATCH_BYTES,
    RUN_COMMIT_HANDLER,
    RUN_MANIFEST,
    RUN_PLAN_HANDLER,
    RUN_READ_HANDLER,
    RUNS_FOLDER,
)
from tests.infra.test_conda_channel import (
    CHANNELS,
    action_allowed,
    flat,
    iam_matches,
    in_channel,
    managed_policy,
    only,
    resources,
    statements,
    template,
)

MODES = ["private", "public", "tuned"]
# (concurrency, packages per batch) each mode's context asks for
FANOUT = {
    "private": (DEFAULT_FANOUT_CONCURRENCY, DEFAULT_FANOUT_BATCH_ITEMS),
    "public": (DEFAULT_FANOUT_CONCURRENCY, DEFAULT_FANOUT_BATCH_ITEMS),
    "tuned": (1000, 40),
}
LAMBDA_THROTTLED = "Lambda.TooManyRequestsException"
LAMBDA_SERVICE = "Lambda.ServiceException"


def machine(mode: str) -> SynthesizedStateMachine:
    (found,) = state_machines(template(mode)).values()
    return found


def states(mode: str) -> dict[str, Any]:
    return dict(machine(mode).definition["States"])


def handler_of(mode: str, task: dict[str, Any]) -> str:
    assert task["Resource"] == "arn:aws:states:::lambda:invoke", task
    return machine(mode).handlers[task["Parameters"]["FunctionName"]]


def retrier(task: dict[str, Any], error: str) -> dict[str, Any]:
    (found,) = [r for r in task.get("Retry", []) if error in r["ErrorEquals"]]
    return dict(found)


def read_map(mode: str) -> dict[str, Any]:
    return dict(states(mode)["Read"])


def read_task(mode: str) -> dict[str, Any]:
    processor = read_map(mode)["ItemProcessor"]
    return dict(processor["States"][processor["StartAt"]])


@pytest.mark.parametrize("mode", MODES)
def test_the_plan_gets_the_execution_input_and_name_and_bad_requests_end_the_execution(mode):
    definition = machine(mode).definition
    plan = states(mode)[definition["StartAt"]]
    assert handler_of(mode, plan) == RUN_PLAN_HANDLER
    assert plan["Parameters"]["Payload"] == {"request.$": "$", "execution.$": "$$.Execution.Name"}
    assert plan["OutputPath"] == "$.Payload"
    choice = states(mode)[plan["Next"]]
    assert choice["Type"] == "Choice"
    bad, work = choice["Choices"]
    assert bad == {"Variable": "$.ok", "BooleanEquals": False, "Next": bad["Next"]}
    assert states(mode)[bad["Next"]] == {"Type": "Fail", "Error": "BadRequest", "CausePath": "$.error"}
    # Something to read: the map; nothing: straight to the commit (which writes nothing new).
    assert work == {"Variable": "$.items", "NumericGreaterThan": 0, "Next": "Read"}
    assert choice["Default"] == "Commit"


@pytest.mark.parametrize("mode", MODES)
def test_the_map_reads_the_plans_manifest_in_batches_at_the_configured_concurrency(mode):
    concurrency, batch_items = FANOUT[mode]
    step = read_map(mode)
    assert step["Type"] == "Map"
    assert step["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert step["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket.$": "$.manifest.bucket", "Key.$": "$.manifest.key"},
    }
    assert step["ItemBatcher"] == {
        "MaxItemsPerBatch": batch_items,
        "MaxInputBytesPerBatch": FANOUT_BATCH_BYTES,
        "BatchInput": {"bucket.$": "$.bucket", "channel.$": "$.channel", "run.$": "$.run"},
    }
    # A batch is one state input: well under Step Functions' 256 KiB.
    assert FANOUT_BATCH_BYTES <= 256 * 1024 // 2
    assert step["MaxConcurrency"] == concurrency
    # No failed batch tolerated: Step Functions' default, which CDK leaves unwritten for 0.
    assert step.get("ToleratedFailurePercentage", 0) == 0
    assert "ToleratedFailureCount" not in step and "ToleratedFailurePercentagePath" not in step
    # The batches' results are objects the commit reads; the map's own output is dropped (no 256 KiB limit).
    assert step["ResultPath"] is None
    assert step["Label"]


@pytest.mark.parametrize("mode", MODES)
def test_each_batch_is_read_by_the_read_function_and_retried_with_capped_jittered_backoff(mode):
    task = read_task(mode)
    assert handler_of(mode, task) == RUN_READ_HANDLER
    assert task["Parameters"]["Payload.$"] == "$"
    # A number per batch: the map's array of outputs stays far below 256 KiB even at 10,000 batches.
    assert task["OutputPath"] == "$.Payload.indexed"
    assert task.get("End") is True and "Catch" not in task
    incomplete = retrier(task, BATCH_INCOMPLETE_ERROR)
    assert incomplete["MaxAttempts"] >= 5
    for error in (BATCH_INCOMPLETE_ERROR, LAMBDA_THROTTLED, LAMBDA_SERVICE):
        retry = retrier(task, error)
        assert retry["BackoffRate"] > 1 and retry["JitterStrategy"] == "FULL", retry
        assert retry["IntervalSeconds"] <= retry["MaxDelaySeconds"] <= 300, retry
    # No States.ALL: a batch that fails for a reason retrying cannot fix fails at once, and the map with it.
    assert not any("States.ALL" in r["ErrorEquals"] for r in task["Retry"])


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_map_still_commits_with_its_error_and_a_failed_commit_fails_the_execution_there(mode):
    step = read_map(mode)
    assert step["Next"] == "Commit"
    assert step["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.read_error", "Next": "Commit"}]
    commit = states(mode)["Commit"]
    assert handler_of(mode, commit) == RUN_COMMIT_HANDLER
    assert commit["Parameters"]["Payload.$"] == "$"
    assert commit["OutputPath"] == "$.Payload"
    retry = retrier(commit, COMMIT_INCOMPLETE_ERROR)
    assert retry["MaxAttempts"] >= 3 and retry["JitterStrategy"] == "FULL"
    assert retrier(commit, LAMBDA_THROTTLED)["MaxAttempts"] >= 3
    # Uncaught: the execution fails at the commit itself, so a redrive resumes there (a Catch into a Fail
    # state would make the redrive run the Fail state again).
    assert "Catch" not in commit
    done = states(mode)[commit["Next"]]
    (complete,) = done["Choices"]
    assert complete["Variable"] == "$.complete" and complete["BooleanEquals"] is True
    assert states(mode)[complete["Next"]] == {"Type": "Succeed"}
    assert states(mode)[done["Default"]] == {
        "Type": "Fail",
        "Error": "ReindexIncomplete",
        "CausePath": "$.summary",
    }


@pytest.mark.parametrize("mode", MODES)
def test_the_state_machine_is_standard_logged_traced_and_bounded_in_time(mode):
    properties = only(mode, "AWS::StepFunctions::StateMachine")["Properties"]
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    # Execution data holds channel keys only, but logs stay lean.
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert 3600 <= machine(mode).definition["TimeoutSeconds"] <= 7 * 86400


def machine_role_statements(mode: str) -> list[dict[str, Any]]:
    role = only(mode, "AWS::StepFunctions::StateMachine")["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    assert "ManagedPolicyArns" not in template(mode)["Resources"][role]["Properties"]
    return [
        statement
        for policy in resources(mode, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in statements(policy)
    ]


def granted(mode: str, action: str) -> list[Any]:
    return [
        resource
        for statement in machine_role_statements(mode)
        if action_allowed(statement["Action"], action)
        for resource in (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
    ]


@pytest.mark.parametrize("mode", MODES)
def test_the_state_machine_may_invoke_only_its_three_functions(mode):
    functions = resources(mode, "AWS::Lambda::Function")
    steps = {
        name
        for name, function in functions.items()
        if function["Properties"]["Handler"] in (RUN_PLAN_HANDLER, RUN_READ_HANDLER, RUN_COMMIT_HANDLER)
    }
    assert len(steps) == 3
    assert sorted(flat(r) for r in granted(mode, "lambda:InvokeFunction")) == sorted(
        flat({"Fn::GetAtt": [name, "Arn"]}) for name in steps
    )
    assert all(statement["Effect"] == "Allow" for statement in machine_role_statements(mode))


@pytest.mark.parametrize("mode", MODES)
def test_the_state_machine_reads_only_the_runs_manifests_of_its_channels(mode):
    (bucket,) = resources(mode, "AWS::S3::Bucket")
    manifests = granted(mode, "s3:GetObject")
    patterns = [resource["Fn::Join"][1][1] for resource in manifests]
    assert all(resource["Fn::Join"][1][0] == {"Fn::GetAtt": [bucket, "Arn"]} for resource in manifests)
    for channel in CHANNELS[mode]:
        manifest = "/" + in_channel(channel, RUNS_FOLDER, "20261203T120000Z-run", RUN_MANIFEST)
        assert any(iam_matches(p, manifest) for p in patterns), manifest
        for other in ("noarch/repodata.json", "noarch/pkg-1-0.conda", f"{RUNS_FOLDER}/r/results/b.json"):
            assert not any(iam_matches(p, "/" + in_channel(channel, other)) for p in patterns), other
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "lambda:UpdateFunctionCode"):
        assert granted(mode, action) == [], action


@pytest.mark.parametrize("mode", MODES)
def test_the_state_machine_starts_and_watches_only_its_own_child_executions(mode):
    (machine_id,) = resources(mode, "AWS::StepFunctions::StateMachine")
    assert granted(mode, "states:StartExecution") == [{"Ref": machine_id}]
    for action in ("states:DescribeExecution", "states:StopExecution"):
        (executions,) = granted(mode, action)
        assert f'"Ref": "{machine_id}"' in flat(executions) and flat(executions).endswith('"/*"]]}')
    actions = {
        action
        for statement in machine_role_statements(mode)
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert {a.split(":")[0] for a in actions} == {"lambda", "s3", "states", "logs", "xray"}


def test_operators_may_start_follow_and_stop_the_fanout_reindex():
    policy = statements(managed_policy("public", "Start a full reindex"))
    (machine_id,) = resources("public", "AWS::StepFunctions::StateMachine")
    (start,) = [s for s in policy if s.get("Sid") == "StartFanoutReindex"]
    assert action_allowed(start["Action"], "states:StartExecution")
    assert start["Resource"] == {"Ref": machine_id}
    (follow,) = [s for s in policy if s.get("Sid") == "FollowFanoutReindex"]
    for action in ("states:DescribeExecution", "states:StopExecution", "states:GetExecutionHistory"):
        assert action_allowed(follow["Action"], action)


def test_outputs_give_the_state_machine_and_a_ready_start_command():
    outputs = template("public")["Outputs"]
    (machine_id,) = resources("public", "AWS::StepFunctions::StateMachine")
    (arn,) = [o for name, o in outputs.items() if name.startswith("ChannelFanoutReindexStateMachineArn")]
    assert arn["Value"] == {"Ref": machine_id}
    (command,) = [o for name, o in outputs.items() if name.startswith("ChannelFanoutReindexCommand")]
    parts = command["Value"]["Fn::Join"][1]
    assert parts[0] == "aws stepfunctions start-execution --state-machine-arn "
    assert parts[1] == {"Ref": machine_id}
    assert parts[2] == """ --input '{"channel": "dev"}'"""


@pytest.mark.parametrize("mode", MODES)
def test_the_step_functions_run_the_step_handlers_with_the_full_reindex_sizing(mode):
    functions = resources(mode, "AWS::Lambda::Function").values()
    reindex = next(f for f in functions if f["Properties"]["Handler"].endswith("full_reindex.handler"))
    for handler in (RUN_PLAN_HANDLER, RUN_READ_HANDLER, RUN_COMMIT_HANDLER):
        (step,) = [f for f in functions if f["Properties"]["Handler"] == handler]
        for key in ("MemorySize", "Timeout", "EphemeralStorage", "Runtime", "Architectures"):
            assert step["Properties"][key] == reindex["Properties"][key], (handler, key)
