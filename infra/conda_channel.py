"""CondaChannel: a self-indexing conda channel bucket — bucket, notifications, queue, both indexer functions,
the nightly reconciliation schedule, least-privilege policies for publishers and operators, alarms, the mail
of rejected packages and a dashboard. Reusable inside any CDK app."""

from __future__ import annotations

import hashlib
import json
import re

import aws_cdk as cdk
import jsii
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import acknowledge, acknowledge_wildcards
from infra.reindex_workflow import ReindexWorkflow
from infra.settings import ChannelSettings, FunctionSettings
from reindexer.contract import (
    ACCESS_VARIABLE,
    BATCH_SIZE,
    BATCHING_WINDOW_SECONDS,
    BUCKET_VARIABLE,
    DEFAULT_EVENT_BUS,
    EVENT_BUS_VARIABLE,
    EVENT_SOURCE,
    FULL_REINDEX_HANDLER,
    JOBS_VARIABLE,
    MAX_AGE_VARIABLE,
    MAX_PACKAGE_VARIABLE,
    MAX_RECEIVE_COUNT,
    METRICS_NAMESPACE,
    METRICS_NAMESPACE_VARIABLE,
    PACKAGE_EVENTS_HANDLER,
    PACKAGE_SUFFIXES,
    PREFIXES_VARIABLE,
    REPODATA_PATCH_VARIABLE,
    RUN_COMMIT_HANDLER,
    RUN_PLAN_HANDLER,
    RUN_READ_HANDLER,
    SERVICE_NAME,
    SERVICE_NAME_VARIABLE,
    SHARD_RETENTION_VARIABLE,
    VISIBILITY_TIMEOUT_FACTOR,
    DetailType,
    Metric,
    ObjectGrants,
    full_reindex_grants,
    indexer_grants,
    notification_filters,
    operator_grants,
    private_state_patterns,
    run_commit_grants,
    run_plan_grants,
    run_read_grants,
)

LOG_RETENTION = logs.RetentionDays.ONE_MONTH
# Storage classes that need a restore before GetObject (or SSE-C, whose key the indexer never has) would
# make an uploaded package unreadable to the indexer.
READABLE_STORAGE_CLASS = "STANDARD"
# A scheduled reconciliation the scheduler could not hand to Lambda is retried this often, within this time,
# then sent to its dead-letter queue (Lambda takes the invocation asynchronously: accepted is delivered).
RECONCILE_RETRY_ATTEMPTS = 2
RECONCILE_MAX_EVENT_AGE = cdk.Duration.hours(1)
DASHBOARD_PERIOD = cdk.Duration.minutes(5)


class CondaChannel(Construct):
    """The whole deployment of one channel bucket; `settings` come validated from ChannelSettings."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: ChannelSettings, code: lambda_.Code
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.bucket = self._bucket()
        self.dead_letters = sqs.Queue(
            self,
            "PackageEventsDeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "PackageEvents",
            # S3 can publish to SQS-managed encryption, not to the aws/sqs KMS key.
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(
                VISIBILITY_TIMEOUT_FACTOR * settings.event_function.timeout_seconds
            ),
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letters, max_receive_count=MAX_RECEIVE_COUNT
            ),
        )
        self._notify_package_changes()

        self.event_function = self._function(
            "PackageEventsFunction",
            PACKAGE_EVENTS_HANDLER,
            settings.event_function,
            code,
            "Indexes uploaded and deleted packages",
        )
        self.event_function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=BATCH_SIZE,
                max_batching_window=cdk.Duration.seconds(BATCHING_WINDOW_SECONDS),
                report_batch_item_failures=True,
            )
        )
        self.reindex_function = self._function(
            "FullReindexFunction",
            FULL_REINDEX_HANDLER,
            settings.reindex_function,
            code,
            "Full reindex of a channel",
        )
        prefixes = settings.channel_prefixes
        self._grant_indexing(
            self.event_function,
            indexer_grants(prefixes),
            "Subdir folders are created by uploads and not known at deploy time; the patterns end in the "
            "indexer's own file names (repodata, shards, state, lease) or, for reads, cover the channel; "
            "the probe of the store's conditional requests uses scratch objects with random names.",
        )
        self._grant_indexing(
            self.reindex_function,
            full_reindex_grants(prefixes),
            "Subdir folders are created by uploads and not known at deploy time; the patterns end in the "
            "indexer's own file names (repodata, shards, state, lease, the patch instructions an operator's "
            "request edits) or, for reads, cover the channel; only this function deletes superseded shards "
            "(under <subdir>/shards/, once unreferenced for shard_retention_days); the probe of the "
            "store's conditional requests uses scratch objects with random names.",
        )
        self.workflow = self._reindex_workflow(code)
        for function in (self.event_function, self.reindex_function, self.workflow.functions[2]):
            self._grant_channel_events(function)
        self.reconcile_dead_letters, self.reconcile_schedules = self._reconcile_schedules()

        self.publisher_policy = self._publisher_policy()
        self.reader_policy = self._reader_policy()
        self.operator_policy = self._operator_policy()
        self.alarm_topic = self._alarms()
        self.rejections_rule = self._mail_rejections()
        self.dashboard = self._dashboard()
        self._outputs()
        self._acknowledge_design_choices()

    # --- storage ---------------------------------------------------------------------------------------

    def _bucket(self) -> s3.IBucket:
        settings = self.settings
        if settings.existing_bucket:
            return s3.Bucket.from_bucket_name(self, "ChannelBucket", settings.existing_bucket)
        public = settings.public
        bucket = s3.Bucket(
            self,
            "ChannelBucket",
            bucket_name=settings.bucket_name,
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            block_public_access=s3.BlockPublicAccess(
                block_public_acls=True,
                ignore_public_acls=True,
                block_public_policy=not public,
                restrict_public_buckets=not public,
            ),
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="AbortIncompleteUploads", abort_incomplete_multipart_upload_after=cdk.Duration.days(7)
                ),
                s3.LifecycleRule(
                    id="ExpireOldVersions",
                    noncurrent_version_expiration=cdk.Duration.days(settings.noncurrent_version_days),
                    expired_object_delete_marker=True,
                ),
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN
            if settings.removal_policy == "retain"
            else cdk.RemovalPolicy.DESTROY,
        )
        if public:
            for statement in self._public_read_statements(bucket):
                bucket.add_to_resource_policy(statement)
        return bucket

    def _public_read_statements(self, bucket: s3.IBucket) -> list[iam.PolicyStatement]:
        """What pixi needs of a public channel (read objects, list the bucket), limited to the channels.

        Anonymous reads stop at the channel prefixes, and the indexer's state under them stays private.
        """
        prefixes = self.settings.channel_prefixes
        read = iam.PolicyStatement(
            sid="PublicReadChannel",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[bucket.arn_for_objects(_join(prefix, "*")) for prefix in self._channel_prefixes()],
        )
        # S3 answers a GET of a missing key with 404 rather than 403 only to callers allowed to list, and
        # checks that permission with the requested key as s3:prefix, so the condition keeps those 404s.
        listing = iam.PolicyStatement(
            sid="PublicListChannel",
            principals=[iam.AnyPrincipal()],
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}/*" for prefix in prefixes]}}
            if prefixes
            else None,
        )
        # An Allow's Resource cannot leave out a sub-pattern, so the state folders get an explicit Deny. It
        # must not reach the function roles (nor anyone else in this account, who is governed by IAM):
        # aws:PrincipalAccount is in every request context, "anonymous" for unsigned requests, so
        # StringNotEquals matches anonymous and other accounts' callers and never this account's roles. A
        # negated operator is also true when its key is missing, so a request without the key would be
        # denied, not let through.
        state = iam.PolicyStatement(
            sid="PublicNeverReadsIndexerState",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[
                bucket.arn_for_objects(pattern)
                for pattern in private_state_patterns(self.settings.channel_prefixes)
            ],
            conditions={"StringNotEquals": {"aws:PrincipalAccount": cdk.Stack.of(self).account}},
        )
        return [read, listing, state]

    def _channel_prefixes(self) -> tuple[str, ...]:
        return self.settings.channel_prefixes or ("",)

    def _notify_package_changes(self) -> None:
        """Created and removed packages and patch instructions (`<subdir>/patch_instructions.json`) only:
        the indexer's own writes never match these filters.

        ObjectRemoved:* includes DeleteMarkerCreated, which is what a delete on a versioned bucket makes.
        """
        destination = s3n.SqsDestination(self.queue)
        for prefix, suffix in notification_filters(self.settings.channel_prefixes):
            key_filter = s3.NotificationKeyFilter(prefix=prefix, suffix=suffix)
            for event in (s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED):
                self.bucket.add_event_notification(event, destination, key_filter)

    # --- functions -------------------------------------------------------------------------------------

    def _function(
        self, construct_id: str, handler: str, sizing: FunctionSettings, code: lambda_.Code, description: str
    ) -> lambda_.Function:
        settings = self.settings
        environment = {
            BUCKET_VARIABLE: self.bucket.bucket_name,
            MAX_AGE_VARIABLE: str(settings.repodata_max_age),
            JOBS_VARIABLE: str(settings.read_jobs),
            MAX_PACKAGE_VARIABLE: str(settings.max_package_mb),
            ACCESS_VARIABLE: settings.access,
            SERVICE_NAME_VARIABLE: SERVICE_NAME,
            METRICS_NAMESPACE_VARIABLE: METRICS_NAMESPACE,
            # Events for automation go to the account's default bus, the one bus the roles may put them on.
            EVENT_BUS_VARIABLE: DEFAULT_EVENT_BUS,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        if settings.channel_prefixes:
            environment[PREFIXES_VARIABLE] = ",".join(settings.channel_prefixes)
        # Read by full runs only (they delete shards); both functions get one configuration.
        environment[SHARD_RETENTION_VARIABLE] = str(settings.shard_retention_days)
        if settings.repodata_patch:
            environment[REPODATA_PATCH_VARIABLE] = settings.repodata_patch
        log_group = logs.LogGroup(self, f"{construct_id}Logs", retention=LOG_RETENTION)
        # An explicit role instead of AWSLambdaBasicExecutionRole: logs go to this function's group only.
        role = iam.Role(self, f"{construct_id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        log_group.grant_write(role)
        return lambda_.Function(
            self,
            construct_id,
            description=description,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=code,
            memory_size=sizing.memory_mb,
            timeout=cdk.Duration.seconds(sizing.timeout_seconds),
            # Packages are spooled to /tmp while they are read, up to read_jobs of them at once.
            ephemeral_storage_size=cdk.Size.mebibytes(settings.ephemeral_storage_mb),
            environment=environment,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
        )

    def _reindex_workflow(self, code: lambda_.Code) -> ReindexWorkflow:
        """The fan-out full reindex: a function per step, each with the grants of its step only (the
        commit's are the full reindex's but for the patch-instruction edits, and the run folders'
        deletion), and the state machine."""
        prefixes = self.settings.channel_prefixes
        steps = []
        for name, handler, grants, description, reason in (
            (
                "RunPlan",
                RUN_PLAN_HANDLER,
                run_plan_grants(prefixes),
                "Full reindex, fan-out: plan the packages to read",
                "Reads each subdir's state (subdirs appear with uploads); writes a run's manifest under the "
                "runs folder and deletes expired runs there; run names are execution names, unknown at "
                "deploy time.",
            ),
            (
                "RunRead",
                RUN_READ_HANDLER,
                run_read_grants(prefixes),
                "Full reindex, fan-out: read one batch of packages",
                "Reads the channel's packages; writes only its batch's result object under the runs folder; "
                "run names are execution names, unknown at deploy time.",
            ),
            (
                "RunCommit",
                RUN_COMMIT_HANDLER,
                run_commit_grants(prefixes),
                "Full reindex, fan-out: commit the batches' results",
                "Publishes as the full reindex does (see its function; no patch-instruction edits) and "
                "deletes its run's objects under the runs folder; subdir folders and run names are not "
                "known at deploy time.",
            ),
        ):
            function = self._function(
                f"{name}Function", handler, self.settings.reindex_function, code, description
            )
            self._grant_indexing(function, grants, reason)
            steps.append(function)
        plan, read, commit = steps
        return ReindexWorkflow(
            self,
            "FanoutReindex",
            bucket=self.bucket,
            channel_prefixes=prefixes,
            plan=plan,
            read=read,
            commit=commit,
            concurrency=self.settings.fanout_concurrency,
            batch_items=self.settings.fanout_batch_items,
        )

    def _grant_indexing(self, function: lambda_.Function, grants: ObjectGrants, reason: str) -> None:
        """Read everything in the channels, write only the indexer's own keys, delete only what `grants`
        name (leases and probes; superseded shards for the full reindex)."""
        bucket = self.bucket
        statements = [
            # ListBucket also makes S3 answer 404 rather than 403 for a missing state or lease.
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]),
            *(
                iam.PolicyStatement(actions=[action], resources=[bucket.arn_for_objects(p) for p in patterns])
                for action, patterns in (
                    ("s3:GetObject", grants.read),
                    ("s3:PutObject", grants.write),
                    ("s3:DeleteObject", grants.delete),
                )
                if patterns
            ),
        ]
        for statement in statements:
            function.add_to_role_policy(statement)
        role = function.role
        assert role is not None
        acknowledge_wildcards(
            role,
            [
                bucket.arn_for_objects(pattern)
                for pattern in dict.fromkeys((*grants.read, *grants.write, *grants.delete))
                if "*" in pattern
            ],
            reason,
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions.",
        )

    def _grant_channel_events(self, function: lambda_.Function) -> None:
        """Put the indexer's events on the account's default bus (the functions' EVENT_BUS), and nothing
        else: source EVENT_SOURCE, one of DetailType.ALL.

        The Service Authorization Reference lists events:source (ArrayOfString) and events:detail-type
        (String) among PutEvents' condition keys; as in AWS's example policy for PutEvents, the multivalued
        source takes ForAllValues:StringEquals and the single-valued detail type StringEquals (any of the
        four; ForAllValues on a single-valued key would also pass a request without it).
        """
        bus = cdk.Stack.of(self).format_arn(
            service="events", resource="event-bus", resource_name=DEFAULT_EVENT_BUS
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                sid="PutChannelEvents",
                actions=["events:PutEvents"],
                resources=[bus],
                conditions={
                    "ForAllValues:StringEquals": {"events:source": [EVENT_SOURCE]},
                    "StringEquals": {"events:detail-type": list(DetailType.ALL)},
                },
            )
        )

    def _acknowledge_design_choices(self) -> None:
        """cdk-nag findings that are deliberate, each with the reason next to the resource it concerns."""
        for function in (self.event_function, self.reindex_function, *self.workflow.functions):
            acknowledge(
                function,
                "AwsSolutions-L1",
                "Python 3.13 is the runtime the bundled cp313 wheels are built for; both move together.",
            )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Server access logs need a second bucket per channel; use CloudTrail S3 data events for an audit "
            "trail of uploads and reads.",
        )
        if self.settings.public:
            acknowledge(
                self.bucket,
                "AwsSolutions-S2",
                "access=public was chosen: anonymous clients may only s3:GetObject and s3:ListBucket under "
                "the channel prefixes, never the indexer's state folders; ACLs stay blocked.",
            )
        stack = cdk.Stack.of(self)
        for child in stack.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                acknowledge(
                    child,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    "CDK's own singleton that configures bucket notifications at deploy time; its role is "
                    "managed by aws-cdk-lib.",
                )

    # --- reconciliation --------------------------------------------------------------------------------

    def _reconcile_schedules(self) -> tuple[sqs.Queue | None, list[scheduler.Schedule]]:
        """A full reindex of each channel on `reconcile_schedule` (UTC): it repairs what lost or failed
        events left behind and deletes superseded shards. Nothing when the setting is off."""
        expression = self.settings.reconcile_schedule
        if expression is None:
            return None, []
        dead_letters = sqs.Queue(
            self,
            "ReconcileDeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        acknowledge(
            dead_letters,
            "AwsSolutions-SQS3",
            "This queue is the dead-letter queue of the reconciliation schedules (their DeadLetterConfig).",
        )
        stack = cdk.Stack.of(self)
        # The schedules are in the default group; Scheduler names their group as aws:SourceArn.
        group = stack.format_arn(service="scheduler", resource="schedule-group", resource_name="default")
        role = iam.Role(
            self,
            "ReconcileSchedulerRole",
            description="EventBridge Scheduler: invoke the full reindex of each channel on schedule",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account, "aws:SourceArn": group}},
            ),
        )
        schedules = [
            scheduler.Schedule(
                self,
                f"Reconcile{_construct_suffix(prefix)}",
                description=f"Full reindex of the channel {prefix}"
                if prefix
                else "Full reindex of the channel at the bucket root",
                schedule=scheduler.ScheduleExpression.expression(expression, cdk.TimeZone.ETC_UTC),
                time_window=scheduler.TimeWindow.off(),
                target=scheduler_targets.LambdaInvoke(
                    self.reindex_function,
                    input=scheduler.ScheduleTargetInput.from_object({"channel": prefix}),
                    role=role,
                    retry_attempts=RECONCILE_RETRY_ATTEMPTS,
                    max_event_age=RECONCILE_MAX_EVENT_AGE,
                    dead_letter_queue=dead_letters,
                ),
            )
            for prefix in self._channel_prefixes()
        ]
        # Lambda's invoke grant covers the function's versions and aliases too (`<arn>:*`); still only it.
        acknowledge_wildcards(
            role,
            [f"{self.reindex_function.function_arn}:*"],
            "The scheduler may invoke the full-reindex function only: the pattern is its own qualified ARN "
            "(versions and aliases), as Function.grant_invoke writes it.",
        )
        return dead_letters, schedules

    # --- people ----------------------------------------------------------------------------------------

    def _publisher_policy(self) -> iam.ManagedPolicy:
        """Packagers may upload package files into the channels, readable by the indexer, and nothing else.

        Archived storage classes and SSE-C are refused in the Allow's conditions: IfExists and Null let an
        upload that sends neither header through, as most clients do.
        """
        packages = [
            self.bucket.arn_for_objects(_join(prefix, "*", f"*{suffix}"))
            for prefix in self._channel_prefixes()
            for suffix in PACKAGE_SUFFIXES
        ]
        policy = iam.ManagedPolicy(
            self,
            "PublisherPolicy",
            description="Upload .conda and .tar.bz2 packages into the channel (no access to the index)",
            statements=[
                iam.PolicyStatement(
                    sid="UploadPackages",
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=packages,
                    conditions={
                        "StringEqualsIfExists": {"s3:x-amz-storage-class": READABLE_STORAGE_CLASS},
                        "Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "true"},
                    },
                )
            ],
        )
        acknowledge_wildcards(
            policy,
            packages,
            "Packagers upload into any subdir of the channel; the patterns only match package file names.",
        )
        return policy

    def _reader_policy(self) -> iam.ManagedPolicy:
        """Clients of a private channel (pixi with AWS credentials) may read it, and nothing else."""
        objects = [self.bucket.arn_for_objects(_join(prefix, "*")) for prefix in self._channel_prefixes()]
        policy = iam.ManagedPolicy(
            self,
            "ReaderPolicy",
            description="Read the channel's packages and index (pixi, rattler, conda with AWS credentials)",
            statements=[
                iam.PolicyStatement(sid="ReadChannel", actions=["s3:GetObject"], resources=objects),
                iam.PolicyStatement(
                    sid="ListChannel", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn]
                ),
            ],
        )
        acknowledge_wildcards(policy, objects, "Readers may read everything under the channel prefix.")
        return policy

    def _operator_policy(self) -> iam.ManagedPolicy:
        """Operators may start a full reindex, move dead letters back to the queue, read the channel and edit
        each subdir's patch instructions (reindexer yank / unyank / patch), which the event function then
        applies."""
        bucket = self.bucket
        patches = operator_grants(self.settings.channel_prefixes)
        edits = [
            iam.PolicyStatement(
                sid=sid, actions=[action], resources=[bucket.arn_for_objects(p) for p in keys]
            )
            for sid, action, keys in (
                ("ReadChannel", "s3:GetObject", patches.read),
                ("WritePatchInstructions", "s3:PutObject", patches.write),
                ("DeletePatchInstructions", "s3:DeleteObject", patches.delete),
            )
        ]
        policy = iam.ManagedPolicy(
            self,
            "OperatorPolicy",
            description="Start a full reindex of the channel, redrive failed package events and edit the "
            "patch instructions",
            statements=[
                *edits,
                # S3 answers a GET of a missing key with 404 rather than 403 only to callers allowed to
                # list: a subdir without patch instructions then reads as "none yet". As for readers, the
                # listing stops at the channel prefixes.
                iam.PolicyStatement(
                    sid="ListChannel",
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={
                        "StringLike": {"s3:prefix": [f"{p}/*" for p in self.settings.channel_prefixes]}
                    }
                    if self.settings.channel_prefixes
                    else None,
                ),
                iam.PolicyStatement(
                    sid="StartFullReindex",
                    actions=["lambda:InvokeFunction"],
                    resources=[self.reindex_function.function_arn],
                ),
                iam.PolicyStatement(
                    sid="RedriveFailedEvents",
                    actions=[
                        "sqs:StartMessageMoveTask",
                        "sqs:ListMessageMoveTasks",
                        "sqs:CancelMessageMoveTask",
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:GetQueueAttributes",
                    ],
                    resources=[self.dead_letters.queue_arn],
                ),
                iam.PolicyStatement(
                    sid="RedriveDestination",
                    actions=["sqs:SendMessage", "sqs:GetQueueAttributes"],
                    resources=[self.queue.queue_arn],
                ),
            ],
        )
        acknowledge_wildcards(
            policy,
            [
                bucket.arn_for_objects(pattern)
                for pattern in dict.fromkeys((*patches.read, *patches.write, *patches.delete))
                if "*" in pattern
            ],
            "Operators edit the patch instructions of any subdir of the channel; the patterns only match "
            "patch_instructions.json.",
        )
        self.workflow.allow_operators(policy)
        return policy

    # --- operations ------------------------------------------------------------------------------------

    def _alarms(self) -> sns.Topic:
        topic = sns.Topic(self, "Alarms", display_name="conda channel indexer alarms", enforce_ssl=True)
        if self.settings.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(self.settings.alarm_email))
        action = cloudwatch_actions.SnsAction(topic)
        alarms = [
            cloudwatch.Alarm(
                self,
                "DeadLettersAlarm",
                alarm_description="Package events failed repeatedly and wait in the dead-letter queue",
                metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                    period=cdk.Duration.minutes(5)
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        ]
        if self.reconcile_dead_letters is not None:
            alarms.append(
                cloudwatch.Alarm(
                    self,
                    "ReconcileDeadLettersAlarm",
                    alarm_description="A scheduled reconciliation could not invoke the full reindex",
                    metric=self.reconcile_dead_letters.metric_approximate_number_of_messages_visible(
                        period=cdk.Duration.minutes(5)
                    ),
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        for name, function in (
            ("PackageEvents", self.event_function),
            ("FullReindex", self.reindex_function),
        ):
            alarms.append(
                cloudwatch.Alarm(
                    self,
                    f"{name}ErrorsAlarm",
                    alarm_description=f"The {name} function failed",
                    metric=function.metric_errors(period=cdk.Duration.minutes(5)),
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        alarms += self.workflow.alarms()
        alarms.append(
            cloudwatch.Alarm(
                self,
                "SubdirUpdateFailuresAlarm",
                alarm_description="A subdir could not be indexed (see the functions' logs for the reason)",
                metric=cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name=Metric.SUBDIR_UPDATE_FAILURES,
                    dimensions_map={"service": SERVICE_NAME},
                    statistic="Sum",
                    period=cdk.Duration.minutes(5),
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )
        for alarm in alarms:
            alarm.add_alarm_action(action)
        return topic

    def _mail_rejections(self) -> events.Rule | None:
        """An EventBridge rule sending each `Package Rejected` event of this bucket to the alarm topic as one
        readable line (setting mail_rejections; by default when alarm_email is set)."""
        if not self.settings.mails_rejections:
            return None
        rule = events.Rule(
            self,
            "MailRejections",
            description="Mail each package the indexer rejects to the alarm topic",
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=[DetailType.PACKAGE_REJECTED],
                detail={"bucket": [self.bucket.bucket_name]},
            ),
        )
        field = events.EventField.from_path
        message = events.RuleTargetInput.from_text(
            f"reindexer rejected {field('$.detail.file')} (bucket {field('$.detail.bucket')}, channel "
            f"'{field('$.detail.channel')}', subdir {field('$.detail.subdir')}): {field('$.detail.reason')}"
        )
        rule.add_target(_TopicForOneRule(self.alarm_topic, message))
        return rule

    def _dashboard(self) -> cloudwatch.Dashboard:
        """One page for operators: publication latency, packages, dead letters, errors, durations, full-run
        progress, conflicts, read failures and events that could not be put."""
        stack = cdk.Stack.of(self)
        dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=re.sub(r"[^A-Za-z0-9_-]", "", f"{stack.stack_name}-{self.node.id}"),
            default_interval=cdk.Duration.days(1),
        )
        functions = (("Package-event", self.event_function), ("Full-reindex", self.reindex_function))
        queues = [("package events", self.dead_letters)]
        if self.reconcile_dead_letters is not None:
            queues.append(("reconciliation", self.reconcile_dead_letters))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Upload to publication (ms)",
                left=[
                    _indexer_metric(Metric.PUBLICATION_LATENCY, "p50"),
                    _indexer_metric(Metric.PUBLICATION_LATENCY, "p99"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Packages",
                left=[
                    _indexer_metric(Metric.PACKAGES_INDEXED, "Sum", "indexed"),
                    _indexer_metric(Metric.PACKAGES_REJECTED, "Sum", "rejected"),
                    _indexer_metric(Metric.PACKAGES_REMOVED, "Sum", "removed"),
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Dead-letter queues (messages)",
                left=[
                    queue.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=DASHBOARD_PERIOD, label=label
                    )
                    for label, queue in queues
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Function errors",
                left=[
                    function.metric_errors(statistic="Sum", period=DASHBOARD_PERIOD, label=name)
                    for name, function in functions
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Read failures, commit conflicts, failed subdirs, events not put",
                left=[
                    _indexer_metric(Metric.READ_FAILURES, "Sum", "read failures"),
                    _indexer_metric(Metric.COMMIT_CONFLICTS, "Sum", "commit conflicts"),
                    _indexer_metric(Metric.SUBDIR_UPDATE_FAILURES, "Sum", "failed subdirs"),
                    _indexer_metric(Metric.EVENT_PUT_FAILURES, "Sum", "events not put"),
                ],
                width=8,
            ),
        )
        dashboard.add_widgets(
            *(
                cloudwatch.GraphWidget(
                    title=f"{name} function duration (ms)",
                    left=[
                        function.metric_duration(statistic=stat, period=DASHBOARD_PERIOD, label=stat)
                        for stat in ("p50", "p99", "Maximum")
                    ],
                    width=8,
                )
                for name, function in functions
            ),
            cloudwatch.GraphWidget(
                title="Full runs: subdirs reindexed, left for the next invocation",
                left=[
                    _indexer_metric(Metric.SUBDIRS_REINDEXED, "Sum", "reindexed"),
                    _indexer_metric(Metric.SUBDIRS_SKIPPED, "Sum", "left for later"),
                ],
                width=8,
            ),
        )
        dashboard.add_widgets(*self.workflow.dashboard_widgets(DASHBOARD_PERIOD))
        return dashboard

    def _outputs(self) -> None:
        bucket = self.bucket.bucket_name
        cdk.CfnOutput(self, "BucketName", value=bucket, description="The channel bucket")
        first = self._channel_prefixes()[0]
        cdk.CfnOutput(
            self,
            "ChannelUrls",
            value=" ".join(f"s3://{_join(bucket, prefix)}" for prefix in self._channel_prefixes()),
            description="Channel URLs for pixi and rattler (AWS credentials needed)",
        )
        if self.settings.public:
            region = cdk.Stack.of(self).region
            cdk.CfnOutput(
                self,
                "PublicChannelUrls",
                value=" ".join(
                    f"https://{bucket}.s3.{region}.amazonaws.com/{prefix}".rstrip("/")
                    for prefix in self._channel_prefixes()
                ),
                description="Public https channel URLs (no credentials needed)",
            )
        function = self.reindex_function.function_name
        payload = json.dumps({"channel": first})
        cdk.CfnOutput(
            self, "FullReindexFunctionName", value=function, description="Start it from the console"
        )
        cdk.CfnOutput(
            self,
            "FullReindexCommand",
            value=cdk.Fn.join(
                "",
                [
                    "aws lambda invoke --function-name ",
                    function,
                    # A reindex can outlast the CLI's 60 s read timeout, which would invoke it a second time.
                    " --cli-read-timeout 0 --cli-binary-format raw-in-base64-out",
                    f" --payload '{payload}' result.json",
                ],
            ),
            description="Start a full reindex from a shell",
        )
        machine = self.workflow.state_machine.state_machine_arn
        cdk.CfnOutput(
            self,
            "FanoutReindexStateMachineArn",
            value=machine,
            description="The full reindex of a channel of any size (Step Functions); see its map runs in the "
            "console",
        )
        cdk.CfnOutput(
            self,
            "FanoutReindexCommand",
            value=cdk.Fn.join(
                "",
                ["aws stepfunctions start-execution --state-machine-arn ", machine, f" --input '{payload}'"],
            ),
            description="Start a fan-out full reindex from a shell",
        )
        cdk.CfnOutput(self, "PublisherPolicyArn", value=self.publisher_policy.managed_policy_arn)
        cdk.CfnOutput(self, "OperatorPolicyArn", value=self.operator_policy.managed_policy_arn)
        cdk.CfnOutput(self, "ReaderPolicyArn", value=self.reader_policy.managed_policy_arn)
        cdk.CfnOutput(self, "DeadLetterQueueUrl", value=self.dead_letters.queue_url)
        cdk.CfnOutput(
            self,
            "DeadLetterQueueArn",
            value=self.dead_letters.queue_arn,
            description="Redrive with: aws sqs start-message-move-task --source-arn <this ARN>",
        )
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn)
        region = cdk.Stack.of(self).region
        cdk.CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#dashboards/dashboard/{self.dashboard.dashboard_name}",
            description="CloudWatch dashboard: latency, packages, dead letters, errors, full runs",
        )
        if self.reconcile_schedules:
            cdk.CfnOutput(
                self,
                "ReconcileSchedules",
                value=cdk.Fn.join(" ", [schedule.schedule_name for schedule in self.reconcile_schedules]),
                description=f"EventBridge schedules of the full reindex, {self.settings.reconcile_schedule} "
                "UTC, one per channel",
            )


@jsii.implements(events.IRuleTarget)
class _TopicForOneRule:
    """An SNS topic as the target of one rule, which alone may publish to it: the topic's policy lets
    events.amazonaws.com publish with aws:SourceArn that rule's ARN (aws_events_targets.SnsTopic would let
    every rule of every account's EventBridge publish)."""

    def __init__(self, topic: sns.ITopic, message: events.RuleTargetInput) -> None:
        self.topic = topic
        self.message = message

    def bind(self, rule: events.IRule, id: str | None = None) -> events.RuleTargetConfig:
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeRuleMailsRejections",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.rule_arn}},
            )
        )
        return events.RuleTargetConfig(arn=self.topic.topic_arn, input=self.message)


def _indexer_metric(name: str, statistic: str, label: str | None = None) -> cloudwatch.Metric:
    """A metric the handlers emit (namespace METRICS_NAMESPACE, dimension service), on the dashboard."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE_NAME},
        statistic=statistic,
        period=DASHBOARD_PERIOD,
        label=label or statistic,
    )


def _construct_suffix(prefix: str) -> str:
    """A construct id part for a channel prefix: readable, and distinct for prefixes that read alike."""
    if not prefix:
        return "Root"
    readable = re.sub(r"[^A-Za-z0-9]", "", prefix.title())[:40]
    return readable + hashlib.sha256(prefix.encode()).hexdigest()[:8]


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)
