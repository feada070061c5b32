"""ReindexWorkflow: the fan-out full reindex as a Step Functions Standard workflow — plan, a Distributed Map
of read batches over the plan's manifest, commit — with a role that may invoke only its three functions and
read only the runs' manifests."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.nag import acknowledge_wildcards
from reindexer.contract import (
    BATCH_INCOMPLETE_ERROR,
    COMMIT_INCOMPLETE_ERROR,
    FANOUT_BATCH_BYTES,
    run_manifest_patterns,
)

# Lambda's own failures to run an invocation, worth trying again (throttling included: at a high
# MaxConcurrency the account's concurrency is the usual limit).
LAMBDA_TRANSIENT_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
# A function that ran out of its time (the steps stop well before it, so this is rare): the result object of
# a read is written at its end, so the retry starts that batch over.
LAMBDA_TIMEOUT_ERROR = "Sandbox.Timedout"
LOG_DELIVERY_ACTIONS = [
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
]
TRACE_ACTIONS = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
]
EXECUTION_TIMEOUT = cdk.Duration.hours(24)
RUNS_LOG_RETENTION = logs.RetentionDays.ONE_MONTH


class ReindexWorkflow(Construct):
    """Started with the full-reindex request (`{"channel", "subdirs"?, "force"?}`); ends Succeeded when every
    package is indexed, Failed with a one-line cause otherwise (bad request, packages left, commit failed)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        channel_prefixes: tuple[str, ...],
        plan: lambda_.IFunction,
        read: lambda_.IFunction,
        commit: lambda_.IFunction,
        concurrency: int,
        batch_items: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.functions = (plan, read, commit)
        planned = tasks.LambdaInvoke(
            self,
            "Plan",
            lambda_function=plan,
            payload=sfn.TaskInput.from_object(
                {"request": sfn.JsonPath.entire_payload, "execution": sfn.JsonPath.execution_name}
            ),
            payload_response_only=False,
            retry_on_service_exceptions=False,
            output_path="$.Payload",
            comment="List the channel against each subdir's state; write the packages to read as a manifest",
        )
        planned.add_retry(errors=LAMBDA_TRANSIENT_ERRORS, **_backoff(2, 6, 60))
        bad_request = sfn.Fail(self, "BadRequest", error="BadRequest", cause_path="$.error")

        read_batch = tasks.LambdaInvoke(
            self,
            "ReadBatch",
            lambda_function=read,
            payload=sfn.TaskInput.from_json_path_at("$"),
            retry_on_service_exceptions=False,
            # One number per batch (the packages it indexed): the map gathers its children's outputs into
            # one array, held to the 256 KiB of a state's output; records and reasons are in the result
            # object and in the child execution's history.
            output_path="$.Payload.indexed",
            comment="Read one batch of packages into one result object",
        )
        # Packages throttled or left when the time ran out: each retry reads only what earlier ones left.
        read_batch.add_retry(errors=[BATCH_INCOMPLETE_ERROR], **_backoff(5, 8, 300))
        read_batch.add_retry(errors=LAMBDA_TRANSIENT_ERRORS, **_backoff(2, 8, 120))
        read_batch.add_retry(errors=[LAMBDA_TIMEOUT_ERROR], **_backoff(5, 2, 60))
        read_map = sfn.DistributedMap(
            self,
            "Read",
            item_reader=sfn.S3JsonItemReader(
                bucket_name_path=sfn.JsonPath.string_at("$.manifest.bucket"),
                key=sfn.JsonPath.string_at("$.manifest.key"),
            ),
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=batch_items,
                max_input_bytes_per_batch=FANOUT_BATCH_BYTES,
                # CDK renders BatchInput as given: paths need their ".$" keys spelled out.
                batch_input={"bucket.$": "$.bucket", "channel.$": "$.channel", "run.$": "$.run"},
            ),
            max_concurrency=concurrency,
            # Any batch that failed past its retries fails the map: reported, never dropped. The commit
            # still runs (the Catch) and reads what the failed batches left within its time.
            tolerated_failure_percentage=0,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
            label="ReadBatches",
            comment="Read the manifest's packages, a batch per child execution",
        )
        read_map.item_processor(read_batch)

        committed = tasks.LambdaInvoke(
            self,
            "Commit",
            lambda_function=commit,
            payload=sfn.TaskInput.from_json_path_at("$"),
            retry_on_service_exceptions=False,
            output_path="$.Payload",
            comment="Per subdir, under its lease: merge the batches' results into the state as it is now, "
            "publish; then delete the run's objects",
        )
        committed.add_retry(errors=[COMMIT_INCOMPLETE_ERROR], **_backoff(10, 5, 300))
        committed.add_retry(errors=LAMBDA_TRANSIENT_ERRORS, **_backoff(2, 6, 60))
        # No Catch: a commit that still fails fails the execution at this task, with the function's error, so
        # a redrive of the execution resumes here with every batch's results in place.
        read_map.add_catch(committed, errors=["States.ALL"], result_path="$.read_error")
        read_map.next(committed)

        finished = (
            sfn.Choice(self, "Complete?")
            .when(sfn.Condition.boolean_equals("$.complete", True), sfn.Succeed(self, "Indexed"))
            .otherwise(sfn.Fail(self, "Incomplete", error="ReindexIncomplete", cause_path="$.summary"))
        )
        committed.next(finished)

        definition = planned.next(
            sfn.Choice(self, "Planned?")
            .when(sfn.Condition.boolean_equals("$.ok", False), bad_request)
            .when(sfn.Condition.number_greater_than("$.items", 0), read_map)
            .otherwise(committed)
        )

        self.log_group = logs.LogGroup(self, "Logs", retention=RUNS_LOG_RETENTION)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="Full reindex of a channel of any size: plan, read in parallel batches, commit",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=EXECUTION_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            # CDK would add grants of its own to a role it may change (the item reader's on the whole
            # bucket); this one gets exactly _grant_run's.
            role=self.role.without_policy_updates(),
        )
        # CDK's own grants for the map's child executions, made for a role it may change, are not attached
        # to this one (nor synthesized); MapRunPolicy holds them.
        self.state_machine.node.try_remove_child("DistributedMapPolicy")
        self._grant_run(bucket, channel_prefixes)

    def _grant_run(self, bucket: s3.IBucket, channel_prefixes: tuple[str, ...]) -> None:
        """Invoke the three functions, read the runs' manifests, run the map's child executions of this
        state machine, deliver its logs and traces: nothing else."""
        work = iam.Policy(
            self,
            "RunPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="InvokeSteps",
                    actions=["lambda:InvokeFunction"],
                    resources=[function.function_arn for function in self.functions],
                ),
                iam.PolicyStatement(
                    sid="ReadRunManifests",
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(p) for p in run_manifest_patterns(channel_prefixes)],
                ),
                # CloudWatch Logs' delivery and X-Ray's actions support no resource-level permissions.
                iam.PolicyStatement(sid="DeliverLogs", actions=LOG_DELIVERY_ACTIONS, resources=["*"]),
                iam.PolicyStatement(sid="Traces", actions=TRACE_ACTIONS, resources=["*"]),
            ],
        )
        work.attach_to_role(self.role)
        acknowledge_wildcards(
            work,
            ["*", *(bucket.arn_for_objects(p) for p in run_manifest_patterns(channel_prefixes))],
            "Log delivery and X-Ray support no resource-level permissions; the ItemReader reads the manifest "
            "of a run named after its execution, unknown at deploy time.",
        )
        # The state machine must not start before its role may do its work.
        self.state_machine.node.add_dependency(work)
        # The map's child executions are executions of this state machine; naming its ARN makes this
        # policy depend on it, so it is a second policy the state machine does not wait for (as CDK's own).
        machine = self.state_machine
        executions = self._arn("execution", f"{self._name}/*")
        children = iam.Policy(
            self,
            "MapRunPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="StartMapRuns",
                    actions=["states:StartExecution"],
                    resources=[machine.state_machine_arn],
                ),
                iam.PolicyStatement(
                    sid="WatchMapRuns",
                    actions=["states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"],
                    resources=[executions],
                ),
            ],
        )
        children.attach_to_role(self.role)
        acknowledge_wildcards(
            children,
            [executions],
            "The map's child executions are named by Step Functions at run time; only this state "
            "machine's executions are covered.",
        )

    # --- operations ------------------------------------------------------------------------------------

    def allow_operators(self, policy: iam.ManagedPolicy) -> None:
        """Let operators start, follow, stop and redrive the fan-out reindex: this state machine's
        executions and map runs only."""
        machine = self.state_machine
        executions = self._arn("execution", f"{self._name}:*")
        map_runs = self._arn("mapRun", f"{self._name}/*")
        policy.add_statements(
            iam.PolicyStatement(
                sid="StartFanoutReindex",
                actions=["states:StartExecution", "states:ListExecutions", "states:DescribeStateMachine"],
                resources=[machine.state_machine_arn],
            ),
            iam.PolicyStatement(
                sid="FollowFanoutReindex",
                actions=[
                    "states:DescribeExecution",
                    "states:GetExecutionHistory",
                    "states:StopExecution",
                    "states:RedriveExecution",
                    "states:ListMapRuns",
                ],
                resources=[executions],
            ),
            iam.PolicyStatement(sid="FollowMapRuns", actions=["states:DescribeMapRun"], resources=[map_runs]),
        )
        acknowledge_wildcards(
            policy,
            [executions, map_runs],
            "Executions and map runs are named at run time; only this state machine's are covered.",
        )

    def alarms(self) -> list[cloudwatch.Alarm]:
        """An execution that failed (bad request, packages left, commit failed) or timed out."""
        machine = self.state_machine
        return [
            cloudwatch.Alarm(
                self,
                f"Executions{what}Alarm",
                alarm_description=f"A fan-out full reindex {description} (see the execution's cause)",
                metric=metric(period=cdk.Duration.minutes(5), statistic="Sum"),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            for what, description, metric in (
                ("Failed", "failed", machine.metric_failed),
                ("TimedOut", "timed out", machine.metric_timed_out),
                ("Aborted", "was stopped", machine.metric_aborted),
            )
        ]

    def dashboard_widgets(self, period: cdk.Duration) -> list[cloudwatch.IWidget]:
        """Executions by outcome and the steps' durations; each map run's progress is in the console."""
        machine = self.state_machine
        plan, read, commit = self.functions
        return [
            cloudwatch.GraphWidget(
                title="Fan-out full reindex: executions",
                left=[
                    machine.metric_started(statistic="Sum", period=period, label="started"),
                    machine.metric_succeeded(statistic="Sum", period=period, label="succeeded"),
                    machine.metric_failed(statistic="Sum", period=period, label="failed"),
                    machine.metric_timed_out(statistic="Sum", period=period, label="timed out"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Fan-out full reindex: step invocations and errors (read errors include retries)",
                left=[
                    function.metric_invocations(statistic="Sum", period=period, label=f"{step} invocations")
                    for step, function in (("plan", plan), ("read", read), ("commit", commit))
                ],
                right=[
                    function.metric_errors(statistic="Sum", period=period, label=f"{step} errors")
                    for step, function in (("plan", plan), ("read", read), ("commit", commit))
                ],
                width=12,
            ),
        ]

    @property
    def _name(self) -> str:
        """The state machine's name (a token), from its ARN."""
        arn = self.state_machine.state_machine_arn
        name = cdk.Arn.split(arn, cdk.ArnFormat.COLON_RESOURCE_NAME).resource_name
        assert name is not None
        return name

    def _arn(self, resource: str, name: str) -> str:
        return cdk.Stack.of(self).format_arn(
            service="states",
            resource=resource,
            resource_name=name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )


def _backoff(interval: int, attempts: int, max_delay: int) -> dict[str, object]:
    """Exponential backoff with full jitter (many child executions retry at once), capped."""
    return {
        "interval": cdk.Duration.seconds(interval),
        "max_attempts": attempts,
        "backoff_rate": 2,
        "max_delay": cdk.Duration.seconds(max_delay),
        "jitter_strategy": sfn.JitterType.FULL,
    }
