"""Facts the indexer, its handlers, the local stack, the infrastructure, bench and tests must agree on.

Pure and standard-library only, so the CDK app (infra/) reads it at synth time without loading the indexer:
the key layout the indexer writes (and the IAM patterns and notification filters derived from it), package
suffixes, environment variable names, handler paths, metric names, queue defaults and naming rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# --- package files ------------------------------------------------------------------------------------------
CONDA_SUFFIX = ".conda"
TAR_BZ2_SUFFIX = ".tar.bz2"
PACKAGE_SUFFIXES = (CONDA_SUFFIX, TAR_BZ2_SUFFIX)

# --- the keys the indexer writes inside each subdir folder, `<channel>/<subdir>/` ------------------------
REPODATA_JSON = "repodata.json"
REPODATA_ZST = "repodata.json.zst"
SHARD_INDEX = "repodata_shards.msgpack.zst"
SHARDS_FOLDER = "shards"
# The indexer's private folder: in each subdir its state and lease, at the bucket root its store probe.
STATE_FOLDER = ".reindexer"
STATE_FILE = f"{STATE_FOLDER}/state.json.zst"
LEASE_FILE = f"{STATE_FOLDER}/lease.json"
PUBLISHED_FILES = (REPODATA_JSON, REPODATA_ZST, SHARD_INDEX)
# With patch instructions, repodata.json and the shards are the patched view and these the unpatched one.
REPODATA_FROM_PACKAGES = "repodata_from_packages.json"
REPODATA_FROM_PACKAGES_ZST = "repodata_from_packages.json.zst"
UNPATCHED_FILES = (REPODATA_FROM_PACKAGES, REPODATA_FROM_PACKAGES_ZST)
# conda's per-subdir patch instructions: written by operators (reindexer yank/patch), read by the indexer.
PATCH_INSTRUCTIONS = "patch_instructions.json"

# Per subdir, the run_exports of every package (CEP "Serving run_exports metadata in conda channels"; the
# CEP and conda-index serve the JSON only).
RUN_EXPORTS_JSON = "run_exports.json"

# --- the keys the indexer writes at the channel level, `<channel>/` ---------------------------------------
CHANNELDATA_JSON = "channeldata.json"
INDEX_HTML = "index.html"
CHANNEL_FILES = (CHANNELDATA_JSON, INDEX_HTML)
# Its private files there, in the channel's own `.reindexer/`: the lease held while the channel files are
# made again from every subdir's state, and what they were last made from and written as (ETags, digests).
CHANNEL_LEASE_FILE = f"{STATE_FOLDER}/channel-lease.json"
CHANNEL_STATE_FILE = f"{STATE_FOLDER}/channel-state.json"
CHANNEL_PRIVATE_FILES = (CHANNEL_LEASE_FILE, CHANNEL_STATE_FILE)

# --- a fan-out full reindex (Step Functions: plan, a Distributed Map of read batches, commit) -------------
# Each run's objects, in the channel's private folder: `<channel>/.reindexer/runs/<run>/manifest.json` (the
# packages to read, the Map's ItemReader) and one `results/<batch>.json` per batch; deleted by the commit.
RUNS_FOLDER = f"{STATE_FOLDER}/runs"
RUN_MANIFEST = "manifest.json"
RUN_RESULTS_FOLDER = "results"
# What a run folder left by an execution that never committed may wait before a later plan deletes it.
RUN_EXPIRY_DAYS = 7

# --- the keys the indexer writes at the bucket root ---------------------------------------------------------
BUCKET_STATE_FOLDER = STATE_FOLDER
STORE_CONDITIONS_KEY = f"{BUCKET_STATE_FOLDER}/store-conditions.json"
PROBE_KEY_PREFIX = f"{BUCKET_STATE_FOLDER}/probe-"

# Superseded shards are deleted by full runs once nothing has referenced them for this long (CEP-16).
DEFAULT_SHARD_RETENTION_DAYS = 7
SECONDS_PER_DAY = 86400
MAX_SHARD_RETENTION_DAYS = 3650

# --- handlers, logs and metrics -----------------------------------------------------------------------------
PACKAGE_EVENTS_HANDLER = "reindexer.handlers.package_events.handler"
FULL_REINDEX_HANDLER = "reindexer.handlers.full_reindex.handler"
RUN_PLAN_HANDLER = "reindexer.handlers.reindex_steps.plan_handler"
RUN_READ_HANDLER = "reindexer.handlers.reindex_steps.read_handler"
RUN_COMMIT_HANDLER = "reindexer.handlers.reindex_steps.commit_handler"
# The errors the fan-out's read and commit steps raise for work worth trying again (the state machine
# retries them with backoff): packages not read yet (throttled, the time ran out), a subdir not committed.
BATCH_INCOMPLETE_ERROR = "BatchIncompleteError"
COMMIT_INCOMPLETE_ERROR = "CommitIncompleteError"
# The Distributed Map's defaults: child executions at once, and packages per batch (one read invocation).
DEFAULT_FANOUT_CONCURRENCY = 100
DEFAULT_FANOUT_BATCH_ITEMS = 100
# A Distributed Map runs at most 10,000 child executions at once. A batch is one state input (256 KiB at
# most); the ItemBatcher also stops a batch at FANOUT_BATCH_BYTES, room for ~300 items with long names.
MAX_FANOUT_CONCURRENCY = 10000
MAX_FANOUT_BATCH_ITEMS = 1000
FANOUT_BATCH_BYTES = 128 * 1024
SERVICE_NAME = "reindexer"
METRICS_NAMESPACE = "Reindexer"
# Powertools reads these two; the stack sets them to the values above.
SERVICE_NAME_VARIABLE = "POWERTOOLS_SERVICE_NAME"
METRICS_NAMESPACE_VARIABLE = "POWERTOOLS_METRICS_NAMESPACE"


class Metric:
    """The names of the metrics the handlers emit (namespace METRICS_NAMESPACE, dimension service)."""

    NOTICES_RECEIVED = "NoticesReceived"
    PACKAGES_INDEXED = "PackagesIndexed"
    PACKAGES_REMOVED = "PackagesRemoved"
    PACKAGES_REJECTED = "PackagesRejected"
    READ_FAILURES = "ReadFailures"
    COMMIT_CONFLICTS = "CommitConflicts"
    SUBDIR_UPDATE_FAILURES = "SubdirUpdateFailures"
    SUBDIRS_POSTPONED = "SubdirsPostponed"
    PUBLICATION_LATENCY = "PublicationLatency"
    INVALID_REQUESTS = "InvalidRequests"
    PATCH_EDITS = "PatchInstructionsEdited"
    # Full runs: subdirs finished and subdirs left for the next invocation (its progress).
    SUBDIRS_REINDEXED = "SubdirsReindexed"
    SUBDIRS_SKIPPED = "SubdirsSkipped"
    # Events for automation that could not be put on the bus (after one retry), or were dropped for time.
    EVENT_PUT_FAILURES = "EventPutFailures"


# --- events for automation (EventBridge, default bus) -----------------------------------------------------
EVENT_SOURCE = "reindexer"


class DetailType:
    """The detail types of the events the handlers put on the default bus (source EVENT_SOURCE)."""

    PACKAGE_INDEXED = "Package Indexed"
    PACKAGE_REJECTED = "Package Rejected"
    PACKAGE_REMOVED = "Package Removed"
    SUBDIR_PUBLISHED = "Subdir Published"
    ALL = (PACKAGE_INDEXED, PACKAGE_REJECTED, PACKAGE_REMOVED, SUBDIR_PUBLISHED)


# The bus the handlers put their events on; unset, they put none (tests, benchmarks, other tools' wiring).
# The stack sets it to DEFAULT_EVENT_BUS and grants events:PutEvents on that bus only.
EVENT_BUS_VARIABLE = "EVENT_BUS"
DEFAULT_EVENT_BUS = "default"


# --- the package-event queue --------------------------------------------------------------------------------
# SQS must keep a message invisible for longer than the function may run (AWS recommends 6x the timeout).
VISIBILITY_TIMEOUT_FACTOR = 6
MAX_RECEIVE_COUNT = 5
BATCH_SIZE = 100
BATCHING_WINDOW_SECONDS = 5
DEFAULT_EVENT_TIMEOUT_SECONDS = 60
NOTIFIED_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")

# --- the local stack (`reindexer local`) --------------------------------------------------------------------
LOCAL_PORT = 9339
LOCAL_BUCKET = "conda-channel"

# Environment variables of both Lambda functions.
BUCKET_VARIABLE = "CHANNEL_BUCKET"
MAX_AGE_VARIABLE = "REPODATA_MAX_AGE"
JOBS_VARIABLE = "READ_JOBS"
PREFIXES_VARIABLE = "CHANNEL_PREFIXES"
MAX_PACKAGE_VARIABLE = "MAX_PACKAGE_MB"
SHARD_RETENTION_VARIABLE = "SHARD_RETENTION_DAYS"
# The name of a noarch package whose newest version holds <subdir>/patch_instructions.json for each subdir.
REPODATA_PATCH_VARIABLE = "REPODATA_PATCH"
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

CHANNEL_PREFIX_MAX_LENGTH = 256
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()\-]+$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


_PACKAGE_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.\-]{0,127}$")


def package_name_problem(name: str) -> str | None:
    """Why `name` is no conda package name to look for (None when it is): the patch package setting."""
    if not _PACKAGE_NAME.match(name):
        return "is not a conda package name (lowercase letters, digits and _.- , at most 128)"
    return None


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is no valid S3 bucket name (None when it is): the settings of the stack and the handlers."""
    if not _BUCKET_NAME.match(name) or ".." in name:
        return "is not a valid S3 bucket name"
    return None


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


def join_key(*parts: str) -> str:
    """Join key segments with '/', skipping empty ones (the channel prefix may be the bucket root)."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


@dataclass(frozen=True)
class ObjectGrants:
    """Key patterns (IAM's: '*' matches any characters, '/' included) of what a role may do to objects."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    delete: tuple[str, ...]


def indexer_grants(channel_prefixes: tuple[str, ...]) -> ObjectGrants:
    """What both indexer functions need on a bucket holding these channels ('' is the bucket root): read all
    of a channel, write only the keys the indexer writes (in each subdir, and the channel files with their
    lease and state), delete only its leases, and use the bucket-root probe of what the store honours (a
    scratch object it creates and removes, and the cached answer)."""
    channels = channel_prefixes or ("",)
    in_subdirs = (
        *PUBLISHED_FILES,
        *UNPATCHED_FILES,
        RUN_EXPORTS_JSON,
        f"{SHARDS_FOLDER}/*",
        f"{STATE_FOLDER}/*",
    )
    probes = f"{PROBE_KEY_PREFIX}*"
    return ObjectGrants(
        # The probe reads back its scratch object (HEAD is authorized as s3:GetObject).
        read=(*(join_key(channel, "*") for channel in channels), STORE_CONDITIONS_KEY, probes),
        write=(
            *(join_key(channel, "*", key) for channel in channels for key in in_subdirs),
            *(
                join_key(channel, key)
                for channel in channels
                for key in (*CHANNEL_FILES, *CHANNEL_PRIVATE_FILES)
            ),
            probes,
            STORE_CONDITIONS_KEY,
        ),
        # The unpatched repodata goes when a subdir's patch instructions do (it would go stale).
        delete=(
            *(join_key(channel, "*", key) for channel in channels for key in (LEASE_FILE, *UNPATCHED_FILES)),
            *(join_key(channel, CHANNEL_LEASE_FILE) for channel in channels),
            probes,
        ),
    )


def full_reindex_grants(channel_prefixes: tuple[str, ...]) -> ObjectGrants:
    """The full-reindex function's grants: the indexer's, deleting superseded shards (only full runs clean)
    and editing patch instructions (the console's yank / unyank / patch requests)."""
    grants = indexer_grants(channel_prefixes)
    channels = channel_prefixes or ("",)
    shards = tuple(join_key(channel, "*", SHARDS_FOLDER, "*") for channel in channels)
    patches = tuple(join_key(channel, "*", PATCH_INSTRUCTIONS) for channel in channels)
    return ObjectGrants(read=grants.read, write=(*grants.write, *patches), delete=(*grants.delete, *shards))


def run_manifest_patterns(channel_prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The fan-out runs' manifests: what the plan step writes and the state machine's ItemReader reads."""
    return tuple(join_key(channel, RUNS_FOLDER, "*", RUN_MANIFEST) for channel in channel_prefixes or ("",))


def _runs(channel_prefixes: tuple[str, ...], *below: str) -> tuple[str, ...]:
    return tuple(join_key(channel, RUNS_FOLDER, "*", *below) for channel in channel_prefixes or ("",))


def run_plan_grants(channel_prefixes: tuple[str, ...]) -> ObjectGrants:
    """The fan-out's plan step lists the channel and reads each subdir's state, or the repodata.json another
    tool left where there is none (never a package), writes its run's manifest and deletes the folders of
    runs that expired without committing."""
    channels = channel_prefixes or ("",)
    return ObjectGrants(
        read=tuple(
            join_key(channel, "*", name) for channel in channels for name in (STATE_FILE, REPODATA_JSON)
        ),
        write=run_manifest_patterns(channel_prefixes),
        delete=_runs(channel_prefixes),
    )


def run_read_grants(channel_prefixes: tuple[str, ...]) -> ObjectGrants:
    """The fan-out's read step reads the channel (packages, and its batch's earlier partial result) and
    writes its batch's result object only."""
    channels = channel_prefixes or ("",)
    return ObjectGrants(
        read=tuple(join_key(channel, "*") for channel in channels),
        write=_runs(channel_prefixes, RUN_RESULTS_FOLDER, "*"),
        delete=(),
    )


def run_commit_grants(channel_prefixes: tuple[str, ...]) -> ObjectGrants:
    """The fan-out's commit step publishes as a full reindex does and deletes its run's objects. It edits no
    patch instructions: yank, unyank and patch go to the full-reindex function (the steps refuse them)."""
    grants = full_reindex_grants(channel_prefixes)
    edits = {join_key(channel, "*", PATCH_INSTRUCTIONS) for channel in channel_prefixes or ("",)}
    return replace(
        grants,
        write=tuple(pattern for pattern in grants.write if pattern not in edits),
        delete=(*grants.delete, *_runs(channel_prefixes)),
    )


def operator_grants(channel_prefixes: tuple[str, ...]) -> ObjectGrants:
    """Operators read the channel (its packages, index and state: what `reindexer yank` checks and `patch
    --dry-run` compares), edit each subdir's patch instructions (the indexer republishes on their
    notification) and use the bucket-level probe of conditional requests as the indexer does."""
    channels = channel_prefixes or ("",)
    patches = tuple(join_key(channel, "*", PATCH_INSTRUCTIONS) for channel in channels)
    # An edit is a conditional write: like the indexer, the operator's client learns what the bucket honours
    # of conditional requests from the cached answer, or probes it.
    probes = f"{PROBE_KEY_PREFIX}*"
    return ObjectGrants(
        read=(*(join_key(channel, "*") for channel in channels), STORE_CONDITIONS_KEY, probes),
        write=(*patches, STORE_CONDITIONS_KEY, probes),
        delete=(*patches, probes),
    )


def private_state_patterns(channel_prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The indexer's private folders, never readable anonymously even in a public channel: each subdir's,
    each channel's (the channel files' lease and state) and the bucket's."""
    channels = channel_prefixes or ("",)
    patterns = (
        *(join_key(channel, "*", STATE_FOLDER, "*") for channel in channels),
        *(join_key(channel, STATE_FOLDER, "*") for channel in channels),
        f"{BUCKET_STATE_FOLDER}/*",
    )
    return tuple(dict.fromkeys(patterns))  # a root channel's folder is the bucket's


def notification_filters(channel_prefixes: tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    """(key prefix or None, suffix) of each S3 notification rule: created and removed packages and patch
    instructions only, so the indexer's own writes never notify it."""
    return tuple(
        (f"{channel}/" if channel else None, suffix)
        for channel in channel_prefixes or ("",)
        for suffix in (*PACKAGE_SUFFIXES, f"/{PATCH_INSTRUCTIONS}")
    )
