"""Settings of the Lambda handlers, read once from environment variables and validated.

The S3 endpoint for S3-compatible and local use is not ours to configure: boto3 reads its own
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .indexer import DEFAULT_JOBS
from .publication import DEFAULT_REPODATA_MAX_AGE

BUCKET_VARIABLE = "CHANNEL_BUCKET"
MAX_AGE_VARIABLE = "REPODATA_MAX_AGE"
JOBS_VARIABLE = "READ_JOBS"
PREFIXES_VARIABLE = "CHANNEL_PREFIXES"
MAX_JOBS = 64
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class ConfigurationError(Exception):
    """A missing or bad setting; the message is one line naming the variable and what is expected."""


@dataclass(frozen=True)
class HandlerSettings:
    """CHANNEL_BUCKET: the deployed bucket (the full reindex's default; events name their own bucket).
    REPODATA_MAX_AGE: Cache-Control max-age of repodata files in seconds (default 60).
    READ_JOBS: packages read in parallel (default 8, at most 64).
    CHANNEL_PREFIXES: comma-separated channel prefixes to index ('' for the bucket root); unset: any."""

    bucket: str | None
    repodata_max_age: int = DEFAULT_REPODATA_MAX_AGE
    read_jobs: int = DEFAULT_JOBS
    channel_prefixes: frozenset[str] | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> HandlerSettings:
        bucket = environ.get(BUCKET_VARIABLE, "").strip() or None
        if bucket is not None and (not _BUCKET_NAME.match(bucket) or ".." in bucket):
            raise ConfigurationError(f"{BUCKET_VARIABLE}={bucket!r} is not a valid S3 bucket name")
        prefixes = environ.get(PREFIXES_VARIABLE)
        return cls(
            bucket=bucket,
            repodata_max_age=_whole_number(environ, MAX_AGE_VARIABLE, DEFAULT_REPODATA_MAX_AGE, 0, 31536000),
            read_jobs=_whole_number(environ, JOBS_VARIABLE, DEFAULT_JOBS, 1, MAX_JOBS),
            channel_prefixes=None
            if prefixes is None
            else frozenset(prefix.strip().strip("/") for prefix in prefixes.split(",")),
        )

    def manages(self, channel: str) -> bool:
        return self.channel_prefixes is None or channel in self.channel_prefixes


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
