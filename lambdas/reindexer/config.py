"""Settings of the Lambda handlers, read once from environment variables and validated.

The variable names, defaults and limits are the ones the CDK stack sets (reindexer.contract). The S3
endpoint for S3-compatible and local use is not ours to configure: boto3 reads its own
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .contract import (
    ACCESS_MODES,
    ACCESS_VARIABLE,
    BUCKET_VARIABLE,
    DEFAULT_MAX_PACKAGE_MB,
    DEFAULT_READ_JOBS,
    DEFAULT_SHARD_RETENTION_DAYS,
    JOBS_VARIABLE,
    MAX_AGE_VARIABLE,
    MAX_PACKAGE_MB_LIMIT,
    MAX_PACKAGE_VARIABLE,
    MAX_READ_JOBS,
    MAX_SHARD_RETENTION_DAYS,
    PREFIXES_VARIABLE,
    REPODATA_PATCH_VARIABLE,
    SHARD_RETENTION_VARIABLE,
    bucket_name_problem,
    channel_prefix_problem,
    package_name_problem,
)
from .options import DEFAULT_REPODATA_MAX_AGE

MAX_REPODATA_MAX_AGE = 31536000  # one year, the longest max-age caches are asked to honour
DEFAULT_ACCESS = "public"


class ConfigurationError(Exception):
    """A missing or bad setting; the message is one line naming the variable and what is expected."""


@dataclass(frozen=True)
class HandlerSettings:
    """CHANNEL_BUCKET: the deployed bucket, the only one the handlers act on (required).
    REPODATA_MAX_AGE: Cache-Control max-age of repodata files in seconds (default 60).
    READ_JOBS: packages read in parallel (default 8, at most 64).
    CHANNEL_PREFIXES: comma-separated channel prefixes to index ('' for the bucket root); unset: any.
    MAX_PACKAGE_MB: package files larger than this are rejected unread (default 1024).
    CHANNEL_ACCESS: 'private' (repodata Cache-Control private) or 'public' (default).
    SHARD_RETENTION_DAYS: full runs delete shards unreferenced for this long (default 7).
    REPODATA_PATCH: a noarch patch package, applied before each subdir's patch_instructions.json."""

    bucket: str
    repodata_max_age: int = DEFAULT_REPODATA_MAX_AGE
    read_jobs: int = DEFAULT_READ_JOBS
    channel_prefixes: frozenset[str] | None = None
    max_package_mb: int = DEFAULT_MAX_PACKAGE_MB
    private: bool = False
    shard_retention_days: int = DEFAULT_SHARD_RETENTION_DAYS
    repodata_patch: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> HandlerSettings:
        return cls(
            bucket=_bucket(environ),
            repodata_max_age=_whole_number(
                environ, MAX_AGE_VARIABLE, DEFAULT_REPODATA_MAX_AGE, 0, MAX_REPODATA_MAX_AGE
            ),
            read_jobs=_whole_number(environ, JOBS_VARIABLE, DEFAULT_READ_JOBS, 1, MAX_READ_JOBS),
            channel_prefixes=_channel_prefixes(environ),
            max_package_mb=_whole_number(
                environ, MAX_PACKAGE_VARIABLE, DEFAULT_MAX_PACKAGE_MB, 1, MAX_PACKAGE_MB_LIMIT
            ),
            private=_access(environ) == "private",
            shard_retention_days=_whole_number(
                environ, SHARD_RETENTION_VARIABLE, DEFAULT_SHARD_RETENTION_DAYS, 1, MAX_SHARD_RETENTION_DAYS
            ),
            repodata_patch=_package_name(environ),
        )

    @property
    def max_package_bytes(self) -> int:
        return self.max_package_mb * 1024 * 1024

    def manages(self, channel: str) -> bool:
        """Whether the handlers may index `channel`: a valid prefix, and one of CHANNEL_PREFIXES if set."""
        if channel_prefix_problem(channel) is not None:
            return False
        return self.channel_prefixes is None or channel in self.channel_prefixes


def _bucket(environ: Mapping[str, str]) -> str:
    bucket = environ.get(BUCKET_VARIABLE, "").strip()
    if not bucket:
        # Events name their own bucket; without this setting anyone able to invoke the function or write
        # to its queue could point it at another bucket the role can reach.
        raise ConfigurationError(f"{BUCKET_VARIABLE} is not set: it must name the channel bucket")
    if problem := bucket_name_problem(bucket):
        raise ConfigurationError(f"{BUCKET_VARIABLE}={bucket!r} {problem}")
    return bucket


def _channel_prefixes(environ: Mapping[str, str]) -> frozenset[str] | None:
    text = environ.get(PREFIXES_VARIABLE)
    if text is None:
        return None
    prefixes = set()
    for entry in text.split(","):
        # Surrounding spaces and slashes are forgiven ('/' alone is the bucket root); what remains must
        # be a channel prefix by the same rule the stack, the CLI and the events are held to.
        prefix = entry.strip().strip("/")
        if problem := channel_prefix_problem(prefix):
            raise ConfigurationError(f"{PREFIXES_VARIABLE} entry {prefix!r} {problem}")
        prefixes.add(prefix)
    return frozenset(prefixes)


def _package_name(environ: Mapping[str, str]) -> str | None:
    text = environ.get(REPODATA_PATCH_VARIABLE, "").strip()
    if not text:
        return None
    if problem := package_name_problem(text):
        raise ConfigurationError(f"{REPODATA_PATCH_VARIABLE}={text[:64]!r} {problem}")
    return text


def _access(environ: Mapping[str, str]) -> str:
    text = environ.get(ACCESS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_ACCESS
    if text not in ACCESS_MODES:
        raise ConfigurationError(f"{ACCESS_VARIABLE}={text!r} must be one of {', '.join(ACCESS_MODES)}")
    return text


def _whole_number(environ: Mapping[str, str], name: str, default: int, lowest: int, highest: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{name}={text!r} must be a whole number") from None
    if not lowest <= value <= highest:
        raise ConfigurationError(f"{name}={value} must be between {lowest} and {highest}")
    return value
