"""The deployed channel's properties, checked on synthesized templates in both access modes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from infra.channel_stack import ChannelStack
from infra.settings import CONTEXT_KEYS, DEFAULT_RECONCILE_SCHEDULE, ChannelSettings, SettingsError
from reindexer.contract import (
    ACCESS_VARIABLE,
    BUCKET_VARIABLE,
    DEFAULT_EVENT_BUS,
    DEFAULT_MAX_PACKAGE_MB,
    DEFAULT_READ_JOBS,
    DEFAULT_SHARD_RETENTION_DAYS,
    EVENT_BUS_VARIABLE,
    EVENT_SOURCE,
    JOBS_VARIABLE,
    LAMBDA_MAX_EPHEMERAL_MB,
    MAX_AGE_VARIABLE,
    MAX_PACKAGE_MB_LIMIT,
    MAX_PACKAGE_VARIABLE,
    MAX_READ_JOBS,
    MAX_SHARD_RETENTION_DAYS,
    METRICS_NAMESPACE,
    PREFIXES_VARIABLE,
    PROBE_KEY_PREFIX,
    REPODATA_PATCH_VARIABLE,
    RUN_COMMIT_HANDLER,
    SERVICE_NAME,
    SHARD_RETENTION_VARIABLE,
    STORE_CONDITIONS_KEY,
    DetailType,
    Metric,
    channel_prefix_problem,
    ephemeral_storage_mb,
    package_name_problem,
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
# The operating settings away from their defaults, and the reconciliation schedule turned off.
TUNED = {
    "channel_prefixes": "org/dev",
    "shard_retention_days": "30",
    "repodata_patch": "channel-repodata-patches",
    "reconcile_schedule": "rate(12 hours)",
    "fanout_concurrency": "1000",
    "fanout_batch_items": "40",
}
UNSCHEDULED = {"reconcile_schedule": "off"}
# An alarm e-mail without the mail of rejected packages.
UNMAILED = {"alarm_email": "ops@example.com", "mail_rejections": "off"}
CONTEXTS = {
    "private": PRIVATE,
    "public": PUBLIC,
    "public-root": PUBLIC_ROOT,
    "tuned": TUNED,
    "unscheduled": UNSCHEDULED,
    "unmailed": UNMAILED,
}
# The channels each mode's stack serves ('' is the bucket root).
CHANNELS = {"private": ("",), "public": ("dev", "prod"), "public-root": ("",), "tuned": ("org/dev",)}
PATCH_INSTRUCTIONS = "patch_instructions.json"
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


def iam_matches(pattern: str, key: str) -> bool:
    """IAM's resource wildcards: '*' any characters ('/' included), '?' exactly one."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(body, key, re.DOTALL) is not None


def in_channel(channel: str, *parts: str) -> str:
    return "/".join(part for part in (channel, *parts) if part)


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
        (
            "public",
            [
                ".reindexer/*",
                "dev/*/.reindexer/*",
                "dev/.reindexer/*",
                "prod/*/.reindexer/*",
                "prod/.reindexer/*",
            ],
        ),
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
    # Each readable prefix's subdir states and its channel files' lease and state (for a root channel, in the
    # bucket's folder), and the bucket's own (what the indexer learnt of the store).
    expected = {
        pattern.removesuffix("*") + suffix
        for pattern in readable
        for suffix in ("*/.reindexer/*", ".reindexer/*")
    }
    assert sorted(expected | {".reindexer/*"}) == state


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


def notification_rules(mode: str) -> list[tuple[str, str | None, str]]:
    """(event, key prefix or None, key suffix) of each rule of the bucket's notification configuration."""
    configuration = only(mode, "Custom::S3BucketNotifications")["Properties"]["NotificationConfiguration"]
    rules = []
    for entry in configuration["QueueConfigurations"]:
        (event,) = entry["Events"]
        filters = {rule["Name"]: rule["Value"] for rule in entry["Filter"]["Key"]["FilterRules"]}
        rules.append((event, filters.get("prefix"), filters["suffix"]))
    return rules


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
def test_created_and_removed_packages_and_patch_instructions_of_every_channel_are_sent_to_the_queue(mode):
    configuration = only(mode, "Custom::S3BucketNotifications")["Properties"]["NotificationConfiguration"]
    queue = next(
        iter(k for k, q in resources(mode, "AWS::SQS::Queue").items() if "RedrivePolicy" in q["Properties"])
    )
    prefixes = [f"{channel}/" if channel else None for channel in CHANNELS[mode]]
    expected = sorted(
        (event, prefix, suffix)
        for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
        for prefix in prefixes
        for suffix in (".conda", ".tar.bz2", f"/{PATCH_INSTRUCTIONS}")
    )
    seen = []
    for entry in configuration["QueueConfigurations"]:
        assert entry["QueueArn"] == {"Fn::GetAtt": [queue, "Arn"]}
        rules = {rule["Name"]: rule["Value"] for rule in entry["Filter"]["Key"]["FilterRules"]}
        seen.append((entry["Events"][0], rules.get("prefix"), rules["suffix"]))
    assert sorted(seen, key=str) == sorted(expected, key=str)
    assert "LambdaFunctionConfigurations" not in configuration


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
def test_notification_rules_have_a_shape_s3_accepts_and_none_overlap_for_one_event_type(mode):
    # S3 takes at most one prefix and one suffix rule per configuration, values of at most 1024 characters,
    # and refuses two configurations of one event type whose prefixes and suffixes both overlap (one starts,
    # resp. ends, with the other; a missing filter overlaps everything).
    configuration = only(mode, "Custom::S3BucketNotifications")["Properties"]["NotificationConfiguration"]
    for entry in configuration["QueueConfigurations"]:
        names = [rule["Name"] for rule in entry["Filter"]["Key"]["FilterRules"]]
        assert sorted(names) in (["suffix"], ["prefix", "suffix"]), entry
        assert all(0 < len(rule["Value"]) <= 1024 for rule in entry["Filter"]["Key"]["FilterRules"]), entry
    rules = notification_rules(mode)
    for index, (event, prefix, suffix) in enumerate(rules):
        for other_event, other_prefix, other_suffix in rules[index + 1 :]:
            if other_event != event:
                continue
            a, b = prefix or "", other_prefix or ""
            prefixes_overlap = a.startswith(b) or b.startswith(a)
            suffixes_overlap = suffix.endswith(other_suffix) or other_suffix.endswith(suffix)
            assert not (prefixes_overlap and suffixes_overlap), (
                event,
                prefix,
                suffix,
                other_prefix,
                other_suffix,
            )


def notified(mode: str, key: str) -> list[str]:
    """The events of the rules a key matches, as S3 matches them (prefix and suffix of the key)."""
    return sorted(
        event
        for event, prefix, suffix in notification_rules(mode)
        if key.startswith(prefix or "") and key.endswith(suffix)
    )


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
def test_patch_instructions_notify_once_per_event_type_and_the_indexers_own_writes_never(mode):
    for channel in CHANNELS[mode]:
        for key in (
            in_channel(channel, "linux-64", PATCH_INSTRUCTIONS),
            in_channel(channel, "noarch", "x-1-0.conda"),
        ):
            assert notified(mode, key) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"], key
        for name in (
            "repodata.json",
            "repodata.json.zst",
            "repodata_from_packages.json",
            "repodata_from_packages.json.zst",
            "repodata_shards.msgpack.zst",
            "shards/0a1b.msgpack.zst",
            ".reindexer/state.json.zst",
            ".reindexer/lease.json",
        ):
            assert notified(mode, in_channel(channel, "linux-64", name)) == [], name
    assert notified(mode, STORE_CONDITIONS_KEY) == []


@pytest.mark.parametrize("mode", ["private", "public"])
def test_queue_is_encrypted_outlasts_six_function_timeouts_and_dead_letters_after_five_tries(mode):
    queues = resources(mode, "AWS::SQS::Queue")
    (main_name,) = [k for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    dead_name = queues[main_name]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
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
    assert environment[SHARD_RETENTION_VARIABLE] == str(DEFAULT_SHARD_RETENTION_DAYS)
    assert REPODATA_PATCH_VARIABLE not in environment  # no patch package unless one is set
    assert environment[EVENT_BUS_VARIABLE] == DEFAULT_EVENT_BUS == "default"  # the bus the roles may use


@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER])
def test_shard_retention_and_the_patch_package_reach_both_functions(handler):
    environment = function("tuned", handler)["Properties"]["Environment"]["Variables"]

    assert environment[SHARD_RETENTION_VARIABLE] == "30"
    assert environment[REPODATA_PATCH_VARIABLE] == "channel-repodata-patches"
    assert environment[PREFIXES_VARIABLE] == "org/dev"


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


def role_patterns(mode: str, handler: str, action: str) -> list[str]:
    """The object key patterns `action` is granted on to the role of the function running `handler`."""
    granted = [s for s in role_statements(mode, handler) if s["Action"] == action]
    return sorted(pattern for statement in granted for pattern in object_patterns(mode, statement))


# The indexer's own files in a subdir, and the unpatched repodata it keeps beside patched repodata.
OWN_FILES = ("/repodata.json", "/repodata.json.zst", "/repodata_shards.msgpack.zst", "/shards/*")
UNPATCHED = ("/repodata_from_packages.json", "/repodata_from_packages.json.zst")
RUN_EXPORTS = ("/run_exports.json",)
# Beside a channel's subdirs: its channel files, and their lease and state in the channel's own .reindexer/.
CHANNEL_OWN = (
    "/channeldata.json",
    "/index.html",
    "/.reindexer/channel-lease.json",
    "/.reindexer/channel-state.json",
)


@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER])
def test_functions_write_only_the_indexers_own_keys_and_delete_only_their_lease_and_probe(handler):
    granted = role_statements("public", handler)
    puts = role_patterns("public", handler, "s3:PutObject")
    deletes = role_patterns("public", handler, "s3:DeleteObject")
    own = (
        *OWN_FILES,
        *UNPATCHED,
        *RUN_EXPORTS,
        *CHANNEL_OWN,
        "/.reindexer/*",
        f"{PROBE_KEY_PREFIX}*",
        STORE_CONDITIONS_KEY,
    )
    # The full reindex may also carry out an operator's yank / unyank / patch request from the console.
    edits = (f"/{PATCH_INSTRUCTIONS}",) if handler == REINDEX_HANDLER else ()
    assert puts and all(pattern.endswith((*own, *edits)) for pattern in puts), puts
    assert not any(".conda" in p or ".tar.bz2" in p for p in puts)
    # The unpatched repodata goes with a subdir's patch instructions; superseded shards: see below.
    removable = (
        "/.reindexer/lease.json",
        "/.reindexer/channel-lease.json",
        f"{PROBE_KEY_PREFIX}*",
        *UNPATCHED,
        "/shards/*",
    )
    assert deletes and all(pattern.endswith(removable) for pattern in deletes), deletes
    assert not any(s["Action"] in ("s3:*", "*") for s in granted)


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
def test_only_the_full_reindex_role_deletes_superseded_shards(mode):
    shards = sorted(in_channel(channel, "*", "shards", "*") for channel in CHANNELS[mode])
    reindex = role_patterns(mode, REINDEX_HANDLER, "s3:DeleteObject")
    events = role_patterns(mode, EVENT_HANDLER, "s3:DeleteObject")

    assert [p for p in reindex if "/shards/" in p] == shards
    assert not any("shards" in pattern for pattern in events), events
    # Apart from the shards, both roles delete the same keys; apart from patch instructions, both write the
    # same keys.
    assert sorted(set(reindex) - set(shards)) == events
    reindex_puts = role_patterns(mode, REINDEX_HANDLER, "s3:PutObject")
    assert [p for p in reindex_puts if not p.endswith(PATCH_INSTRUCTIONS)] == role_patterns(
        mode, EVENT_HANDLER, "s3:PutObject"
    )
    for handler in (EVENT_HANDLER, REINDEX_HANDLER):
        deletes = role_patterns(mode, handler, "s3:DeleteObject")
        for channel in CHANNELS[mode]:
            for kept in ("x-1-0.conda", "x-1-0.tar.bz2", "repodata.json", PATCH_INSTRUCTIONS):
                key = in_channel(channel, "linux-64", kept)
                assert not any(iam_matches(p, key) for p in deletes), (handler, key)


@pytest.mark.parametrize("mode", ["private", "public"])
def test_the_event_function_never_writes_the_patch_instructions_that_notify_it(mode):
    for action in ("s3:PutObject", "s3:DeleteObject"):
        patterns = role_patterns(mode, EVENT_HANDLER, action)
        for channel in CHANNELS[mode]:
            key = in_channel(channel, "linux-64", PATCH_INSTRUCTIONS)
            assert not any(iam_matches(p, key) for p in patterns), (action, key)
    # Nor does the full reindex delete them: a subdir's instructions go only when an operator removes them.
    deletes = role_patterns(mode, REINDEX_HANDLER, "s3:DeleteObject")
    assert not any(
        iam_matches(p, in_channel(CHANNELS[mode][0], "noarch", PATCH_INSTRUCTIONS)) for p in deletes
    )


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


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
def test_publishers_cannot_write_patch_instructions_or_anything_the_indexer_writes(mode):
    (statement,) = statements(managed_policy(mode, "Upload"))
    packages = object_patterns(mode, statement)
    reindex_writes = role_patterns(mode, REINDEX_HANDLER, "s3:PutObject")

    for channel in CHANNELS[mode]:
        for name in (PATCH_INSTRUCTIONS, "repodata.json", "repodata_from_packages.json", "shards/ab.msgpack"):
            key = in_channel(channel, "linux-64", name)
            assert not any(iam_matches(p, key) for p in packages), key
        assert any(iam_matches(p, in_channel(channel, "linux-64", "x-1-0.conda")) for p in packages)
    # Package patterns and the indexer's are disjoint: no pattern of one matches a key of the other's shape.
    for pattern in reindex_writes:
        key = pattern.replace("*", "linux-64", 1).replace("*", "x")
        assert not any(iam_matches(p, key) for p in packages), key


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
def test_operator_policy_reads_the_channels_and_edits_only_their_patch_instructions(mode):
    granted = statements(managed_policy(mode, "Start a full reindex"))
    patches = sorted(in_channel(channel, "*", PATCH_INSTRUCTIONS) for channel in CHANNELS[mode])
    channel_objects = sorted(in_channel(channel, "*") for channel in CHANNELS[mode])
    on_objects = {
        s["Sid"]: (s["Action"], object_patterns(mode, s))
        for s in granted
        if str(s["Action"]).startswith("s3:") and s["Action"] != "s3:ListBucket"
    }

    probe = [STORE_CONDITIONS_KEY, f"{PROBE_KEY_PREFIX}*"]
    assert on_objects == {
        "ReadChannel": ("s3:GetObject", sorted([*channel_objects, *probe])),
        "WritePatchInstructions": ("s3:PutObject", sorted([*patches, *probe])),
        "DeletePatchInstructions": ("s3:DeleteObject", sorted([*patches, f"{PROBE_KEY_PREFIX}*"])),
    }
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in granted if s["Sid"] in on_objects)
    # Listing stops at the channel prefixes (a missing file answers 404, not 403).
    (listing,) = [s for s in granted if s["Action"] == "s3:ListBucket"]
    bucket = next(iter(resources(mode, "AWS::S3::Bucket")))
    assert listing["Resource"] == {"Fn::GetAtt": [bucket, "Arn"]}
    prefixes = [f"{channel}/*" for channel in CHANNELS[mode] if channel]
    assert listing.get("Condition") == ({"StringLike": {"s3:prefix": prefixes}} if prefixes else None)
    for channel in CHANNELS[mode]:
        for other in ("x-1-0.conda", "repodata.json", ".reindexer/state.json.zst"):
            key = in_channel(channel, "linux-64", other)
            assert not any(iam_matches(p, key) for p in patches), key


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


def test_alarms_on_dead_letters_function_errors_and_fanout_executions_notify_the_topic_and_the_email():
    alarms = resources("public", "AWS::CloudWatch::Alarm")
    topic = next(iter(resources("public", "AWS::SNS::Topic")))
    assert len(alarms) == 8
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": topic}] for a in alarms.values())
    metrics = sorted(a["Properties"]["MetricName"] for a in alarms.values())
    visible = "ApproximateNumberOfMessagesVisible"
    executions = ["ExecutionsAborted", "ExecutionsFailed", "ExecutionsTimedOut"]
    assert metrics == sorted([visible, visible, "Errors", "Errors", "SubdirUpdateFailures", *executions])
    # One dead-letter alarm per dead-letter queue: package events and scheduled reconciliations.
    queues = sorted(
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in alarms.values()
        if a["Properties"]["MetricName"] == visible
    )
    dead_letters = [k for k, q in resources("public", "AWS::SQS::Queue").items() if "Redrive" not in flat(q)]
    assert queues == sorted(dead_letters) and len(queues) == 2
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
        "ReconcileSchedules",
        "DashboardUrl",
        "FanoutReindexStateMachineArn",
        "FanoutReindexCommand",
    ):
        assert any(name.startswith(f"Channel{expected}") for name in names), expected
    assert any(name.startswith("ChannelPublicChannelUrls") for name in names) == (mode == "public")


# --- reconciliation ------------------------------------------------------------------------------------


def reindex_arn(mode: str) -> dict[str, Any]:
    (name,) = [
        k
        for k, f in resources(mode, "AWS::Lambda::Function").items()
        if f["Properties"]["Handler"] == REINDEX_HANDLER
    ]
    return {"Fn::GetAtt": [name, "Arn"]}


@pytest.mark.parametrize(
    ("mode", "expression"),
    [
        ("private", DEFAULT_RECONCILE_SCHEDULE),
        ("public", DEFAULT_RECONCILE_SCHEDULE),
        ("public-root", DEFAULT_RECONCILE_SCHEDULE),
        ("tuned", "rate(12 hours)"),
    ],
)
def test_a_schedule_per_channel_starts_its_full_reindex(mode, expression):
    schedules = [s["Properties"] for s in resources(mode, "AWS::Scheduler::Schedule").values()]
    (role,) = resources(mode, "AWS::IAM::Role").keys() & {
        s["Target"]["RoleArn"]["Fn::GetAtt"][0] for s in schedules
    }
    dead_letters = [
        k for k, q in resources(mode, "AWS::SQS::Queue").items() if k.startswith("ChannelReconcile")
    ]

    assert sorted(json.loads(s["Target"]["Input"])["channel"] for s in schedules) == list(CHANNELS[mode])
    for schedule in schedules:
        assert json.loads(schedule["Target"]["Input"]).keys() == {"channel"}
        assert schedule["ScheduleExpression"] == expression
        assert schedule["ScheduleExpressionTimezone"] == "Etc/UTC"
        assert schedule["State"] == "ENABLED"
        assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert schedule["Target"]["Arn"] == reindex_arn(mode)
        assert schedule["Target"]["RoleArn"] == {"Fn::GetAtt": [role, "Arn"]}
        assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 2
        assert schedule["Target"]["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [*dead_letters, "Arn"]}}


@pytest.mark.parametrize("mode", ["private", "public"])
def test_the_schedulers_role_may_invoke_only_the_full_reindex_and_fill_its_dead_letter_queue(mode):
    (schedule, *_) = resources(mode, "AWS::Scheduler::Schedule").values()
    role_name = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    role = template(mode)["Resources"][role_name]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    policies = [
        p
        for p in resources(mode, "AWS::IAM::Policy").values()
        if {"Ref": role_name} in p["Properties"]["Roles"]
    ]
    granted = [s for p in policies for s in statements(p)]
    arn = reindex_arn(mode)

    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == OWN_ACCOUNT
    assert "schedule-group/default" in flat(trust["Condition"]["StringEquals"]["aws:SourceArn"])
    assert "ManagedPolicyArns" not in role
    assert sorted((s["Effect"], s["Action"]) for s in granted) == [
        ("Allow", "lambda:InvokeFunction"),
        ("Allow", "sqs:SendMessage"),
    ]
    (invoke,) = [s for s in granted if s["Action"] == "lambda:InvokeFunction"]
    # The function and its versions and aliases (`<arn>:*`), as Function.grant_invoke writes it.
    assert invoke["Resource"] == [arn, {"Fn::Join": ["", [arn, ":*"]]}]
    (send,) = [s for s in granted if s["Action"] == "sqs:SendMessage"]
    assert send["Resource"] == schedule["Properties"]["Target"]["DeadLetterConfig"]["Arn"]


def test_the_schedules_dead_letter_queue_is_encrypted_tls_only_and_kept_two_weeks():
    (queue,) = [
        q for k, q in resources("public", "AWS::SQS::Queue").items() if k.startswith("ChannelReconcile")
    ]

    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_reconcile_schedule_off_deploys_no_schedule_role_queue_alarm_or_output():
    assert resources("unscheduled", "AWS::Scheduler::Schedule") == {}
    assert "scheduler.amazonaws.com" not in flat(resources("unscheduled", "AWS::IAM::Role"))
    assert not any(k.startswith("ChannelReconcile") for k in template("unscheduled")["Resources"])
    assert len(resources("unscheduled", "AWS::SQS::Queue")) == 2
    assert len(resources("unscheduled", "AWS::CloudWatch::Alarm")) == 7
    assert not any(name.startswith("ChannelReconcile") for name in template("unscheduled")["Outputs"])


def test_the_schedules_output_names_every_schedule():
    (output,) = [
        v for k, v in template("public")["Outputs"].items() if k.startswith("ChannelReconcileSchedules")
    ]

    assert output["Value"] == {
        "Fn::Join": [" ", [{"Ref": name} for name in resources("public", "AWS::Scheduler::Schedule")]]
    }


# --- events for automation ----------------------------------------------------------------------------

# arn:<partition>:events:<region>:<account>:event-bus/default, as CloudFormation resolves it.
DEFAULT_BUS_ARN = {
    "Fn::Join": [
        "",
        [
            "arn:",
            {"Ref": "AWS::Partition"},
            ":events:",
            {"Ref": "AWS::Region"},
            ":",
            {"Ref": "AWS::AccountId"},
            ":event-bus/default",
        ],
    ]
}


def action_allowed(granted: Any, action: str) -> bool:
    """Whether a statement's Action (a name or a list; IAM's wildcards, case-insensitive) covers `action`."""
    names = granted if isinstance(granted, list) else [granted]
    return any(iam_matches(name.lower(), action.lower()) for name in names)


@pytest.mark.parametrize("mode", ["private", "public", "tuned"])
@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER, RUN_COMMIT_HANDLER])
def test_the_publishing_functions_may_put_only_the_indexers_events_and_only_on_the_default_bus(mode, handler):
    granted = role_statements(mode, handler)
    role = function(mode, handler)["Properties"]["Role"]["Fn::GetAtt"][0]
    on_events = [s for s in granted if action_allowed(s["Action"], "events:PutEvents")]
    actions = [a for s in granted for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]

    assert on_events == [
        {
            "Sid": "PutChannelEvents",
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": DEFAULT_BUS_ARN,
            # events:source is multivalued (ForAllValues), events:detail-type single-valued (any of the four).
            "Condition": {
                "ForAllValues:StringEquals": {"events:source": [EVENT_SOURCE]},
                "StringEquals": {"events:detail-type": list(DetailType.ALL)},
            },
        }
    ]
    # Nothing broader: no other EventBridge action, no wildcard action, no managed policy on the role.
    assert [a for a in actions if a.lower().startswith("events:")] == ["events:PutEvents"]
    assert not any(action_allowed(s["Action"], "events:PutRule") for s in granted)
    assert "ManagedPolicyArns" not in template(mode)["Resources"][role]["Properties"]
    assert set(DetailType.ALL) == {
        "Package Indexed",
        "Package Rejected",
        "Package Removed",
        "Subdir Published",
    }


def alarm_topic(mode: str) -> str:
    (topic,) = resources(mode, "AWS::SNS::Topic")
    return topic


def topic_statements_for_eventbridge(mode: str) -> list[dict[str, Any]]:
    return [
        s
        for s in statements(only(mode, "AWS::SNS::TopicPolicy"))
        if s.get("Principal") == {"Service": "events.amazonaws.com"}
    ]


def test_rejected_packages_of_this_bucket_are_mailed_to_the_alarm_topic_as_one_line():
    (name, rule) = next(iter(resources("public", "AWS::Events::Rule").items()))
    (bucket,) = resources("public", "AWS::S3::Bucket")
    properties = rule["Properties"]
    (target,) = properties["Targets"]
    transformer = target["InputTransformer"]
    message = json.loads(transformer["InputTemplate"])  # a JSON string: SNS sends it as the mail's text

    assert properties["State"] == "ENABLED"
    assert properties["EventPattern"] == {
        "source": [EVENT_SOURCE],
        "detail-type": [DetailType.PACKAGE_REJECTED],
        "detail": {"bucket": [{"Ref": bucket}]},
    }
    assert target["Arn"] == {"Ref": alarm_topic("public")}
    assert "RoleArn" not in target  # SNS authorizes EventBridge by the topic's policy
    assert sorted(transformer["InputPathsMap"].values()) == [
        "$.detail.bucket",
        "$.detail.channel",
        "$.detail.file",
        "$.detail.reason",
        "$.detail.subdir",
    ]
    assert isinstance(message, str) and "\n" not in message
    for variable in transformer["InputPathsMap"]:
        assert f"<{variable}>" in message
    assert [r for r in resources("public", "AWS::Events::Rule")] == [name]


def test_only_the_rejection_rule_may_publish_to_the_alarm_topic():
    (rule,) = resources("public", "AWS::Events::Rule")

    assert topic_statements_for_eventbridge("public") == [
        {
            "Sid": "EventBridgeRuleMailsRejections",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": {"Ref": alarm_topic("public")},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule, "Arn"]}}},
        }
    ]


@pytest.mark.parametrize("mode", ["private", "unmailed"])
def test_no_rejection_mail_without_an_alarm_email_or_when_turned_off(mode):
    assert resources(mode, "AWS::Events::Rule") == {}
    assert topic_statements_for_eventbridge(mode) == []


@pytest.mark.parametrize(
    ("context", "mailed"),
    [
        ({}, False),
        ({"alarm_email": "ops@example.com"}, True),
        ({"alarm_email": "ops@example.com", "mail_rejections": "off"}, False),
        ({"mail_rejections": "on"}, True),  # for subscribers added to the topic by other means
        ({"mail_rejections": "auto"}, False),
        ({"mail_rejections": ""}, False),
    ],
)
def test_mail_rejections_follows_the_alarm_email_unless_set(context, mailed):
    assert ChannelSettings.from_context(context).mails_rejections is mailed


# --- the dashboard -------------------------------------------------------------------------------------


@cache
def dashboard(mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dashboard body, parsed: CloudFormation joins JSON text around tokens, each of which lies inside a
    JSON string and is replaced by a marker here; the markers map back to the tokens."""
    (properties,) = (d["Properties"] for d in resources(mode, "AWS::CloudWatch::Dashboard").values())
    separator, pieces = properties["DashboardBody"]["Fn::Join"]
    tokens: dict[str, Any] = {}
    text = []
    for piece in pieces:
        if isinstance(piece, str):
            text.append(piece)
        else:
            marker = f"@token{len(tokens)}@"
            tokens[marker] = piece
            text.append(marker)
    return json.loads(separator.join(text)), tokens


def graphed(mode: str) -> list[dict[str, Any]]:
    """Every metric of the dashboard's graphs: title, namespace, name, dimensions (tokens restored), stat."""
    body, tokens = dashboard(mode)
    found = []
    for widget in body["widgets"]:
        for line in widget["properties"]["metrics"]:
            has_options = isinstance(line[-1], dict)
            options = line[-1] if has_options else {}
            namespace, name, *pairs = line[:-1] if has_options else line
            dimensions = {k: tokens.get(v, v) for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
            found.append(
                {
                    "title": widget["properties"]["title"],
                    "namespace": namespace,
                    "name": name,
                    "dimensions": dimensions,
                    "stat": options.get("stat"),
                }
            )
    return found


def indexer_metrics(mode: str) -> set[tuple[str, str]]:
    """(metric name, statistic) of the handlers' own metrics on the dashboard."""
    graphs = [g for g in graphed(mode) if g["namespace"] == METRICS_NAMESPACE]
    assert all(g["dimensions"] == {"service": SERVICE_NAME} for g in graphs), graphs
    return {(g["name"], g["stat"]) for g in graphs}


@pytest.mark.parametrize("mode", ["private", "public"])
def test_the_dashboard_graphs_latency_packages_full_runs_conflicts_and_read_failures(mode):
    assert indexer_metrics(mode) >= {
        (Metric.PUBLICATION_LATENCY, "p50"),
        (Metric.PUBLICATION_LATENCY, "p99"),
        (Metric.PACKAGES_INDEXED, "Sum"),
        (Metric.PACKAGES_REJECTED, "Sum"),
        (Metric.PACKAGES_REMOVED, "Sum"),
        (Metric.SUBDIRS_REINDEXED, "Sum"),
        (Metric.SUBDIRS_SKIPPED, "Sum"),
        (Metric.COMMIT_CONFLICTS, "Sum"),
        (Metric.READ_FAILURES, "Sum"),
        (Metric.EVENT_PUT_FAILURES, "Sum"),
    }


def test_the_dashboard_graphs_only_metrics_the_handlers_emit():
    # A metric renamed in the contract but not on the dashboard would graph nothing, silently.
    emitted = {value for key, value in vars(Metric).items() if key.isupper()}
    assert {name for name, _ in indexer_metrics("public")} <= emitted
    namespaces = {g["namespace"] for g in graphed("public")}
    assert namespaces == {METRICS_NAMESPACE, "AWS/SQS", "AWS/Lambda", "AWS/States"}


@pytest.mark.parametrize(("mode", "count"), [("public", 2), ("unscheduled", 1)])
def test_the_dashboard_graphs_the_depth_of_every_dead_letter_queue(mode, count):
    depths = [g for g in graphed(mode) if g["namespace"] == "AWS/SQS"]
    dead_letters = [k for k, q in resources(mode, "AWS::SQS::Queue").items() if "Redrive" not in flat(q)]

    assert {g["name"] for g in depths} == {"ApproximateNumberOfMessagesVisible"}
    assert sorted(g["dimensions"]["QueueName"]["Fn::GetAtt"][0] for g in depths) == sorted(dead_letters)
    assert all(g["dimensions"]["QueueName"]["Fn::GetAtt"][1] == "QueueName" for g in depths)
    assert len(depths) == count


@pytest.mark.parametrize("handler", [EVENT_HANDLER, REINDEX_HANDLER])
def test_the_dashboard_graphs_each_functions_errors_and_durations(handler):
    (name,) = [
        k for k, f in resources("public", "AWS::Lambda::Function").items() if f == function("public", handler)
    ]
    lines = {
        (g["name"], g["stat"])
        for g in graphed("public")
        if g["namespace"] == "AWS/Lambda" and g["dimensions"] == {"FunctionName": {"Ref": name}}
    }

    assert lines == {("Errors", "Sum"), ("Duration", "p50"), ("Duration", "p99"), ("Duration", "Maximum")}


@pytest.mark.parametrize("mode", ["private", "public"])
def test_the_dashboard_is_named_after_the_stack_and_its_url_is_an_output(mode):
    (name, resource) = next(iter(resources(mode, "AWS::CloudWatch::Dashboard").items()))
    (output,) = [v for k, v in template(mode)["Outputs"].items() if k.startswith("ChannelDashboardUrl")]
    region = {"Ref": "AWS::Region"}

    assert resource["Properties"]["DashboardName"] == f"Test{mode}-Channel"
    assert output["Value"] == {
        "Fn::Join": [
            "",
            [
                "https://",
                region,
                ".console.aws.amazon.com/cloudwatch/home?region=",
                region,
                "#dashboards/dashboard/",
                {"Ref": name},
            ],
        ]
    }
    assert dashboard(mode)[0]["widgets"], "no widgets"


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
        ({"shard_retention_days": "0"}, "shard_retention_days"),
        ({"shard_retention_days": str(MAX_SHARD_RETENTION_DAYS + 1)}, "shard_retention_days"),
        ({"shard_retention_days": "a week"}, "shard_retention_days"),
        ({"repodata_patch": "My-Patches"}, "repodata_patch"),
        ({"repodata_patch": "two words"}, "repodata_patch"),
        ({"repodata_patch": ".hidden"}, "repodata_patch"),
        ({"repodata_patch": "x" * 129}, "repodata_patch"),
        ({"repodata_patch": "patches\nrm -rf"}, "repodata_patch"),
        ({"reconcile_schedule": "nightly"}, "reconcile_schedule"),
        ({"reconcile_schedule": "0 3 * * *"}, "reconcile_schedule"),
        ({"reconcile_schedule": "cron(0 3 * * ?)"}, "reconcile_schedule"),
        ({"reconcile_schedule": "cron(0 3 * * * *)"}, "reconcile_schedule"),
        ({"reconcile_schedule": "rate(1 days)"}, "reconcile_schedule"),
        ({"reconcile_schedule": "rate(0 hours)"}, "reconcile_schedule"),
        ({"reconcile_schedule": "at(2030-01-01T03:00:00)"}, "reconcile_schedule"),
        ({"reconcile_schedule": "cron(0 3 * * ? *)\nrate(1 day)"}, "reconcile_schedule"),
        ({"mail_rejections": "yes"}, "mail_rejections"),
        ({"mail_rejections": True}, "mail_rejections"),
        ({"fanout_concurrency": "0"}, "fanout_concurrency"),
        ({"fanout_concurrency": "10001"}, "fanout_concurrency"),
        ({"fanout_batch_items": "0"}, "fanout_batch_items"),
        ({"fanout_batch_items": "1001"}, "fanout_batch_items"),
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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", DEFAULT_RECONCILE_SCHEDULE),
        (None, DEFAULT_RECONCILE_SCHEDULE),
        ("off", None),
        ("OFF", None),
        ("cron(30 2 ? * SUN *)", "cron(30 2 ? * SUN *)"),
        ("rate(1 day)", "rate(1 day)"),
        ("rate(6 hours)", "rate(6 hours)"),
    ],
)
def test_reconcile_schedule_takes_cron_or_rate_expressions_and_off(value, expected):
    assert ChannelSettings.from_context({"reconcile_schedule": value}).reconcile_schedule == expected


@pytest.mark.parametrize("name", ["conda-forge-repodata-patches", "my_patches", "p", "a.b-c_9", "x" * 128])
def test_conda_package_names_are_accepted_as_the_patch_package(name):
    assert package_name_problem(name) is None
    assert ChannelSettings.from_context({"repodata_patch": name}).repodata_patch == name


@pytest.mark.parametrize("name", ["Patches", "-patches", "patches!", "x" * 129])
def test_the_patch_package_follows_the_handlers_own_name_rule(name):
    problem = package_name_problem(name)
    assert problem is not None

    with pytest.raises(SettingsError) as raised:
        ChannelSettings.from_context({"repodata_patch": name})

    assert str(raised.value) == f"repodata_patch={name[:64]!r} {problem}"


def test_shard_retention_defaults_to_the_indexers_and_takes_its_range():
    assert ChannelSettings.from_context({}).shard_retention_days == DEFAULT_SHARD_RETENTION_DAYS
    for days in (1, MAX_SHARD_RETENTION_DAYS):
        assert ChannelSettings.from_context({"shard_retention_days": str(days)}).shard_retention_days == days


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
    assert context["shard_retention_days"] == DEFAULT_SHARD_RETENTION_DAYS
    assert context["reconcile_schedule"] == DEFAULT_RECONCILE_SCHEDULE


# --- the app -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("context", [PRIVATE, PUBLIC, PUBLIC_ROOT, TUNED, UNSCHEDULED])
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

    # The event function, the full-reindex function and the fan-out's three steps.
    assert len(functions) == 5
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
