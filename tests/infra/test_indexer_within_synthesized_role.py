"""The real indexer, full and event path, on a bucket refusing what the synthesized roles do not allow.

The object key patterns of both functions' roles are read from the synthesized template (never from
reindexer.contract, which infra derives them from): a key the indexer reads, writes or deletes that the stack
does not grant, after a rename on one side only, fails here with the 403 it would get on AWS. Each pattern
dropped in turn must be noticed too, so the guard is known to bite and every grant is known to be used (but
the few listed in AWAITING, granted ahead of the code that will use them).

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
    REPODATA_JSON,
    SHARDS_FOLDER,
    STATE_FILE,
    STORE_CONDITIONS_KEY,
    UNPATCHED_FILES,
    join_key,
)
from reindexer.contract import PACKAGE_EVENTS_HANDLER as EVENTS_HANDLER
from reindexer.indexer import IndexOptions, index_channel
from reindexer.lease import LeaseTerms
from reindexer.reports import ChannelReport, SubdirReport
from reindexer.storage.memory import MemoryStore
from reindexer.store import FatalStoreError
from reindexer.store_conditions import ConditionalRequests
from reindexer.updater import update_subdir
from tests.infra.test_conda_channel import resources, role_statements

# Template modes of tests/infra/test_conda_channel.py and the channels each stack serves.
CHANNELS = {"private": ("",), "public": ("dev", "prod")}  # private: one channel at the bucket root
MODES = list(CHANNELS)
HANDLERS = (FULL_REINDEX_HANDLER, EVENTS_HANDLER)
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

# Grants of issue 11 ("operating a channel") that the contract gives ahead of the indexer code using them,
# which other engineers are building in lambdas/ in the same issue, and which the scenario below does not
# exercise yet: (handler, action, key name a pattern ends with) -> what will use it. Only these are exempt
# from "every granted pattern is used" and "needed on its own", and only while unused: as soon as the
# scenario uses one, test_grants_awaiting_their_use_are_still_unused fails until its entry is removed here.
AWAITING: dict[tuple[str, str, str], str] = {
    # Full runs delete shards nothing has referenced for SHARD_RETENTION_DAYS: the shard clean-up.
    (FULL_REINDEX_HANDLER, "s3:DeleteObject", f"/{SHARDS_FOLDER}/*"): "the shard clean-up of full runs",
    # With patch instructions, the unpatched repodata is written beside the patched view and deleted with
    # the instructions; the scenario has none yet.
    **{
        (handler, action, f"/{name}"): "a subdir with patch instructions"
        for handler in HANDLERS
        for action in ("s3:PutObject", "s3:DeleteObject")
        for name in UNPATCHED_FILES
    },
    # An operator's yank / unyank / patch request to the full-reindex function edits the instructions.
    (FULL_REINDEX_HANDLER, "s3:PutObject", f"/{PATCH_INSTRUCTIONS}"): "an operator's request to the full "
    "reindex",
}


def awaiting(handler: str, action: str, pattern: str) -> str | None:
    """What will use this granted pattern, when AWAITING lists it (see there)."""
    for (awaited_handler, awaited_action, name), user in AWAITING.items():
        if (awaited_handler, awaited_action) == (handler, action) and ("/" + pattern).endswith(name):
            return user
    return None


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
    """What one function's role may do in the channel bucket: key globs per object action, and listing."""

    role: str
    objects: Mapping[str, tuple[str, ...]]
    list_bucket: bool

    def allows(self, action: str, key: str) -> bool:
        if action == LIST_BUCKET:
            return self.list_bucket
        return any(iam_matches(pattern, key) for pattern in self.objects.get(action, ()))

    def without(self, action: str, pattern: str) -> RoleGrants:
        narrowed = tuple(p for p in self.objects[action] if p != pattern)
        return RoleGrants(self.role, {**self.objects, action: narrowed}, self.list_bucket)


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


@cache
def role_grants(mode: str, handler: str) -> RoleGrants:
    """The S3 grants of the role of the function running `handler`, from the AWS::IAM::Policy resources
    attached to it in the synthesized template."""
    (bucket,) = resources(mode, "AWS::S3::Bucket")
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    objects: dict[str, list[str]] = {action: [] for action in OBJECT_ACTIONS}
    list_bucket = False
    for statement in role_statements(mode, handler):
        actions = [str(a) for a in _as_list(statement.get("Action", []))]
        granted = [a for a in (*OBJECT_ACTIONS, LIST_BUCKET) if _action_granted(actions, a)]
        if not granted:
            continue  # logs, X-Ray, SQS
        # Deny, conditions and Not* would need more than globs; fail loudly rather than approximate them.
        assert statement["Effect"] == "Allow" and set(statement) <= {"Sid", "Effect", "Action", "Resource"}, (
            f"the guard models unconditional Allow statements only: {statement}"
        )
        for resource in _as_list(statement["Resource"]):
            for action in granted:
                if action == LIST_BUCKET:
                    list_bucket = list_bucket or resource in (bucket_arn, "*")
                elif (pattern := _key_glob(resource, bucket_arn)) is not None:
                    objects[action].append(pattern)
    return RoleGrants(handler, {a: tuple(dict.fromkeys(p)) for a, p in objects.items()}, list_bucket)


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
    """Three real packages (rattler-build's, both formats) in each of noarch, linux-64 and osx-arm64."""
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


def options() -> IndexOptions:
    # No waiting for a lease left behind (only a narrowed role leaves one): a busy subdir is reported at once.
    return IndexOptions(jobs=2, lease=LeaseTerms(wait=0.0))


@dataclass
class Run:
    """Everything the functions did in one scenario."""

    guard: RoleGuard
    stores: list[MemoryStore] = field(default_factory=list)
    reports: list[ChannelReport | SubdirReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # FatalStoreErrors the runs raised

    def call(self, function: Callable[[], ChannelReport | SubdirReport]) -> None:
        try:
            self.reports.append(function())
        except FatalStoreError as error:
            self.failures.append(str(error))

    def errors(self) -> list[str]:
        found = [*self.failures]
        for report in self.reports:
            subdirs = list(report.subdirs.values()) if isinstance(report, ChannelReport) else [report]
            found += [f"{r.subdir}: {r.error}" for r in subdirs if r.error is not None]
            found += [f"{r.subdir}: {f.file}: {f.reason}" for r in subdirs for f in (*r.rejected, *r.failed)]
            if isinstance(report, ChannelReport):
                found += [f"{f.file}: {f.reason}" for f in report.rejected]
        return found


def run_functions(
    channels: tuple[str, ...], grants: Mapping[str, RoleGrants], packages: dict[str, list[Package]]
) -> Run:
    """What both functions do to a channel bucket, each under its own role:

    1. the full reindex of a new bucket holding noarch and linux-64 packages (it probes the store first);
    2. package events in a later cold start (it reads the cached probe answer): a package added to linux-64,
       one removed from noarch, and the first packages of a new subdir, osx-arm64;
    3. the first package event of a new bucket: the event function probes and publishes noarch first.
    """
    noarch, linux, osx = packages["noarch"], packages["linux-64"], packages["osx-arm64"]
    run = Run(RoleGuard())
    store = run.guard.watch(MemoryStore("channel-bucket"))
    run.stores.append(store)
    for channel in channels:
        publish(store, channel, *noarch, *linux[:2])
    with run.guard.acting_as(grants[FULL_REINDEX_HANDLER]):
        for channel in channels:
            run.call(partial(index_channel, store, channel, options()))

    store.conditional = ConditionalRequests(store)  # a cold start: the probe's answer is read, not learnt
    for channel in channels:
        publish(store, channel, linux[2])
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, store, channel, "linux-64", [linux[2].name], options()))
        store.delete(join_key(channel, "noarch", noarch[0].name))
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, store, channel, "noarch", [noarch[0].name], options()))
        publish(store, channel, *osx)
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, store, channel, "osx-arm64", [p.name for p in osx], options()))

    fresh = run.guard.watch(MemoryStore("new-channel-bucket"))
    run.stores.append(fresh)
    for channel in channels:
        publish(fresh, channel, linux[0])
        with run.guard.acting_as(grants[EVENTS_HANDLER]):
            run.call(partial(update_subdir, fresh, channel, "linux-64", [linux[0].name], options()))
    return run


@cache
def stack_grants(mode: str) -> dict[str, RoleGrants]:
    return {handler: role_grants(mode, handler) for handler in HANDLERS}


@pytest.fixture(scope="module")
def granted_run(packages: dict[str, list[Package]]) -> Callable[[str], Run]:
    """The scenario under each mode's roles as synthesized, run once per mode."""
    return cache(lambda mode: run_functions(CHANNELS[mode], stack_grants(mode), packages))


def repodata_names(store: MemoryStore, channel: str, subdir: str) -> set[str]:
    document = json.loads(store.read(join_key(channel, subdir, REPODATA_JSON))[0])
    return {*document.get("packages", {}), *document.get("packages.conda", {})}


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_roles_grant_the_bucket_listing_and_object_patterns(mode):
    for handler in HANDLERS:
        grants = role_grants(mode, handler)
        assert grants.list_bucket, handler
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


def unused_patterns(mode: str, run: Run, handler: str) -> list[tuple[str, str]]:
    """(action, pattern) of the role's grants that no request of the scenario needed."""
    requests = [(action, key) for role, action, key in run.guard.allowed if role == handler]
    return [
        (action, pattern)
        for action, patterns in stack_grants(mode)[handler].objects.items()
        for pattern in patterns
        if not any(a == action and iam_matches(pattern, key) for a, key in requests)
    ]


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_every_granted_pattern_is_used_by_the_indexer(mode, granted_run):
    # So that dropping any one of them below is a real test, and a grant nothing uses is noticed.
    run = granted_run(mode)
    for handler in HANDLERS:
        unused = [(a, p) for a, p in unused_patterns(mode, run, handler) if not awaiting(handler, a, p)]
        assert unused == [], handler


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_grants_awaiting_their_use_are_still_unused(mode, granted_run):
    run = granted_run(mode)
    for handler, grants in stack_grants(mode).items():
        unused = unused_patterns(mode, run, handler)
        used_now = [
            (action, pattern, awaiting(handler, action, pattern))
            for action, patterns in grants.objects.items()
            for pattern in patterns
            if awaiting(handler, action, pattern) and (action, pattern) not in unused
        ]
        assert used_now == [], f"{handler}: now used, remove their AWAITING entries: {used_now}"


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_dropping_any_granted_pattern_gets_the_indexer_refused_on_its_keys(mode, granted_run, packages):
    granted = granted_run(mode)
    grants = stack_grants(mode)
    dropped, covered = 0, []
    for handler, role in grants.items():
        requests = [(action, key) for r, action, key in granted.guard.allowed if r == handler]
        for action, patterns in role.objects.items():
            for pattern in patterns:
                narrowed = role.without(action, pattern)
                # Keys only this pattern allowed; none means another pattern covers it (e.g. '*' reads at
                # the bucket root cover the probe's cached answer), so nothing can be refused.
                needed = {key for a, key in requests if a == action and not narrowed.allows(a, key)}
                if not needed and awaiting(handler, action, pattern):
                    continue  # nothing uses it yet (AWAITING), so nothing can be refused
                if not needed:
                    covered.append((handler, action, pattern))
                    continue
                run = run_functions(CHANNELS[mode], {**grants, handler: narrowed}, packages)
                what = f"{handler} without {action} {pattern!r}"
                assert run.guard.denied, what
                assert all(
                    (r, a) == (handler, action) and iam_matches(pattern, key)
                    for r, a, key in run.guard.denied
                ), (what, run.guard.denied)
                dropped += 1
    assert dropped > 0
    # Only a read may be covered by another grant; every write and delete pattern is needed on its own.
    assert all(action == "s3:GetObject" for _, action, _ in covered), covered


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
@pytest.mark.parametrize("handler", HANDLERS)
def test_a_role_without_its_repodata_pattern_fails_the_indexer_naming_key_and_action(mode, handler, packages):
    grants = stack_grants(mode)
    channel = CHANNELS[mode][0]
    narrowed = grants[handler].without("s3:PutObject", join_key(channel, "*", REPODATA_JSON))

    run = run_functions(CHANNELS[mode][:1], {**grants, handler: narrowed}, packages)

    assert run.failures, run.reports
    for failure in run.failures:
        assert re.search(rf"access denied to \S+/{re.escape(REPODATA_JSON)}: .* s3:PutObject", failure), (
            failure
        )
    assert {(role, action) for role, action, _ in run.guard.denied} == {(handler, "s3:PutObject")}
    assert all(key.endswith(f"/{REPODATA_JSON}") for _, _, key in run.guard.denied)


def test_the_guard_matches_keys_as_iam_does():
    assert iam_matches("dev/*/repodata.json", "dev/linux-64/repodata.json")
    assert iam_matches("dev/*/shards/*", "dev/linux-64/shards/ab.msgpack.zst")
    assert iam_matches("*", "noarch/.reindexer/lease.json")  # '*' crosses '/'
    assert iam_matches("a?c", "abc") and not iam_matches("a?c", "ac")
    assert not iam_matches("dev/*/repodata.json", "dev/linux-64/repodata.json.zst")
    assert not iam_matches("*/.reindexer/*", ".reindexer/probe-1")
    assert not iam_matches("dev/*", "devel/noarch/repodata.json")
    assert not iam_matches("dev/[a]*", "dev/a")  # no character classes in IAM
