"""The real indexer, full and event path, on a bucket refusing what the synthesized roles do not allow.

The object key patterns of both functions' roles are read from the synthesized template (never from
reindexer.contract, which infra derives them from): a key the indexer reads, writes or deletes that the stack
does not grant, after a rename on one side only, fails here with the 403 it would get on AWS. Each pattern
dropped in turn must be noticed too, so the guard is known to bite and every grant is known to be used: the
scenario covers package events, patch instructions (written by an operator, and the console's yank and
unyank), and the nightly full run that deletes superseded shards.

The operator policy is read the same way, and `reindexer yank` / `unyank` / `patch` run under it: the edit
lands, the republication is refused (403), and the event function republishes on the notification.

The bucket is reindexer.storage.memory.MemoryStore with a request hook: it probes the store's conditional
requests as S3Store does, so the probe keys and the cached answer are checked along with the index.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import pytest

from devtools.sample_channel import build_packages, plan_channel
from reindexer.contract import (
    FULL_REINDEX_HANDLER,
    LEASE_FILE,
    PATCH_INSTRUCTIONS,
    PROBE_KEY_PREFIX,
    PUBLISHED_FILES,
    REPODATA_FROM_PACKAGES,
    REPODATA_JSON,
    SECONDS_PER_DAY,
    SHARD_RETENTION_VARIABLE,
    SHARDS_FOLDER,
    STATE_FILE,
    STORE_CONDITIONS_KEY,
    UNPATCHED_FILES,
    join_key,
)
from reindexer.contract import PACKAGE_EVENTS_HANDLER as EVENTS_HANDLER
from reindexer.indexer import IndexOptions, index_channel
from reindexer.lease import LeaseTerms
from reindexer.operations import Edit, install_patch, preview_patch, unyank, yank
from reindexer.patches import PatchInstructions
from reindexer.publication import listed_shards, load_state
from reindexer.reports import ChannelReport, SubdirReport
from reindexer.storage.memory import MemoryStore
from reindexer.store import FatalStoreError
from reindexer.store_conditions import ConditionalRequests
from reindexer.subdir_ref import SubdirRef
from reindexer.updater import update_subdir
from tests.infra.test_conda_channel import function, managed_policy, resources, role_statements, statements
from tests.support.clock import FakeClock

# Template modes of tests/infra/test_conda_channel.py and the channels each stack serves.
CHANNELS = {"private": ("",), "public": ("dev", "prod")}  # private: one channel at the bucket root
MODES = list(CHANNELS)
HANDLERS = (FULL_REINDEX_HANDLER, EVENTS_HANDLER)
OPERATOR = "the operator policy"
# How tests/infra/test_conda_channel.py finds the operator policy among the stack's managed policies.
OPERATOR_POLICY = "Start a full reindex"
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
LIST_BUCKET = "s3:ListBucket"
# The IAM action that authorizes each request MemoryStore counts (S3 authorizes HEAD as s3:GetObject).
REQUEST_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "ListObjectsV2": LIST_BUCKET,
}
PACKAGE_TYPE = "application/octet-stream"
# One channel at the bucket root ('*' grants cover the bucket-level keys too) and two channel prefixes
# (they do not): this file found that the probe's HEAD of .reindexer/probe-* was not granted with prefixes.
MODES_AS_SYNTHESIZED = ["private", "public"]
# The subdir the patch instructions, yanks and shard clean-up are checked in.
PATCHED = "linux-64"


# --- the roles' grants, read from the template ------------------------------------------------------------


@cache
def _glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: '*' any characters ('/' included), '?' exactly one; everything else literal."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def iam_matches(pattern: str, value: str) -> bool:
    return _glob(pattern).fullmatch(value) is not None


def _action_granted(action_patterns: list[str], action: str) -> bool:
    """Action names are case-insensitive in IAM and may hold wildcards (s3:Get*, s3:*)."""
    return any(_glob(p, ignore_case=True).fullmatch(action) for p in action_patterns)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class RoleGrants:
    """What one identity may do in the channel bucket: key globs per object action, and the prefixes it may
    list (('*',) for any listing, () for none)."""

    role: str
    objects: Mapping[str, tuple[str, ...]]
    listing: tuple[str, ...]

    def allows(self, action: str, key: str) -> bool:
        if action == LIST_BUCKET:  # `key` is the listing's prefix, as S3's s3:prefix condition key sees it
            return any(iam_matches(pattern, key) for pattern in self.listing)
        return any(iam_matches(pattern, key) for pattern in self.objects.get(action, ()))

    def without(self, action: str, pattern: str) -> RoleGrants:
        narrowed = tuple(p for p in self.objects[action] if p != pattern)
        return RoleGrants(self.role, {**self.objects, action: narrowed}, self.listing)


def _key_glob(resource: Any, bucket_arn: dict[str, Any]) -> str | None:
    """The object key pattern of a CloudFormation ARN value: what follows `<bucket ARN>/`; None for the bucket
    ARN itself (which grants no object action)."""
    if resource == "*":
        return "*"
    if resource == bucket_arn:
        return None
    join = resource.get("Fn::Join") if isinstance(resource, dict) else None
    if join is not None and join[0] == "" and join[1][0] == bucket_arn:
        rest = join[1][1:]
        if all(isinstance(part, str) for part in rest) and "".join(rest).startswith("/"):
            return "".join(rest)[1:]
    raise AssertionError(f"{resource!r} is no object ARN of the channel bucket this test can resolve")


def _listing_prefixes(statement: dict[str, Any], granted: list[str]) -> tuple[str, ...]:
    """The s3:prefix globs a ListBucket statement allows: ('*',) without a condition. The only condition
    modelled is StringLike on s3:prefix, and only on a statement granting nothing but the listing."""
    condition = statement.get("Condition")
    if condition is None:
        return ("*",)
    assert granted == [LIST_BUCKET] and set(condition) == {"StringLike"}, statement
    assert set(condition["StringLike"]) == {"s3:prefix"}, statement
    return tuple(_as_list(condition["StringLike"]["s3:prefix"]))


def grants_of(name: str, granted_statements: list[dict[str, Any]], mode: str) -> RoleGrants:
    """The S3 grants of these policy statements on the mode's channel bucket."""
    (bucket,) = resources(mode, "AWS::S3::Bucket")
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    objects: dict[str, list[str]] = {action: [] for action in OBJECT_ACTIONS}
    listing: list[str] = []
    for statement in granted_statements:
        actions = [str(a) for a in _as_list(statement.get("Action", []))]
        granted = [a for a in (*OBJECT_ACTIONS, LIST_BUCKET) if _action_granted(actions, a)]
        if not granted:
            continue  # logs, X-Ray, SQS, Lambda
        # Deny, other conditions and Not* would need more than globs; fail loudly rather than approximate.
        assert statement["Effect"] == "Allow" and set(statement) <= {
            "Sid",
            "Effect",
            "Action",
            "Resource",
            "Condition",
        }, f"the guard models Allow statements only: {statement}"
        prefixes = _listing_prefixes(statement, granted)
        for resource in _as_list(statement["Resource"]):
            for action in granted:
                if action == LIST_BUCKET:
                    if resource in (bucket_arn, "*"):
                        listing += prefixes
                elif (pattern := _key_glob(resource, bucket_arn)) is not None:
                    objects[action].append(pattern)
    return RoleGrants(
        name, {a: tuple(dict.fromkeys(p)) for a, p in objects.items()}, tuple(dict.fromkeys(listing))
    )


@cache
def role_grants(mode: str, handler: str) -> RoleGrants:
    """The S3 grants of the role of the function running `handler`, from the AWS::IAM::Policy resources
    attached to it in the synthesized template."""
    return grants_of(handler, role_statements(mode, handler), mode)


@cache
def operator_grants(mode: str) -> RoleGrants:
    """The S3 grants of the operator policy (the managed policy operators attach to themselves)."""
    return grants_of(OPERATOR, statements(managed_policy(mode, OPERATOR_POLICY)), mode)


@cache
def shard_retention(mode: str) -> float:
    """The full-reindex function's shard retention in seconds, from its synthesized environment (the
    handler sets IndexOptions.shard_retention from it)."""
    variables = function(mode, FULL_REINDEX_HANDLER)["Properties"]["Environment"]["Variables"]
    return int(variables[SHARD_RETENTION_VARIABLE]) * SECONDS_PER_DAY


# --- a bucket that enforces them ---------------------------------------------------------------------------


@dataclass
class RoleGuard:
    """A request hook on MemoryStores: while a function runs (`acting_as`), each request its role does not
    allow is refused with the error S3Store raises on a 403. Requests outside are the publisher's (package
    uploads and deletions) and go through unchecked."""

    grants: RoleGrants | None = None
    allowed: list[tuple[str, str, str]] = field(default_factory=list)  # (role, action, key)
    denied: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, store: MemoryStore) -> MemoryStore:
        store.on("*", "*", partial(self._check, store))
        return store

    @contextmanager
    def acting_as(self, grants: RoleGrants) -> Iterator[None]:
        self.grants = grants
        try:
            yield
        finally:
            self.grants = None

    def checked(self) -> Counter[str]:
        with self._lock:
            return Counter(action for _, action, _ in (*self.allowed, *self.denied))

    def _check(self, store: MemoryStore, operation: str, key: str) -> None:
        grants = self.grants
        if grants is None:
            return
        action = REQUEST_ACTIONS.get(operation, f"s3:{operation}")
        allowed = operation in REQUEST_ACTIONS and grants.allows(action, key)
        with self._lock:
            (self.allowed if allowed else self.denied).append((grants.role, action, key))
        if not allowed:
            raise FatalStoreError(
                f"access denied to {store.describe(key)}: the role of {grants.role} allows no {action} "
                f"on {key!r} (403)"
            )


# --- the functions' work, driven through the real indexer ------------------------------------------------


@dataclass(frozen=True)
class Package:
    subdir: str
    name: str
    data: bytes


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Package]]:
    """Three real packages (rattler-build's, both formats) in each of noarch, linux-64 and osx-arm64; the
    three of a subdir are builds of one package name, so a new one replaces the subdir's only shard."""
    folder = tmp_path_factory.mktemp("role-channel")
    paths = build_packages(plan_channel(9, subdirs=("noarch", "linux-64", "osx-arm64")), folder)
    by_subdir: dict[str, list[Package]] = {}
    for path in paths:
        by_subdir.setdefault(path.parent.name, []).append(
            Package(path.parent.name, path.name, path.read_bytes())
        )
    return by_subdir


def publish(store: MemoryStore, channel: str, *packages: Package) -> None:
    for package in packages:
        store.write(join_key(channel, package.subdir, package.name), package.data, content_type=PACKAGE_TYPE)


def index_options(clock: FakeClock, retention: float | None = None, *, jobs: int = 2) -> IndexOptions:
    """The event function's options; with `retention`, the full-reindex function's (it cleans shards). No
    waiting for a lease left behind (only a narrowed role leaves one): a busy subdir is reported at once."""
    return IndexOptions(jobs=jobs, lease=LeaseTerms(wait=0.0), clock=clock, shard_retention=retention)


def write_instructions(store: MemoryStore, channel: str, instructions: dict[str, Any]) -> None:
    """An operator's patch_instructions.json, written by other means (outside the guard, as uploads are)."""
    key = join_key(channel, PATCHED, PATCH_INSTRUCTIONS)
    store.write(key, json.dumps(instructions).encode(), content_type="application/json")


Report = ChannelReport | SubdirReport


@dataclass
class Run:
    """Everything the functions did in one scenario."""

    guard: RoleGuard
    clock: FakeClock = field(default_factory=FakeClock)
    stores: list[MemoryStore] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # FatalStoreErrors the runs raised
    # (channel, moment) -> the file names in PATCHED's repodata.json and repodata_from_packages.json (None
    # when there is none), as the scenario saw them.
    seen: dict[tuple[str, str], tuple[set[str] | None, set[str] | None]] = field(default_factory=dict)
    # channel -> the reports of the nightly full runs, before and after the shard retention has passed.
    nightly: dict[str, list[ChannelReport]] = field(default_factory=dict)

    def call(self, function: Callable[[], Report]) -> Report | None:
        try:
            report = function()
        except FatalStoreError as error:
            self.failures.append(str(error))
            return None
        self.reports.append(report)
        return report

    def operate(self, function: Callable[[], Edit]) -> None:
        """A console operation on the full-reindex function, whose role may republish: a refused
        republication is a failure here."""
        try:
            edit = function()
        except FatalStoreError as error:
            self.failures.append(str(error))
            return
        if edit.publish_refused is not None:
            self.failures.append(edit.publish_refused)
        if edit.report is not None:
            self.reports.append(edit.report)

    def see(self, store: MemoryStore, channel: str, moment: str) -> None:
        self.seen[channel, moment] = (
            repodata_names(store, channel, PATCHED),
            repodata_names(store, channel, PATCHED, REPODATA_FROM_PACKAGES),
        )

    def errors(self) -> list[str]:
        found = [*self.failures]
        for report in self.reports:
            subdirs = list(report.subdirs.values()) if isinstance(report, ChannelReport) else [report]
            found += [f"{r.subdir}: {r.error}" for r in subdirs if r.error is not None]
            found += [f"{r.subdir}: {f.file}: {f.reason}" for r in subdirs for f in (*r.rejected, *r.failed)]
            found += [f"{r.subdir}: {problem}" for r in subdirs for problem in r.patch_problems]
            if isinstance(report, ChannelReport):
                found += [f"{f.file}: {f.reason}" for f in report.rejected]
        return found


def run_functions(
    channels: tuple[str, ...],
    grants: Mapping[str, RoleGrants],
    packages: dict[str, list[Package]],
    retention: float,
    *,
    jobs: int = 2,
) -> Run:
    """What both functions do to a channel bucket, each under its own role, on one FakeClock:

    1. the full reindex of a new bucket holding noarch and linux-64 packages (it probes the store first);
    2. package events in a later cold start (it reads the cached probe answer): a package added to linux-64
       (a new build of the name: the subdir's shard is superseded), one removed from noarch, and the first
       packages of a new subdir, osx-arm64;
    3. linux-64 patch instructions an operator writes (removing a package), then deletes, each followed by
       its event: the event path writes the unpatched repodata beside the patched one, then deletes it;
    4. the console's yank and unyank on the full-reindex function: it edits the instructions and
       republishes (the unpatched repodata written, then deleted); more shards superseded;
    5. the nightly full run, which deletes nothing before the shard retention has passed, and the
       superseded shards once it has;
    6. the first package event of a new bucket: the event function probes and publishes noarch first.

    `jobs` parallel reads and shard writes; 1 sends the same requests one after another (cheaper to repeat).
    """
    noarch, linux, osx = packages["noarch"], packages["linux-64"], packages["osx-arm64"]
    run = Run(RoleGuard())
    clock = run.clock
    options = partial(index_options, jobs=jobs)
    store = run.guard.watch(MemoryStore("channel-bucket"))
    run.stores.append(store)
    for channel in channels:
        publish(store, channel, *noarch, *linux[:2])
    with run.guard.acting_as(grants[FULL_REINDEX_HANDLER]):
        for channel in channels:
            run.call(partial(index_channel, store, channel, options(clock, retention)))

    store.conditional = ConditionalRequests(store)  # a cold start: the probe's answer is read, not learnt
    for channel in channels:
        clock.advance(3600)
        publish(store, channel, linux[2])
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, store, channel, "linux-64", [linux[2].name], options(clock)))
        store.delete(join_key(channel, "noarch", noarch[0].name))
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, store, channel, "noarch", [noarch[0].name], options(clock)))
        publish(store, channel, *osx)
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(
                partial(update_subdir, store, channel, "osx-arm64", [p.name for p in osx], options(clock))
            )

    for channel in channels:
        event = partial(update_subdir, store, channel, PATCHED, [PATCH_INSTRUCTIONS], options(clock))
        clock.advance(3600)
        write_instructions(store, channel, {"patch_instructions_version": 1, "remove": [linux[0].name]})
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(event)
        run.see(store, channel, "operator's instructions")
        clock.advance(3600)
        store.delete(join_key(channel, PATCHED, PATCH_INSTRUCTIONS))
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(event)
        run.see(store, channel, "instructions deleted")

    for channel in channels:
        subdir = SubdirRef(store, channel, PATCHED)
        clock.advance(3600)
        with run.guard.acting_as(grants[FULL_REINDEX_HANDLER]):
            run.operate(partial(yank, subdir, [linux[1].name], "segfaults", options(clock, retention)))
        run.see(store, channel, "yanked")
        clock.advance(3600)
        with run.guard.acting_as(grants[FULL_REINDEX_HANDLER]):
            run.operate(partial(unyank, subdir, [linux[1].name], options(clock, retention)))
        run.see(store, channel, "unyanked")

    for elapsed in (3600, retention):
        clock.advance(elapsed)
        with run.guard.acting_as(grants[FULL_REINDEX_HANDLER]):
            for channel in channels:
                report = run.call(partial(index_channel, store, channel, options(clock, retention)))
                if isinstance(report, ChannelReport):
                    run.nightly.setdefault(channel, []).append(report)

    fresh = run.guard.watch(MemoryStore("new-channel-bucket"))
    run.stores.append(fresh)
    for channel in channels:
        publish(fresh, channel, linux[0])
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, fresh, channel, "linux-64", [linux[0].name], options(clock)))
    return run


@cache
def stack_grants(mode: str) -> dict[str, RoleGrants]:
    return {handler: role_grants(mode, handler) for handler in HANDLERS}


def run_stack(
    mode: str, grants: Mapping[str, RoleGrants], packages: dict[str, list[Package]], *, jobs: int = 2
) -> Run:
    return run_functions(CHANNELS[mode], grants, packages, shard_retention(mode), jobs=jobs)


@pytest.fixture(scope="module")
def granted_run(packages: dict[str, list[Package]]) -> Callable[[str], Run]:
    """The scenario under each mode's roles as synthesized, run once per mode."""
    return cache(lambda mode: run_stack(mode, stack_grants(mode), packages))


def repodata_names(
    store: MemoryStore, channel: str, subdir: str, name: str = REPODATA_JSON
) -> set[str] | None:
    """The file names a repodata document lists; None when there is no such document."""
    key = join_key(channel, subdir, name)
    if store.head(key) is None:
        return None
    document = json.loads(store.read(key)[0])
    return {*document.get("packages", {}), *document.get("packages.conda", {})}


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_roles_grant_the_bucket_listing_and_object_patterns(mode):
    for handler in HANDLERS:
        grants = role_grants(mode, handler)
        assert grants.listing == ("*",), handler
        assert all(grants.objects[action] for action in OBJECT_ACTIONS), grants


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_indexer_full_and_event_paths_need_nothing_the_synthesized_roles_do_not_grant(
    mode, granted_run, packages
):
    run = granted_run(mode)

    assert run.guard.denied == []
    assert run.errors() == []
    store, fresh = run.stores
    noarch, linux, osx = packages["noarch"], packages["linux-64"], packages["osx-arm64"]
    for channel in CHANNELS[mode]:
        assert repodata_names(store, channel, "linux-64") == {p.name for p in linux}
        assert repodata_names(store, channel, "noarch") == {p.name for p in noarch[1:]}
        assert repodata_names(store, channel, "osx-arm64") == {p.name for p in osx}
        assert repodata_names(fresh, channel, "linux-64") == {linux[0].name}
        assert repodata_names(fresh, channel, "noarch") == set()
    # Both functions were checked, on every kind of request, the store probe included.
    checked = run.guard.checked()
    assert checked["s3:PutObject"] >= 20 and checked["s3:DeleteObject"] >= 5, checked
    assert checked["s3:GetObject"] > 0 and checked[LIST_BUCKET] > 0, checked
    done = {(role, action, key) for role, action, key in run.guard.allowed}
    for role in HANDLERS:
        puts = {key for r, action, key in done if r == role and action == "s3:PutObject"}
        deletes = {key for r, action, key in done if r == role and action == "s3:DeleteObject"}
        assert STORE_CONDITIONS_KEY in puts, role
        assert any(key.startswith(PROBE_KEY_PREFIX) for key in puts), role
        assert any(key.startswith(PROBE_KEY_PREFIX) for key in deletes), role
        for channel in CHANNELS[mode]:
            folder = join_key(channel, "linux-64")
            assert {join_key(folder, name) for name in (*PUBLISHED_FILES, STATE_FILE, LEASE_FILE)} <= puts
            assert any(key.startswith(join_key(folder, SHARDS_FOLDER) + "/") for key in puts), role
            assert join_key(folder, LEASE_FILE) in deletes, role
            # The unpatched repodata: written by both paths while instructions were in force, deleted by
            # both when they went.
            assert {join_key(folder, name) for name in UNPATCHED_FILES} <= puts & deletes, role


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_patch_instructions_are_published_by_the_event_path_and_the_console_within_the_roles(
    mode, granted_run, packages
):
    run = granted_run(mode)
    linux = {p.name for p in packages["linux-64"]}
    first, second = (p.name for p in packages["linux-64"][:2])
    store = run.stores[0]
    for channel in CHANNELS[mode]:
        # (repodata.json, repodata_from_packages.json) at each moment of the scenario
        assert run.seen[channel, "operator's instructions"] == (linux - {first}, linux)
        assert run.seen[channel, "instructions deleted"] == (linux, None)
        assert run.seen[channel, "yanked"] == (linux - {second}, linux)
        assert run.seen[channel, "unyanked"] == (linux, None)
        # The console's edits are in the file the full-reindex role wrote: yanked, then unyanked.
        key = join_key(channel, PATCHED, PATCH_INSTRUCTIONS)
        assert (FULL_REINDEX_HANDLER, "s3:PutObject", key) in run.guard.allowed
        assert PatchInstructions.parse(store.read(key)[0]).is_empty()


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_the_nightly_full_run_deletes_the_superseded_shards_once_their_retention_has_passed(
    mode, granted_run
):
    run = granted_run(mode)
    store = run.stores[0]
    # Only the full-reindex role deletes shards, and only in its nightly run past the retention.
    shard_deletes = [
        (role, key)
        for role, action, key in run.guard.allowed
        if action == "s3:DeleteObject" and f"/{SHARDS_FOLDER}/" in key
    ]
    assert {role for role, _ in shard_deletes} == {FULL_REINDEX_HANDLER}
    for channel in CHANNELS[mode]:
        early, late = run.nightly[channel]
        assert sum(r.shards_deleted for r in early.subdirs.values()) == 0, early.to_dict()
        # linux-64 had four indexes before the last (a new build, the patched view and back, yanked and
        # back): three superseded shards; noarch one (a build deleted).
        assert late.subdirs[PATCHED].shards_deleted == 3, late.to_dict()
        assert late.subdirs["noarch"].shards_deleted == 1, late.to_dict()
        folder = join_key(channel, PATCHED, SHARDS_FOLDER) + "/"
        assert len({key for _, key in shard_deletes if key.startswith(folder)}) == 3
        # What is left under shards/ is what the index names, and nothing waits for its retention.
        for subdir in ("noarch", PATCHED, "osx-arm64"):
            ref = SubdirRef(store, channel, subdir)
            state, _ = load_state(ref)
            assert state is not None
            assert listed_shards(ref) == set(state.shards.values()), subdir
            assert state.orphans == {}, subdir


def unused_patterns(grants: RoleGrants, run_allowed: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(action, pattern) of these grants that no request of the scenario needed."""
    requests = [(action, key) for role, action, key in run_allowed if role == grants.role]
    return [
        (action, pattern)
        for action, patterns in grants.objects.items()
        for pattern in patterns
        if not any(a == action and iam_matches(pattern, key) for a, key in requests)
    ]


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_every_granted_pattern_is_used_by_the_indexer(mode, granted_run):
    # So that dropping any one of them below is a real test, and a grant nothing uses is noticed.
    run = granted_run(mode)
    for handler, grants in stack_grants(mode).items():
        assert unused_patterns(grants, run.guard.allowed) == [], handler


def check_each_pattern_is_needed(
    grants: Mapping[str, RoleGrants],
    allowed: list[tuple[str, str, str]],
    denied_without: Callable[[str, RoleGrants], list[tuple[str, str, str]]],
) -> None:
    """Drop each granted pattern in turn: the scenario run again with that role narrowed
    (`denied_without(role, narrowed)` → the requests refused) must be refused, and only that role's action
    on that pattern's keys. Only a read may be covered by another grant (then nothing can be refused)."""
    dropped, covered = 0, []
    for role, own in grants.items():
        requests = [(action, key) for r, action, key in allowed if r == role]
        for action, patterns in own.objects.items():
            for pattern in patterns:
                narrowed = own.without(action, pattern)
                # Keys only this pattern allowed; none means another pattern covers it (e.g. '*' reads at
                # the bucket root cover the probe's cached answer), so nothing can be refused.
                needed = {key for a, key in requests if a == action and not narrowed.allows(a, key)}
                if not needed:
                    covered.append((role, action, pattern))
                    continue
                denied = denied_without(role, narrowed)
                what = f"{role} without {action} {pattern!r}"
                assert denied, what
                assert all((r, a) == (role, action) and iam_matches(pattern, key) for r, a, key in denied), (
                    what,
                    denied,
                )
                dropped += 1
    assert dropped > 0
    # Only a read may be covered by another grant; every write and delete pattern is needed on its own.
    assert all(action == "s3:GetObject" for _, action, _ in covered), covered


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_dropping_any_granted_pattern_gets_the_indexer_refused_on_its_keys(mode, granted_run, packages):
    grants = stack_grants(mode)

    def denied_without(handler: str, narrowed: RoleGrants) -> list[tuple[str, str, str]]:
        return run_stack(mode, {**grants, handler: narrowed}, packages, jobs=1).guard.denied

    check_each_pattern_is_needed(grants, granted_run(mode).guard.allowed, denied_without)


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
@pytest.mark.parametrize("handler", HANDLERS)
def test_a_role_without_its_repodata_pattern_fails_the_indexer_naming_key_and_action(mode, handler, packages):
    grants = stack_grants(mode)
    channel = CHANNELS[mode][0]
    narrowed = grants[handler].without("s3:PutObject", join_key(channel, "*", REPODATA_JSON))

    run = run_functions(CHANNELS[mode][:1], {**grants, handler: narrowed}, packages, shard_retention(mode))

    assert run.failures, run.reports
    for failure in run.failures:
        assert re.search(rf"access denied to \S+/{re.escape(REPODATA_JSON)}: .* s3:PutObject", failure), (
            failure
        )
    assert {(role, action) for role, action, _ in run.guard.denied} == {(handler, "s3:PutObject")}
    assert all(key.endswith(f"/{REPODATA_JSON}") for _, _, key in run.guard.denied)


# --- operators ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["private", "public"])
def test_operator_commands_under_the_operator_policy_edit_and_leave_republishing_to_the_event_function(
    mode, packages
):
    """`reindexer yank`, `unyank` and `patch` with the operator policy's credentials, each a new process (the
    bucket's conditional requests are not known yet): the edit lands, republishing is refused at the lease
    (403) and reported as Edit.publish_refused, and nothing else is refused. The event function republishes
    on the instructions' notification; an operator deleting the file (aws s3 rm) is republished the same
    way. Without the policy's patch-instruction write, the edit itself is refused."""
    grants, operator = stack_grants(mode), operator_grants(mode)
    linux = packages["linux-64"]
    names = {p.name for p in linux}
    clock = FakeClock()
    guard = RoleGuard()
    store = guard.watch(MemoryStore("operated-bucket"))
    channels = CHANNELS[mode]
    for channel in channels:
        publish(store, channel, *linux)
    with guard.acting_as(grants[FULL_REINDEX_HANDLER]):
        for channel in channels:
            assert index_channel(store, channel, index_options(clock, shard_retention(mode))).ok

    def command(channel: str, operation: Callable[[SubdirRef], Edit]) -> Edit:
        store.conditional = ConditionalRequests(store)  # a new process
        # The cached answer of the probe is gone (or older than a week): the operator's client probes.
        store.objects.pop(STORE_CONDITIONS_KEY, None)
        with guard.acting_as(operator):
            edit = operation(SubdirRef(store, channel, PATCHED))
        assert edit.report is None and edit.publish_refused is not None
        assert re.search(
            r"access denied to \S+/\.reindexer/lease\.json: .* s3:PutObject .*\(403\)", edit.publish_refused
        )
        notified(channel)
        return edit

    def notified(channel: str) -> None:
        with guard.acting_as(grants[EVENTS_HANDLER]):
            report = update_subdir(store, channel, PATCHED, [PATCH_INSTRUCTIONS], index_options(clock))
        assert report.error is None and report.written, report.to_dict()

    instructions = PatchInstructions.parse(json.dumps({"remove": [linux[2].name]}).encode())
    for channel in channels:
        edit = command(
            channel, lambda subdir: yank(subdir, [linux[0].name], "segfaults", index_options(clock))
        )
        assert edit.after.remove == {linux[0].name}
        assert repodata_names(store, channel, PATCHED) == names - {linux[0].name}
        assert repodata_names(store, channel, PATCHED, REPODATA_FROM_PACKAGES) == names

        edit = command(channel, lambda subdir: unyank(subdir, [linux[0].name], index_options(clock)))
        assert edit.after.is_empty()
        assert repodata_names(store, channel, PATCHED) == names

        def patch(subdir: SubdirRef) -> Edit:
            assert preview_patch(subdir, instructions)  # `reindexer patch` checks the file first
            return install_patch(subdir, instructions, index_options(clock))

        edit = command(channel, patch)
        assert edit.after == instructions
        assert repodata_names(store, channel, PATCHED) == names - {linux[2].name}

        with guard.acting_as(operator):  # aws s3 rm of the instructions
            store.delete(join_key(channel, PATCHED, PATCH_INSTRUCTIONS))
        notified(channel)
        assert repodata_names(store, channel, PATCHED) == names
        assert repodata_names(store, channel, PATCHED, REPODATA_FROM_PACKAGES) is None

    # Only the republications were refused, each at its first request (the lease).
    leases = {join_key(channel, PATCHED, LEASE_FILE) for channel in channels}
    assert {(role, action) for role, action, _ in guard.denied} == {(OPERATOR, "s3:PutObject")}
    assert {key for _, _, key in guard.denied} == leases and len(guard.denied) == 3 * len(channels)
    # The commands used every object pattern of the policy.
    assert unused_patterns(operator, guard.allowed) == []

    # Without the policy's write of a channel's patch instructions, the edit is refused and nothing changes.
    channel = channels[0]
    key = join_key(channel, PATCHED, PATCH_INSTRUCTIONS)
    narrowed = operator.without("s3:PutObject", join_key(channel, "*", PATCH_INSTRUCTIONS))
    guard.denied.clear()
    store.conditional = ConditionalRequests(store)
    with (
        guard.acting_as(narrowed),
        pytest.raises(FatalStoreError, match=r"access denied .*patch_instructions"),
    ):
        yank(SubdirRef(store, channel, PATCHED), [linux[0].name], None, index_options(clock))
    assert guard.denied == [(OPERATOR, "s3:PutObject", key)]
    assert store.head(key) is None


@pytest.mark.parametrize("mode", MODES)
def test_the_operator_policy_lists_only_within_the_channels(mode):
    listing = operator_grants(mode).listing
    assert listing == tuple(f"{channel}/*" if channel else "*" for channel in CHANNELS[mode])
    for channel in CHANNELS[mode]:
        assert operator_grants(mode).allows(LIST_BUCKET, join_key(channel, PATCHED) + "/")
    if mode == "public":
        assert not operator_grants(mode).allows(LIST_BUCKET, "")


def test_the_guard_matches_keys_as_iam_does():
    assert iam_matches("dev/*/repodata.json", "dev/linux-64/repodata.json")
    assert iam_matches("dev/*/shards/*", "dev/linux-64/shards/ab.msgpack.zst")
    assert iam_matches("*", "noarch/.reindexer/lease.json")  # '*' crosses '/'
    assert iam_matches("a?c", "abc") and not iam_matches("a?c", "ac")
    assert not iam_matches("dev/*/repodata.json", "dev/linux-64/repodata.json.zst")
    assert not iam_matches("*/.reindexer/*", ".reindexer/probe-1")
    assert not iam_matches("dev/*", "devel/noarch/repodata.json")
    assert not iam_matches("dev/[a]*", "dev/a")  # no character classes in IAM
