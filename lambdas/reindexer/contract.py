"""Facts the indexer and the infrastructure that deploys it must agree on, in one pure module.

It imports nothing but the standard library, so the CDK app (infra/) can use it at synth time without
loading any of the indexer.
"""

from __future__ import annotations

import re

# Environment variables of both Lambda functions.
BUCKET_VARIABLE = "CHANNEL_BUCKET"
MAX_AGE_VARIABLE = "REPODATA_MAX_AGE"
JOBS_VARIABLE = "READ_JOBS"
PREFIXES_VARIABLE = "CHANNEL_PREFIXES"
MAX_PACKAGE_VARIABLE = "MAX_PACKAGE_MB"
# "private" or "public": private channels' repodata is served with `Cache-Control: private`.
ACCESS_VARIABLE = "CHANNEL_ACCESS"
ACCESS_MODES = ("private", "public")

DEFAULT_READ_JOBS = 8
MAX_READ_JOBS = 64

# The largest package file the indexer reads (a package is spooled to local disk while it is read).
# Larger files are rejected before they are downloaded; the setting raises it for channels of big CUDA builds.
DEFAULT_MAX_PACKAGE_MB = 1024
MAX_PACKAGE_MB_LIMIT = 10 * 1024
# Lambda's /tmp: 512 MiB by default, up to 10 GiB.
LAMBDA_MIN_EPHEMERAL_MB = 512
LAMBDA_MAX_EPHEMERAL_MB = 10240
# /tmp room kept beside the packages being read (the runtime's own files, zstd and bz2 scratch).
EPHEMERAL_HEADROOM_MB = 512

# What the indexer learns of the store itself (store_conditions): the probe's scratch objects and its cached
# answer, at the bucket root. Both functions write them; nobody outside the account reads them.
BUCKET_STATE_FOLDER = ".reindexer"
STORE_CONDITIONS_KEY = f"{BUCKET_STATE_FOLDER}/store-conditions.json"
PROBE_KEY_PREFIX = f"{BUCKET_STATE_FOLDER}/probe-"

CHANNEL_PREFIX_MAX_LENGTH = 256
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()\-]+$")


def channel_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot name a channel (None when it can); '' is the bucket root.

    One rule for the stack's settings at synth, the handlers' requests and events, and the CLI: S3's
    safe key characters, '/'-separated segments, none of them empty, '.', '..' or hidden (the indexer's
    own folders start with a dot).
    """
    if prefix == "":
        return None
    if len(prefix) > CHANNEL_PREFIX_MAX_LENGTH:
        return f"is longer than {CHANNEL_PREFIX_MAX_LENGTH} characters"
    for segment in prefix.split("/"):
        if not segment:
            return "has an empty segment (a leading, trailing or doubled '/')"
        if segment.startswith("."):
            return f"has a segment starting with '.' ({segment[:32]!r})"
        if not _PREFIX_SEGMENT.match(segment):
            return "may only hold letters, digits, '/' and the characters !_.*'()-"
    return None


def ephemeral_storage_mb(read_jobs: int, max_package_mb: int) -> int:
    """The /tmp a function needs to spool `read_jobs` packages of the largest accepted size at once."""
    return max(LAMBDA_MIN_EPHEMERAL_MB, read_jobs * max_package_mb + EPHEMERAL_HEADROOM_MB)
