"""Deployment settings from CDK context (cdk.json or `-c key=value`), validated at synth with one error.

Rules shared with the indexer (channel prefixes, read jobs, package size, /tmp, shard retention, the patch
package's name) come from reindexer.contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reindexer.contract import (
    ACCESS_MODES,
    DEFAULT_FANOUT_BATCH_ITEMS,
    DEFAULT_FANOUT_CONCURRENCY,
    DEFAULT_MAX_PACKAGE_MB,
    DEFAULT_READ_JOBS,
    DEFAULT_SHARD_RETENTION_DAYS,
    LAMBDA_MAX_EPHEMERAL_MB,
    MAX_FANOUT_BATCH_ITEMS,
    MAX_FANOUT_CONCURRENCY,
    MAX_PACKAGE_MB_LIMIT,
    MAX_READ_JOBS,
    MAX_SHARD_RETENTION_DAYS,
    bucket_name_problem,
    channel_prefix_problem,
    ephemeral_storage_mb,
    package_name_problem,
)

REMOVAL_POLICIES = ("retain", "destroy")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# EventBridge Scheduler's recurring expressions (UTC): cron with its six fields, or a rate.
DEFAULT_RECONCILE_SCHEDULE = "cron(0 3 * * ? *)"
RECONCILE_OFF = "off"
# Whether an EventBridge rule mails each rejected package to the alarm topic; "auto": when alarm_email is set.
MAIL_REJECTIONS = ("auto", "on", "off")
_CRON = re.compile(r"^cron\((\S+ ){5}\S+\)$")
_RATE = re.compile(r"^rate\((?P<value>[1-9][0-9]*) (?P<unit>minutes?|hours?|days?)\)$")


CONTEXT_KEYS = (
    "bucket_name",
    "existing_bucket",
    "access",
    "channel_prefixes",
    "removal_policy",
    "noncurrent_version_days",
    "repodata_max_age",
    "read_jobs",
    "max_package_mb",
    "alarm_email",
    "event_function_memory",
    "event_function_timeout",
    "reindex_function_memory",
    "reindex_function_timeout",
    "shard_retention_days",
    "repodata_patch",
    "reconcile_schedule",
    "mail_rejections",
    "fanout_concurrency",
    "fanout_batch_items",
)


class SettingsError(ValueError):
    """A context value is missing or wrong; the message names the key and what is expected."""


@dataclass(frozen=True)
class FunctionSettings:
    memory_mb: int
    timeout_seconds: int


@dataclass(frozen=True)
class ChannelSettings:
    """Everything a deployment can choose. Keys in cdk.json context have the same names."""

    bucket_name: str | None = None
    existing_bucket: str | None = None
    access: str = "private"
    channel_prefixes: tuple[str, ...] = ()
    removal_policy: str = "retain"
    noncurrent_version_days: int = 30
    repodata_max_age: int = 60
    read_jobs: int = DEFAULT_READ_JOBS
    max_package_mb: int = DEFAULT_MAX_PACKAGE_MB
    alarm_email: str | None = None
    event_function: FunctionSettings = field(default_factory=lambda: FunctionSettings(512, 60))
    reindex_function: FunctionSettings = field(default_factory=lambda: FunctionSettings(2048, 900))
    shard_retention_days: int = DEFAULT_SHARD_RETENTION_DAYS
    # A noarch package whose newest version holds each subdir's patch instructions (rattler-index's
    # --repodata-patch); None: only the patch_instructions.json files operators write.
    repodata_patch: str | None = None
    # When the full reindex runs over every channel by itself; None: never (the setting's value "off").
    reconcile_schedule: str | None = DEFAULT_RECONCILE_SCHEDULE
    # "auto", "on" or "off": see `mails_rejections`.
    mail_rejections: str = "auto"
    # The fan-out full reindex's Distributed Map: read batches at once, and packages per batch.
    fanout_concurrency: int = DEFAULT_FANOUT_CONCURRENCY
    fanout_batch_items: int = DEFAULT_FANOUT_BATCH_ITEMS

    @property
    def public(self) -> bool:
        return self.access == "public"

    @property
    def mails_rejections(self) -> bool:
        """Whether the stack's rule sends each `Package Rejected` event to the alarm topic: "auto" does when
        alarm_email subscribes someone to it, "on" also without (for the topic's other subscribers)."""
        if self.mail_rejections == "auto":
            return self.alarm_email is not None
        return self.mail_rejections == "on"

    @property
    def ephemeral_storage_mb(self) -> int:
        """The /tmp each function gets: room for `read_jobs` packages of `max_package_mb` at once."""
        return ephemeral_storage_mb(self.read_jobs, self.max_package_mb)

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> ChannelSettings:
        """Read and check every setting; unknown-but-similar keys are not guessed at."""
        bucket_name = _optional_text(context, "bucket_name")
        existing_bucket = _optional_text(context, "existing_bucket")
        for key, name in (("bucket_name", bucket_name), ("existing_bucket", existing_bucket)):
            if name is not None and (problem := bucket_name_problem(name)):
                raise SettingsError(f"{key}={name!r} {problem}")
        if bucket_name and existing_bucket:
            raise SettingsError("set either bucket_name (a new bucket) or existing_bucket, not both")
        access = _choice(context, "access", ACCESS_MODES, "private")
        removal_policy = _choice(context, "removal_policy", REMOVAL_POLICIES, "retain")
        read_jobs = _number(context, "read_jobs", DEFAULT_READ_JOBS, 1, MAX_READ_JOBS)
        max_package_mb = _number(context, "max_package_mb", DEFAULT_MAX_PACKAGE_MB, 1, MAX_PACKAGE_MB_LIMIT)
        needed = ephemeral_storage_mb(read_jobs, max_package_mb)
        if needed > LAMBDA_MAX_EPHEMERAL_MB:
            raise SettingsError(
                f"read_jobs={read_jobs} x max_package_mb={max_package_mb} needs {needed} MiB of /tmp, more "
                f"than Lambda's {LAMBDA_MAX_EPHEMERAL_MB} MiB: lower read_jobs or max_package_mb"
            )
        return cls(
            bucket_name=bucket_name,
            existing_bucket=existing_bucket,
            access=access,
            channel_prefixes=_prefixes(context.get("channel_prefixes")),
            removal_policy=removal_policy,
            noncurrent_version_days=_number(context, "noncurrent_version_days", 30, 1, 3650),
            repodata_max_age=_number(context, "repodata_max_age", 60, 0, 31536000),
            read_jobs=read_jobs,
            max_package_mb=max_package_mb,
            alarm_email=_email(context),
            event_function=FunctionSettings(
                _number(context, "event_function_memory", 512, 128, 10240),
                _number(context, "event_function_timeout", 60, 10, 900),
            ),
            reindex_function=FunctionSettings(
                _number(context, "reindex_function_memory", 2048, 128, 10240),
                _number(context, "reindex_function_timeout", 900, 60, 900),
            ),
            shard_retention_days=_number(
                context, "shard_retention_days", DEFAULT_SHARD_RETENTION_DAYS, 1, MAX_SHARD_RETENTION_DAYS
            ),
            repodata_patch=_package_name(context, "repodata_patch"),
            reconcile_schedule=_schedule(context, "reconcile_schedule"),
            mail_rejections=_choice(context, "mail_rejections", MAIL_REJECTIONS, "auto"),
            fanout_concurrency=_number(
                context, "fanout_concurrency", DEFAULT_FANOUT_CONCURRENCY, 1, MAX_FANOUT_CONCURRENCY
            ),
            fanout_batch_items=_number(
                context, "fanout_batch_items", DEFAULT_FANOUT_BATCH_ITEMS, 1, MAX_FANOUT_BATCH_ITEMS
            ),
        )


def _optional_text(context: Mapping[str, Any], key: str) -> str | None:
    value = context.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SettingsError(f"{key} must be text, not {value!r}")
    return value.strip()


def _choice(context: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = _optional_text(context, key) or default
    if value not in allowed:
        raise SettingsError(f"{key}={value!r} must be one of: {', '.join(allowed)}")
    return value


def _number(context: Mapping[str, Any], key: str, default: int, lowest: int, highest: int) -> int:
    value = context.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise SettingsError(f"{key}={value!r} must be a whole number") from None
    if not lowest <= number <= highest:
        raise SettingsError(f"{key}={number} must be between {lowest} and {highest}")
    return number


def _prefixes(value: Any) -> tuple[str, ...]:
    """Channel prefixes from a JSON list or comma-separated text; none means the whole bucket."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        try:
            items = json.loads(text) if text.startswith("[") else text.split(",")
        except ValueError:
            raise SettingsError(
                f"channel_prefixes={value!r} is neither a JSON list nor comma-separated"
            ) from None
    else:
        items = value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SettingsError(f"channel_prefixes must be a list of prefixes, not {value!r}")
    prefixes = tuple(sorted({item.strip().strip("/") for item in items if item.strip().strip("/")}))
    for prefix in prefixes:
        problem = channel_prefix_problem(prefix)
        if problem is not None:
            raise SettingsError(f"channel_prefixes: {prefix!r} {problem}")
    for prefix in prefixes:
        for other in prefixes:
            if other != prefix and other.startswith(prefix + "/"):
                # S3 refuses overlapping notification filters for one event type.
                raise SettingsError(f"channel_prefixes: {other!r} is nested in {prefix!r}")
    return prefixes


def _email(context: Mapping[str, Any]) -> str | None:
    email = _optional_text(context, "alarm_email")
    if email is not None and not _EMAIL.match(email):
        raise SettingsError(f"alarm_email={email!r} is not an e-mail address")
    return email


def _package_name(context: Mapping[str, Any], key: str) -> str | None:
    name = _optional_text(context, key)
    if name is not None and (problem := package_name_problem(name)):
        raise SettingsError(f"{key}={name[:64]!r} {problem}")
    return name


def _schedule(context: Mapping[str, Any], key: str) -> str | None:
    """An EventBridge Scheduler expression, in UTC; 'off' turns the schedule off."""
    expression = _optional_text(context, key) or DEFAULT_RECONCILE_SCHEDULE
    if expression.lower() == RECONCILE_OFF:
        return None
    if not (_CRON.match(expression) or _RATE.match(expression)):
        raise SettingsError(
            f"{key}={expression[:64]!r} must be a schedule expression, 'cron(<6 fields>)' or "
            f"'rate(<n> minutes|hours|days)' (UTC), or {RECONCILE_OFF!r}"
        )
    if (rate := _RATE.match(expression)) and (rate["value"] == "1") == rate["unit"].endswith("s"):
        raise SettingsError(f"{key}={expression!r}: the unit is singular for 1 and plural otherwise")
    if _CRON.match(expression):
        day_of_month, day_of_week = expression[len("cron(") : -1].split()[2:5:2]
        if (day_of_month == "?") == (day_of_week == "?"):
            raise SettingsError(
                f"{key}={expression[:64]!r}: exactly one of day-of-month (3rd field) and day-of-week "
                "(5th) must be '?'"
            )
    return expression
