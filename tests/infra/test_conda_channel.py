"""The deployed channel's properties, checked on synthesized templates in both access modes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from infra.channel_stack import ChannelStack
from infra.settings import CONTEXT_KEYS, ChannelSettings, SettingsError
from reindexer.contract import (
    ACCESS_VARIABLE,
    BUCKET_VARIABLE,
    DEFAULT_MAX_PACKAGE_MB,
    DEFAULT_READ_JOBS,
    JOBS_VARIABLE,
    LAMBDA_MAX_EPHEMERAL_MB,
    MAX_AGE_VARIABLE,
    MAX_PACKAGE_MB_LIMIT,
    MAX_PACKAGE_VARIABLE,
    MAX_READ_JOBS,
    PREFIXES_VARIABLE,
    PROBE_KEY_PREFIX,
    STORE_CONDITIONS_KEY,
    channel_prefix_problem,
    ephemeral_storage_mb,
)
from reindexer.contract import FULL_REINDEX_HANDLER as REINDEX_HANDLER
from reindexer.contract import PACKAGE_EVENTS_HANDLER as EVENT_HANDLER

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"access": "public", "channel_prefixes": "dev,prod", "alarm_email": "ops@example.com"}
PRIVATE = {
    "access": "private",
    "event_function_timeout": "120",
    "noncurrent_version_days": "10",
    "read_jobs": "3",
    "max_package_mb": "2000",
}
# A public channel at the bucket root: no channel_prefixes.
PUBLIC_ROOT = {"access": "public"}
CONTEXTS = {"private": PRIVATE, "public": PUBLIC, "public-root": PUBLIC_ROOT}
# The account the state Deny must leave alone; the function roles are created in this stack, so in it.
OWN_ACCOUNT = {"Ref": "AWS::AccountId"}


@cache
def template(mode: str) -> dict[str, Any]:
    app = cdk.App()
    stack = ChannelStack(
        app,
        f"Test{mode.replace('-', '')}",
        settings=ChannelSettings.from_context(CONTEXTS[mode]),
        code=lambda_.Code.from_inline("#"),
    )
    return dict(Template.from_stack(stack).to_json())


def resources(mode: str, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template(mode)["Resources"].items() if r["Type"] == kind}


def only(mode: str, kind: str) -> dict[str, Any]:
    (resource,) = resources(mode, kind).values()
    return resource


def statements(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(resource["Properties"]["PolicyDocument"]["Statement"])


def function(mode: str, handler: str) -> dict[str, Any]:
    (found,) = [
        f for f in resources(mode, "AWS::Lambda::Function").values() if f["Properties"]["Handler"] == handler
    ]
    return found


def role_statements(mode: str, handler: str) -> list[dict[str, Any]]:
    role = function(mode, handler)["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [
        p for p in resources(mode, "AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
    ]
    return [statement for policy in policies for statement in statements(policy)]


def flat(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --- bucket --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["private", "public"])
def test_bucket_is_versioned_encrypted_owner_enforced_and_cleans_up_old_versions(mode):
    properties = only(mode, "AWS::S3::Bucket")["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    rules = {rule["Id"]: rule for rule in properties["LifecycleConfiguration"]["Rules"]}
    assert rules["AbortIncompleteUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    days = 10 if mode == "private" else 30
    assert rules["ExpireOldVersions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": days}


def test_private_bucket_blocks_all_public_access_and_grants_nothing_anonymous():
    properties = only("private", "AWS::S3::Bucket")["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    allowed = [s for s in statements(only("private", "AWS::S3::BucketPolicy")) if s["Effect"] == "Allow"]
    assert allowed == []
    # Nobody outside the account can read anything, so there is no state folder to deny either.
    assert all(
        s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements(only("private", "AWS::S3::BucketPolicy"))
    )


def bucket_statement(mode: str, sid: str) -> dict[str, Any]:
    (statement,) = [s for s in statements(only(mode, "AWS::S3::BucketPolicy")) if s.get("Sid") == sid]
    return statement


def object_patterns(mode: str, statement: dict[str, Any]) -> list[str]:
    """The key patterns of a statement's object ARNs in the channel bucket (what follows `<bucket ARN>/`)."""
    bucket = next(iter(resources(mode, "AWS::S3::Bucket")))
    arns = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    patterns = []
    for arn in arns:
        bucket_arn, suffix = arn["Fn::Join"][1]
        assert bucket_arn == {"Fn::GetAtt": [bucket, "Arn"]}
        patterns.append(suffix.removeprefix("/"))
    return sorted(patterns)


@pytest.mark.parametrize("mode", ["public", "public-root"])
def test_public_bucket_lets_anyone_get_objects_and_list_and_nothing_else(mode):
    properties = only(mode, "AWS::S3::Bucket")["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": False,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": False,
    }
    allowed = [s for s in statements(only(mode, "AWS::S3::BucketPolicy")) if s["Effect"] == "Allow"]
    assert sorted((s["Principal"], s["Action"]) for s in allowed) == [
        ({"AWS": "*"}, "s3:GetObject"),
        ({"AWS": "*"}, "s3:ListBucket"),
    ]


@pytest.mark.parametrize(("mode", "readable"), [("public", ["dev/*", "prod/*"]), ("public-root", ["*"])])
def test_anonymous_reads_stop_at_the_channel_prefixes(mode, readable):
    assert object_patterns(mode, bucket_statement(mode, "PublicReadChannel")) == readable


def test_anonymous_listings_are_limited_to_the_channel_prefixes():
    listing = bucket_statement("public", "PublicListChannel")
    bucket = next(iter(resources("public", "AWS::S3::Bucket")))

    assert listing["Resource"] == {"Fn::GetAtt": [bucket, "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["dev/*", "prod/*"]}}


def test_anonymous_listings_of_a_root_channel_cover_the_bucket():
    # The channel is the whole bucket; a condition on s3:prefix would only refuse listings without a prefix.
    assert "Condition" not in bucket_statement("public-root", "PublicListChannel")


@pytest.mark.parametrize(
    ("mode", "state"),
    [
        ("public", [".reindexer/*", "dev/*/.reindexer/*", "prod/*/.reindexer/*"]),
        ("public-root", ["*/.reindexer/*", ".reindexer/*"]),
    ],
)
def test_the_indexer_state_under_every_readable_prefix_is_denied_to_anonymous_readers(mode, state):
    deny = bucket_statement(mode, "PublicNeverReadsIndexerState")

    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": "*"}
    assert deny["Action"] == "s3:GetObject"
    assert object_patterns(mode, deny) == state
    readable = object_patterns(mode, bucket_statement(mode, "PublicReadChannel"))
    # Each readable prefix's subdir states, and the bucket's own (what the indexer learnt of the store).
    expected = [pattern.removesuffix("*") + "*/.reindexer/*" for pattern in readable] + [".reindexer/*"]
    assert sorted(expected) == state


@pytest.mark.parametrize("mode", ["public", "public-root"])
def test_the_state_deny_cannot_match_the_function_roles_or_anyone_in_the_account(mode):
    # aws:PrincipalAccount is "anonymous" for unsigned requests and the caller's account otherwise, so
    # this matches anonymous and other accounts' callers and never a role of this stack's own account.
    deny = bucket_statement(mode, "PublicNeverReadsIndexerState")

    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalAccount": OWN_ACCOUNT}}
    for handler in (EVENT_HANDLER, REINDEX_HANDLER):
        role = function(mode, handler)["Properties"]["Role"]["Fn::GetAtt"][0]
        assert template(mode)["Resources"][role]["Type"] == "AWS::IAM::Role"  # created in this account


def test_the_state_deny_names_the_account_of_a_stack_with_an_explicit_environment():
    app = cdk.App()
    stack = ChannelStack(
        app,
        "Pinned",
        settings=ChannelSettings.from_context(PUBLIC),
        code=lambda_.Code.from_inline("#"),
        env=cdk.Environment(account="123456789012", region="eu-central-1"),
    )
    policy = Template.from_stack(stack).find_resources("AWS::S3::BucketPolicy")
    (deny,) = [
        s for p in policy.values() for s in statements(p) if s.get("Sid") == "PublicNeverReadsIndexerState"
    ]

    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalAccount": "123456789012"}}


@pytest.mark.parametrize("mode", ["public", "public-root"])
def test_the_only_anonymous_deny_besides_tls_is_the_state_deny(mode):
    denies = [s for s in statements(only(mode, "AWS::S3::BucketPolicy")) if s["Effect"] == "Deny"]
    others = [s for s in denies if s["Condition"] != {"Bool": {"aws:SecureTransport": "false"}}]

    assert [s["Sid"] for s in others] == ["PublicNeverReadsIndexerState"]


@pytest.mark.parametrize("mode", ["private", "public"])
def test_bucket_denies_every_request_without_tls(mode):
    denies = [s for s in statements(only(mode, "AWS::S3::BucketPolicy")) if s["Effect"] == "Deny"]
    assert any(
        s["Action"] == "s3:*" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies
    )


def test_existing_bucket_is_indexed_without_creating_a_bucket():
    app = cdk.App()
    settings = ChannelSettings.from_context({"existing_bucket": "team-conda"})
    stack = ChannelStack(app, "Existing", settings=settings, code=lambda_.Code.from_inline("#"))
    synthesized = Template.from_stack(stack)

    synthesized.resource_count_is("AWS::S3::Bucket", 0)
    synthesized.has_resource_properties("Custom::S3BucketNotifications", {"BucketName": "team-conda"})


# --- events --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["private", "public"])
def test_created_and_removed_packages_of_every_channel_are_sent_to_the_queue(mode):
    configuration = only(mode, "Custom::S3BucketNotifications")["Properties"]["NotificationConfiguration"]
    queue = next(
        iter(k for k, q in resources(mode, "AWS::SQS::Queue").items() if "RedrivePolicy" in q["Properties"])
    )
    prefixes = ["dev/", "prod/"] if mode == "public" else [None]
    expected = sorted(
        (event, prefix, suffix)
        for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
        for prefix in prefixes
        for suffix in (".conda", ".tar.bz2")
    )
    seen = []
    for entry in configuration["QueueConfigurations"]:
        assert entry["QueueArn"] == {"Fn::GetAtt": [queue, "Arn"]}
        rules = {rule["Name"]: rule["Value"] for rule in entry["Filter"]["Key"]["FilterRules"]}
        seen.append((entry["Events"][0], rules.get("prefix"), rules["suffix"]))
    assert sorted(seen, key=str) == sorted(expected, key=str)
    assert "LambdaFunctionConfigurations" not in configuration


@pytest.mark.parametrize("mode", ["private", "public"])
def test_queue_is_encrypted_outlasts_six_function_timeouts_and_dead_letters_after_five_tries(mode):
    queues = resources(mode, "AWS::SQS::Queue")
    (main_name,) = [k for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    (dead_name,) = [k for k in queues if k != main_name]
    main = queues[main_name]["Properties"]
    timeout = 120 if mode == "private" else 60
    assert main["VisibilityTimeout"] == 6 * timeout
    assert main["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dead_name, "Arn"]},
        "maxReceiveCount": 5,
    }
    for properties in (main, queues[dead_name]["Properties"]):
        assert properties["SqsManagedSseEnabled"] is True
    tls = [
        s
        for p in resources(mode, "AWS::SQS::QueuePolicy").values()
        for s in statements(p)
        if s["Effect"] == "Deny"
    ]
    assert len(tls) >= 2 and all(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in tls)


def test_package_events_reach_the_function_in_batches_with_partial_failures():
    mapping = only("private", "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] == 5
    assert mapping["BatchSize"] == 100


# --- functions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["private", "public"])
@pytest.mark.parametrize(("handler", "memory"), [(EVENT_HANDLER, 512), (REINDEX_HANDLER, 2048)])
def test_functions_run_python_3_13_on_arm64_with_tracing(mode, handler, memory):
    properties = function(mode, handler)["Properties"]
    assert properties["Runtime"] == "python3.13"
    assert properties["Architectures"] == ["arm64"]
    assert properties["MemorySize"] == memory
    assert properties["TracingConfig"] == {"Mode": "Active"}


def test_function_timeouts_come_from_the_settings():
    assert function("private", EVENT_HANDLER)["Properties"]["Timeout"] == 120
    assert function("private", REINDEX_HANDLER)["Properties"]["Timeout"] == 900


@pytest.mark.parametrize("mode", ["private", "public", "public-root"])
@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER])
def test_each_function_environment_holds_every_variable_its_handler_reads(mode, handler):
    environment = function(mode, handler)["Properties"]["Environment"]["Variables"]
    bucket = next(iter(resources(mode, "AWS::S3::Bucket")))
    assert environment[BUCKET_VARIABLE] == {"Ref": bucket}
    assert environment[MAX_AGE_VARIABLE] == "60"
    if mode == "public":
        assert environment[PREFIXES_VARIABLE] == "dev,prod"
    else:
        assert PREFIXES_VARIABLE not in environment
    assert environment[ACCESS_VARIABLE] == CONTEXTS[mode]["access"]
    assert environment["POWERTOOLS_METRICS_NAMESPACE"] == "Reindexer"


@pytest.mark.parametrize(
    ("mode", "read_jobs", "max_package_mb"),
    [("private", 3, 2000), ("public", DEFAULT_READ_JOBS, DEFAULT_MAX_PACKAGE_MB)],
)
@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER])
def test_functions_read_as_many_packages_at_once_as_their_tmp_can_hold(
    mode, read_jobs, max_package_mb, handler
):
    properties = function(mode, handler)["Properties"]
    environment = properties["Environment"]["Variables"]

    assert environment[JOBS_VARIABLE] == str(read_jobs)
    assert environment[MAX_PACKAGE_VARIABLE] == str(max_package_mb)
    assert properties["EphemeralStorage"] == {"Size": ephemeral_storage_mb(read_jobs, max_package_mb)}
    assert properties["EphemeralStorage"]["Size"] >= read_jobs * max_package_mb


@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER])
def test_functions_write_only_the_indexers_own_keys_and_delete_only_their_lease_and_probe(handler):
    granted = role_statements("public", handler)
    puts = [r for s in granted if s["Action"] == "s3:PutObject" for r in s["Resource"]]
    deletes = [r for s in granted if s["Action"] == "s3:DeleteObject" for r in s["Resource"]]
    own = (
        "/repodata.json",
        "/repodata.json.zst",
        "/repodata_shards.msgpack.zst",
        "/shards/*",
        "/.reindexer/*",
        f"/{PROBE_KEY_PREFIX}*",
        f"/{STORE_CONDITIONS_KEY}",
    )
    assert puts and all(flat(r).rstrip('"]}').endswith(own) for r in puts)
    assert not any(".conda" in flat(r) or ".tar.bz2" in flat(r) for r in puts)
    assert deletes and all(
        flat(r).rstrip('"]}').endswith(("/.reindexer/lease.json", f"/{PROBE_KEY_PREFIX}*")) for r in deletes
    )
    assert not any(s["Action"] in ("s3:*", "*") for s in granted)


def test_log_groups_keep_logs_for_a_month():
    for group in resources("private", "AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


# --- people and operations -----------------------------------------------------------------------------


def managed_policy(mode: str, description_start: str) -> dict[str, Any]:
    (policy,) = [
        p
        for p in resources(mode, "AWS::IAM::ManagedPolicy").values()
        if p["Properties"]["Description"].startswith(description_start)
    ]
    return policy


@pytest.mark.parametrize(
    ("mode", "packages"),
    [
        ("public", ["dev/*/*.conda", "dev/*/*.tar.bz2", "prod/*/*.conda", "prod/*/*.tar.bz2"]),
        ("private", ["*/*.conda", "*/*.tar.bz2"]),
    ],
)
def test_publisher_policy_allows_package_uploads_into_the_channels_and_nothing_else(mode, packages):
    (statement,) = statements(managed_policy(mode, "Upload"))
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert object_patterns(mode, statement) == packages


@pytest.mark.parametrize("mode", ["private", "public"])
def test_publishers_cannot_upload_packages_the_indexer_could_not_read(mode):
    # Archived storage classes need a restore before a GET, and SSE-C needs the uploader's key. IfExists
    # and Null keep plain uploads (no storage-class header, no SSE-C headers) allowed.
    (statement,) = statements(managed_policy(mode, "Upload"))

    assert statement["Condition"] == {
        "StringEqualsIfExists": {"s3:x-amz-storage-class": "STANDARD"},
        "Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "true"},
    }


def test_operator_policy_may_start_the_full_reindex_and_redrive_the_dead_letters():
    granted = statements(managed_policy("private", "Start a full reindex"))
    reindex = next(
        iter(
            k
            for k, f in resources("private", "AWS::Lambda::Function").items()
            if f["Properties"]["Handler"] == REINDEX_HANDLER
        )
    )
    invoke = next(s for s in granted if s["Action"] == "lambda:InvokeFunction")
    assert invoke["Resource"] == {"Fn::GetAtt": [reindex, "Arn"]}
    assert any("sqs:StartMessageMoveTask" in s["Action"] for s in granted)


def test_alarms_on_dead_letters_and_function_errors_notify_the_topic_and_the_email():
    alarms = resources("public", "AWS::CloudWatch::Alarm")
    topic = next(iter(resources("public", "AWS::SNS::Topic")))
    assert len(alarms) == 4
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": topic}] for a in alarms.values())
    metrics = sorted(a["Properties"]["MetricName"] for a in alarms.values())
    assert metrics == ["ApproximateNumberOfMessagesVisible", "Errors", "Errors", "SubdirUpdateFailures"]
    assert only("public", "AWS::SNS::Subscription")["Properties"]["Endpoint"] == "ops@example.com"
    assert resources("private", "AWS::SNS::Subscription") == {}


@pytest.mark.parametrize("mode", ["private", "public"])
def test_outputs_tell_users_where_the_channel_is_and_how_to_reindex(mode):
    names = list(template(mode)["Outputs"])
    for expected in (
        "BucketName",
        "ChannelUrls",
        "FullReindexFunctionName",
        "FullReindexCommand",
        "PublisherPolicyArn",
        "OperatorPolicyArn",
        "ReaderPolicyArn",
        "DeadLetterQueueUrl",
        "DeadLetterQueueArn",
        "AlarmTopicArn",
    ):
        assert any(name.startswith(f"Channel{expected}") for name in names), expected
    assert any(name.startswith("ChannelPublicChannelUrls") for name in names) == (mode == "public")


# --- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "key"),
    [
        ({"access": "open"}, "access"),
        ({"removal_policy": "keep"}, "removal_policy"),
        ({"bucket_name": "Bad_Name"}, "bucket_name"),
        ({"bucket_name": "a-b-c", "existing_bucket": "d-e-f"}, "bucket_name"),
        ({"channel_prefixes": "org,org/dev"}, "channel_prefixes"),
        ({"channel_prefixes": "[1, 2]"}, "channel_prefixes"),
        ({"alarm_email": "not-an-address"}, "alarm_email"),
        ({"event_function_timeout": "901"}, "event_function_timeout"),
        ({"reindex_function_memory": "lots"}, "reindex_function_memory"),
        ({"noncurrent_version_days": "0"}, "noncurrent_version_days"),
        ({"read_jobs": "0"}, "read_jobs"),
        ({"read_jobs": str(MAX_READ_JOBS + 1)}, "read_jobs"),
        ({"read_jobs": "many"}, "read_jobs"),
        ({"max_package_mb": "0"}, "max_package_mb"),
        ({"max_package_mb": str(MAX_PACKAGE_MB_LIMIT + 1)}, "max_package_mb"),
        ({"channel_prefixes": "dev/.hidden"}, "channel_prefixes"),
    ],
)
def test_bad_settings_fail_synth_with_one_line_naming_the_key(context, key):
    with pytest.raises(SettingsError) as raised:
        ChannelSettings.from_context(context)

    message = str(raised.value)
    assert key in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "prefix", [".hidden", "dev/.reindexer", "a//b", "dev/../prod", "with space", "x" * 257]
)
def test_channel_prefixes_follow_the_indexers_own_prefix_rule(prefix):
    problem = channel_prefix_problem(prefix)
    assert problem is not None

    with pytest.raises(SettingsError) as raised:
        ChannelSettings.from_context({"channel_prefixes": json.dumps([prefix])})

    assert str(raised.value) == f"channel_prefixes: {prefix!r} {problem}"


@pytest.mark.parametrize("prefixes", ["dev,prod", "org/team-a,org/team_b", "a!b*c'(d).e"])
def test_channel_prefixes_the_indexer_accepts_are_accepted(prefixes):
    settings = ChannelSettings.from_context({"channel_prefixes": prefixes})

    assert settings.channel_prefixes == tuple(sorted(prefixes.split(",")))


def test_read_jobs_and_package_size_that_need_more_tmp_than_lambda_has_fail_synth_naming_both():
    with pytest.raises(SettingsError) as raised:
        ChannelSettings.from_context({"read_jobs": "16", "max_package_mb": "1024"})

    message = str(raised.value)
    assert "read_jobs=16" in message
    assert "max_package_mb=1024" in message
    assert str(LAMBDA_MAX_EPHEMERAL_MB) in message
    assert "\n" not in message


def test_the_most_tmp_lambda_allows_is_accepted_and_one_more_job_is_not():
    fits = max(
        jobs
        for jobs in range(1, MAX_READ_JOBS + 1)
        if ephemeral_storage_mb(jobs, 1024) <= LAMBDA_MAX_EPHEMERAL_MB
    )

    settings = ChannelSettings.from_context({"read_jobs": str(fits), "max_package_mb": "1024"})

    assert settings.ephemeral_storage_mb == ephemeral_storage_mb(fits, 1024) <= LAMBDA_MAX_EPHEMERAL_MB
    with pytest.raises(SettingsError, match="read_jobs"):
        ChannelSettings.from_context({"read_jobs": str(fits + 1), "max_package_mb": "1024"})


def test_cdk_json_lists_every_setting_with_its_default():
    context = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]
    defaults = ChannelSettings()

    assert set(CONTEXT_KEYS) | {"stack_name"} == set(context)
    assert ChannelSettings.from_context(context) == defaults
    assert context["read_jobs"] == DEFAULT_READ_JOBS
    assert context["max_package_mb"] == DEFAULT_MAX_PACKAGE_MB


# --- the app -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("context", [PRIVATE, PUBLIC, PUBLIC_ROOT])
def test_app_synthesizes_with_every_cdk_nag_finding_fixed_or_acknowledged(context, tmp_path):
    from app import build_app

    # Bundling is skipped here (it downloads arm64 wheels); tests/infra/test_lambda_code.py covers it.
    app = build_app({**context, "aws:cdk:bundling-stacks": []})

    assembly = app.synth()  # cdk-nag's validation raises on any unacknowledged finding

    assert [stack.stack_name for stack in assembly.stacks] == ["CondaChannel"]


def test_app_refuses_bad_settings_before_building_anything():
    from app import build_app

    with pytest.raises(SettingsError, match="access"):
        build_app({"access": "open"})


def test_app_refuses_more_tmp_than_lambda_has():
    from app import build_app

    with pytest.raises(SettingsError, match=r"read_jobs=.*max_package_mb=.*10240"):
        build_app({"read_jobs": "64", "max_package_mb": "1024"})


def test_app_passes_read_jobs_and_package_size_from_the_context_to_the_functions():
    from app import build_app

    app = build_app({"read_jobs": "2", "max_package_mb": "100", "aws:cdk:bundling-stacks": []})
    stack = app.node.find_child("CondaChannel")
    assert isinstance(stack, cdk.Stack)
    functions = Template.from_stack(stack).find_resources(
        "AWS::Lambda::Function", {"Properties": {"Environment": {"Variables": {JOBS_VARIABLE: "2"}}}}
    )

    assert len(functions) == 2
    for found in functions.values():
        assert found["Properties"]["Environment"]["Variables"][MAX_PACKAGE_VARIABLE] == "100"
        assert found["Properties"]["EphemeralStorage"] == {"Size": ephemeral_storage_mb(2, 100)}


def test_reader_policy_reads_the_channels_and_nothing_else():
    granted = statements(managed_policy("public", "Read the channel"))
    assert sorted(s["Action"] for s in granted) == ["s3:GetObject", "s3:ListBucket"]


def test_reindex_command_output_does_not_let_the_cli_retry_a_long_invocation():
    (command,) = [
        v for k, v in template("private")["Outputs"].items() if k.startswith("ChannelFullReindexCommand")
    ]
    assert "--cli-read-timeout 0" in flat(command)
