"""The fan-out full reindex's steps (plan, read, commit) on a bucket refusing what their synthesized roles do
not allow, and the state machine's role reading the plan's manifest.

The companion of tests/infra/test_indexer_within_synthesized_role.py, whose guard and template readers this
reuses: the object key patterns of the three step functions' roles and of the state machine's role are read
from the synthesized template (never from reindexer.contract). Three executions per channel run on one
bucket: the first plans past an expired run folder (deleted) and a recent one (kept), reads its manifest in
batches (one of them resumed after a throttled read) and commits a channel with patch instructions (the store
probed, the unpatched repodata written); the second, in a later process, commits a new build and the
instructions' removal (unpatched repodata deleted, a shard superseded); the third, past the shard retention,
has nothing to read and commits the superseded shard's deletion. Every granted pattern must be used, and
dropping any one in turn must get its step refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache, partial
from typing import Any

import pytest

from devtools.sample_channel import build_packages, plan_channel
from reindexer.clock import utc_now
from reindexer.contract import (
    CHANNEL_FILES,
    CHANNEL_LEASE_FILE,
    CHANNEL_STATE_FILE,
    LEASE_FILE,
    PATCH_INSTRUCTIONS,
    PROBE_KEY_PREFIX,
    PUBLISHED_FILES,
    REPODATA_JSON,
    RUN_COMMIT_HANDLER,
    RUN_EXPIRY_DAYS,
    RUN_MANIFEST,
    RUN_PLAN_HANDLER,
    RUN_READ_HANDLER,
    RUN_RESULTS_FOLDER,
    RUNS_FOLDER,
    SECONDS_PER_DAY,
    SHARD_RETENTION_VARIABLE,
    SHARDS_FOLDER,
    STATE_FILE,
    STORE_CONDITIONS_KEY,
    UNPATCHED_FILES,
    join_key,
)
from reindexer.indexer import index_channel
from reindexer.layout import package_extension
from reindexer.reindex_runs import (
    BatchResult,
    RunItem,
    RunPlan,
    commit_run,
    items_of,
    plan_run,
    read_batch,
    run_folder,
    run_name,
)
from reindexer.reports import ChannelReport
from reindexer.storage.memory import MemoryStore
from reindexer.store import FatalStoreError, TransientStoreError
from reindexer.store_conditions import ConditionalRequests
from tests.infra.test_conda_channel import function, resources, statements
from tests.infra.test_indexer_within_synthesized_role import (
    CHANNELS,
    MODES_AS_SYNTHESIZED,
    PATCHED,
    Package,
    RoleGrants,
    RoleGuard,
    check_each_pattern_is_needed,
    grants_of,
    index_options,
    publish,
    repodata_names,
    role_grants,
    unused_patterns,
    write_instructions,
)
from tests.support.clock import FakeClock

STEPS = (RUN_PLAN_HANDLER, RUN_READ_HANDLER, RUN_COMMIT_HANDLER)
STATE_MACHINE = "the fan-out state machine"
# Packages per read batch (the Distributed Map's ItemBatcher): the first run's five make three batches.
BATCH_ITEMS = 2
# A read step is retried (the state machine's Retry on BatchIncompleteError) at most this many times.
READ_ATTEMPTS = 3
# The executions of each channel, one after another: first, after the changes, past the shard retention.
EXECUTIONS = ("first", "second", "third")
THROTTLED = TransientStoreError("SlowDown: please reduce your request rate (503)")


# --- the roles, read from the template --------------------------------------------------------------------


@cache
def step_grants(mode: str) -> dict[str, RoleGrants]:
    return {handler: role_grants(mode, handler) for handler in STEPS}


@cache
def machine_grants(mode: str) -> RoleGrants:
    """The S3 grants of the state machine's role (its RoleArn), from the AWS::IAM::Policy resources attached
    to it: what its Distributed Map's ItemReader may read."""
    (machine,) = resources(mode, "AWS::StepFunctions::StateMachine").values()
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    policies = [
        p for p in resources(mode, "AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
    ]
    return grants_of(STATE_MACHINE, [s for policy in policies for s in statements(policy)], mode)


@cache
def commit_retention(mode: str) -> float:
    """The commit function's shard retention in seconds, from its synthesized environment (its handler sets
    IndexOptions.shard_retention from it)."""
    variables = function(mode, RUN_COMMIT_HANDLER)["Properties"]["Environment"]["Variables"]
    return int(variables[SHARD_RETENTION_VARIABLE]) * SECONDS_PER_DAY


# --- the executions, step by step under each role ---------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Package]]:
    """Three real packages (rattler-build's, both formats) in each of noarch and linux-64; the three of a
    subdir are builds of one package name, so a new one supersedes the subdir's only shard."""
    folder = tmp_path_factory.mktemp("fanout-channel")
    paths = build_packages(plan_channel(6, subdirs=("noarch", "linux-64")), folder)
    by_subdir: dict[str, list[Package]] = {}
    for path in paths:
        by_subdir.setdefault(path.parent.name, []).append(
            Package(path.parent.name, path.name, path.read_bytes())
        )
    return by_subdir


@dataclass
class Fanout:
    """Everything the executions did in one scenario, by (channel, execution)."""

    guard: RoleGuard
    store: MemoryStore
    clock: FakeClock = field(default_factory=FakeClock)
    failures: list[str] = field(default_factory=list)  # FatalStoreErrors and incomplete steps
    plans: dict[tuple[str, str], RunPlan] = field(default_factory=dict)
    runs: dict[tuple[str, str], str] = field(default_factory=dict)  # the run folder names
    reads: dict[tuple[str, str], list[list[BatchResult]]] = field(default_factory=dict)  # attempts by batch
    commits: dict[tuple[str, str], ChannelReport] = field(default_factory=dict)
    # channel -> the objects of the run folders left before the first plan: expired, and recent.
    expired: dict[str, set[str]] = field(default_factory=dict)
    recent: dict[str, set[str]] = field(default_factory=dict)
    # Every key in the bucket when each commit started (results, packages, indexes, states, manifests).
    keys_seen: set[str] = field(default_factory=set)
    # Stop the scenario after the first step that was refused anything (all a narrowed role needs to show).
    until_refused: bool = False

    def step(self, grants: RoleGrants, work: Callable[[], Any]) -> Any:
        """One step's invocation under its role; None when a request of it was refused (the execution
        would fail there)."""
        with self.guard.acting_as(grants):
            try:
                outcome = work()
            except FatalStoreError as error:
                self.failures.append(f"{grants.role}: {error}")
                outcome = None
        if self.until_refused and self.guard.denied:
            raise Refused
        return outcome


class Refused(Exception):
    """A step was refused a request and the scenario stops there (Fanout.until_refused)."""


def leave_run_folder(store: MemoryStore, channel: str, run: str) -> set[str]:
    """A run folder an execution left without committing (as the publisher: unchecked)."""
    folder = run_folder(channel, run)
    keys = {join_key(folder, RUN_MANIFEST), join_key(folder, RUN_RESULTS_FOLDER, "0123abcd.json")}
    for key in keys:
        store.write(key, b"[]", content_type="application/json")
    return keys


def batches_of(items: list[RunItem]) -> list[list[RunItem]]:
    return [items[start : start + BATCH_ITEMS] for start in range(0, len(items), BATCH_ITEMS)]


def execute(run: Fanout, mode: str, grants: Mapping[str, RoleGrants], channel: str, execution: str) -> None:
    """One execution of the state machine on a channel: plan; the ItemReader reads the manifest; the map
    reads each batch (retried while incomplete; the first execution's first batch is throttled once and
    resumed); commit (after a map that failed too, as the state machine's Catch does)."""
    store, clock = run.store, run.clock
    name = run_name(execution, utc_now(clock))
    run.runs[channel, execution] = name
    plan = run.step(
        grants[RUN_PLAN_HANDLER], lambda: plan_run(store, channel, name, index_options(clock, jobs=1))
    )
    if plan is None:
        return
    run.plans[channel, execution] = plan
    if plan.manifest_key is not None:
        manifest = run.step(grants[STATE_MACHINE], lambda: store.read(plan.manifest_key)[0])
        if manifest is None:
            return
        for number, batch in enumerate(batches_of(items_of(json.loads(manifest)))):
            if execution == EXECUTIONS[0] and number == 0:
                store.fail("GetObject", join_key(channel, batch[0].subdir, batch[0].name), THROTTLED)
            attempts = run.reads.setdefault((channel, execution), [])
            attempts.append([])
            for _ in range(READ_ATTEMPTS):
                result = run.step(
                    grants[RUN_READ_HANDLER],
                    partial(read_batch, store, channel, name, batch, index_options(clock, jobs=1)),
                )
                if result is None:
                    break
                attempts[-1].append(result)
                if result.complete:
                    break
                clock.advance(2)  # the Retry's backoff
    run.keys_seen |= set(store.objects)
    options = index_options(clock, commit_retention(mode), jobs=1)
    report = run.step(grants[RUN_COMMIT_HANDLER], lambda: commit_run(store, channel, name, options))
    if report is not None:
        run.commits[channel, execution] = report
        if not report.ok:
            run.failures.append(f"{channel}/{execution}: not committed {report.to_dict()}")


def run_fanout(
    mode: str,
    grants: Mapping[str, RoleGrants],
    packages: dict[str, list[Package]],
    *,
    until_refused: bool = False,
) -> Fanout:
    """Three executions on each channel of the mode, on one bucket and one FakeClock:

    1. noarch and two linux-64 builds published, linux-64 patch instructions removing one of them, a run
       folder left by an execution that never committed more than RUN_EXPIRY_DAYS ago and one left a day
       ago: the plan deletes the first, keeps the second and writes a manifest of five packages, read in
       three batches (the first throttled once, then resumed); the commit probes the store (a new bucket) and
       publishes the patched and unpatched repodata;
    2. an hour later, in new processes (the probe's answer is read, not learnt): a third linux-64 build
       published and the instructions deleted: one package to read; the commit supersedes linux-64's shard
       and deletes the unpatched repodata;
    3. past the shard retention: nothing to read (no manifest; the map is skipped), the recent run folder
       has expired and goes, and the commit deletes the superseded shard.
    """
    noarch, linux = packages["noarch"], packages["linux-64"]
    run = Fanout(RoleGuard(), MemoryStore("fanout-bucket"), until_refused=until_refused)
    store, clock = run.guard.watch(run.store), run.clock
    channels = CHANNELS[mode]
    for channel in channels:
        publish(store, channel, *noarch, *linux[:2])
        write_instructions(store, channel, {"patch_instructions_version": 1, "remove": [linux[0].name]})
        expired = utc_now(clock) - timedelta(days=RUN_EXPIRY_DAYS + 1)
        run.expired[channel] = leave_run_folder(store, channel, run_name("abandoned", expired))
        recent = utc_now(clock) - timedelta(days=1)
        run.recent[channel] = leave_run_folder(store, channel, run_name("crashed", recent))
    with suppress(Refused):
        for channel in channels:
            execute(run, mode, grants, channel, EXECUTIONS[0])

        clock.advance(3600)
        store.conditional = ConditionalRequests(store)  # cold starts
        for channel in channels:
            publish(store, channel, linux[2])
            store.delete(join_key(channel, PATCHED, PATCH_INSTRUCTIONS))
        for channel in channels:
            execute(run, mode, grants, channel, EXECUTIONS[1])

        clock.advance(commit_retention(mode))
        for channel in channels:
            execute(run, mode, grants, channel, EXECUTIONS[2])
    return run


def all_grants(mode: str) -> dict[str, RoleGrants]:
    return {**step_grants(mode), STATE_MACHINE: machine_grants(mode)}


@pytest.fixture(scope="module")
def granted_fanout(packages: dict[str, list[Package]]) -> Callable[[str], Fanout]:
    """The scenario under each mode's roles as synthesized, run once per mode."""
    return cache(lambda mode: run_fanout(mode, all_grants(mode), packages))


def done(run: Fanout, role: str, action: str) -> set[str]:
    return {key for r, a, key in run.guard.allowed if (r, a) == (role, action)}


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_the_fanout_steps_need_nothing_their_synthesized_roles_do_not_grant(mode, granted_fanout, packages):
    run = granted_fanout(mode)

    assert run.guard.denied == []
    assert run.failures == []
    store = run.store
    noarch, linux = packages["noarch"], packages["linux-64"]
    for channel in CHANNELS[mode]:
        first, second, third = (run.plans[channel, execution] for execution in EXECUTIONS)
        assert (first.items, second.items, third.items) == (5, 1, 0)
        assert third.manifest_key is None
        for execution in EXECUTIONS:
            report = run.commits[channel, execution]
            assert report.ok and report.complete, report.to_dict()
            assert not [f for r in report.subdirs.values() for f in (*r.rejected, *r.failed)], (
                report.to_dict()
            )
        assert repodata_names(store, channel, "noarch") == {p.name for p in noarch}
        assert repodata_names(store, channel, PATCHED) == {p.name for p in linux}
        assert repodata_names(store, channel, PATCHED, UNPATCHED_FILES[0]) is None
        assert run.commits[channel, EXECUTIONS[2]].subdirs[PATCHED].shards_deleted == 1
        # Every run folder is gone: the commits deleted their own, the plans the expired ones.
        assert not [key for key in store.objects if key.startswith(join_key(channel, RUNS_FOLDER) + "/")]
    # Every role was checked, on every kind of request it makes.
    checked = run.guard.checked()
    assert all(checked[action] > 0 for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")), checked


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_the_plan_writes_only_its_manifests_and_deletes_only_expired_run_folders(mode, granted_fanout):
    run = granted_fanout(mode)
    puts = done(run, RUN_PLAN_HANDLER, "s3:PutObject")
    deletes = done(run, RUN_PLAN_HANDLER, "s3:DeleteObject")
    manifests = {plan.manifest_key for plan in run.plans.values() if plan.manifest_key is not None}

    assert puts == manifests and len(manifests) == 2 * len(CHANNELS[mode])
    for channel in CHANNELS[mode]:
        for execution in EXECUTIONS[:2]:
            key = join_key(run_folder(channel, run.runs[channel, execution]), RUN_MANIFEST)
            assert run.plans[channel, execution].manifest_key == key
        # The first plan deleted the expired folder and kept the recent one; the third, a week on, that.
        assert run.plans[channel, EXECUTIONS[0]].expired_runs_deleted == 1
        assert run.plans[channel, EXECUTIONS[1]].expired_runs_deleted == 0
        assert run.plans[channel, EXECUTIONS[2]].expired_runs_deleted == 1
    assert deletes == set().union(*run.expired.values(), *run.recent.values())
    # The plan reads listings and states (or, without one, another tool's repodata.json), never a package.
    reads = done(run, RUN_PLAN_HANDLER, "s3:GetObject")
    assert reads and all(key.endswith((STATE_FILE, f"/{REPODATA_JSON}")) for key in reads), reads


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_the_read_steps_write_only_their_batches_results_and_a_retry_resumes(mode, granted_fanout, packages):
    run = granted_fanout(mode)
    puts = done(run, RUN_READ_HANDLER, "s3:PutObject")
    results = {result.key for attempts in run.reads.values() for batch in attempts for result in batch}

    assert puts == results
    assert all(f"/{RUNS_FOLDER}/" in f"/{key}" and f"/{RUN_RESULTS_FOLDER}/" in key for key in puts), puts
    assert done(run, RUN_READ_HANDLER, "s3:DeleteObject") == set()
    names = {p.name for subdir in packages.values() for p in subdir}
    for channel in CHANNELS[mode]:
        # Three batches, the first read twice: the throttled package, then only it.
        first, second, third = run.reads[channel, EXECUTIONS[0]]
        throttled, resumed = first
        assert len(throttled.failed) == 1 and "SlowDown" in throttled.failed[0].reason
        assert throttled.indexed == BATCH_ITEMS - 1 and throttled.key == resumed.key
        assert resumed.complete and resumed.resumed == BATCH_ITEMS - 1 and resumed.indexed == BATCH_ITEMS
        assert [len(attempts) for attempts in (second, third)] == [1, 1]
        assert [len(attempts) for attempts in run.reads[channel, EXECUTIONS[1]]] == [1]
        # Each package of the channel read once, the throttled one twice.
        packages_read = [
            key
            for r, a, key in run.guard.allowed
            if (r, a) == (RUN_READ_HANDLER, "s3:GetObject")
            and key.rsplit("/", 1)[-1] in names
            and key.startswith(channel)
        ]
        assert len(packages_read) == 6 + 1, packages_read


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_the_commit_publishes_reads_no_package_the_batches_read_and_deletes_its_run(
    mode, granted_fanout, packages
):
    run = granted_fanout(mode)
    puts = done(run, RUN_COMMIT_HANDLER, "s3:PutObject")
    deletes = done(run, RUN_COMMIT_HANDLER, "s3:DeleteObject")
    reads = done(run, RUN_COMMIT_HANDLER, "s3:GetObject")

    names = {p.name for subdir in packages.values() for p in subdir}
    assert not [key for key in reads if key.rsplit("/", 1)[-1] in names]
    # A new bucket: the first commit probed the store's conditional requests and cached the answer, which the
    # later processes read.
    assert STORE_CONDITIONS_KEY in puts and STORE_CONDITIONS_KEY in reads
    assert any(key.startswith(PROBE_KEY_PREFIX) for key in puts & deletes)
    for channel in CHANNELS[mode]:
        folder = join_key(channel, PATCHED)
        subdir_files = (*PUBLISHED_FILES, *UNPATCHED_FILES, STATE_FILE, LEASE_FILE)
        assert {join_key(folder, name) for name in subdir_files} <= puts
        assert {join_key(folder, name) for name in (LEASE_FILE, *UNPATCHED_FILES)} <= deletes
        assert any(key.startswith(join_key(folder, SHARDS_FOLDER) + "/") for key in deletes)
        channel_files = (*CHANNEL_FILES, CHANNEL_LEASE_FILE, CHANNEL_STATE_FILE)
        assert {join_key(channel, name) for name in channel_files} <= puts
        # Its run's objects: the manifest and every batch's result, of the two executions that read.
        for execution in EXECUTIONS[:2]:
            runs_objects = {join_key(run_folder(channel, run.runs[channel, execution]), RUN_MANIFEST)}
            runs_objects |= {batch[-1].key for batch in run.reads[channel, execution]}
            assert runs_objects <= deletes
    runs = {key for key in deletes if f"/{RUNS_FOLDER}/" in f"/{key}"}
    assert len(runs) == (1 + 3 + 1 + 1) * len(CHANNELS[mode])


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_the_state_machine_reads_the_manifests_and_nothing_else_in_the_bucket(mode, granted_fanout):
    run = granted_fanout(mode)
    machine = machine_grants(mode)
    manifests = {plan.manifest_key for plan in run.plans.values() if plan.manifest_key is not None}

    assert done(run, STATE_MACHINE, "s3:GetObject") == manifests
    assert machine.listing == ()
    assert machine.objects["s3:PutObject"] == () and machine.objects["s3:DeleteObject"] == ()
    # Of every key the bucket held when a commit started (packages, indexes, states, the probe's answer,
    # results, the run folders left behind): only the manifests, the plans' and those of the folders left.
    left_folders = set().union(*run.expired.values(), *run.recent.values())
    left = {key for key in left_folders & run.keys_seen if key.endswith(f"/{RUN_MANIFEST}")}
    assert run.keys_seen > manifests | left and len(left) >= len(CHANNELS[mode])
    assert {key for key in run.keys_seen if machine.allows("s3:GetObject", key)} == manifests | left
    assert any(RUN_RESULTS_FOLDER in key for key in run.keys_seen)


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_every_granted_pattern_of_the_fanout_roles_is_used(mode, granted_fanout, adopting_fanout):
    # So that dropping any of them below is a real test, and a grant no step needs is noticed. No exceptions:
    # the commit role's patch-instruction writes, once inherited from the full reindex's grants, were the
    # only pattern unused (yank, unyank and patch go to the full-reindex function) and are granted no more.
    allowed = granted_fanout(mode).guard.allowed + adopting_fanout(mode).guard.allowed
    for role, grants in all_grants(mode).items():
        assert unused_patterns(grants, allowed) == [], role


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_dropping_any_granted_pattern_gets_its_step_refused_on_its_keys(mode, granted_fanout, packages):
    grants = all_grants(mode)

    def denied_without(role: str, narrowed: RoleGrants) -> list[tuple[str, str, str]]:
        return run_fanout(mode, {**grants, role: narrowed}, packages, until_refused=True).guard.denied

    check_each_pattern_is_needed(grants, granted_fanout(mode).guard.allowed, denied_without)


def run_adopting(mode: str, packages: dict[str, list[Package]]) -> Fanout:
    """Indexing an existing bucket: each channel's subdirs hold a repodata.json another tool made
    (rattler-index, say) and no state yet; one execution."""
    grants = all_grants(mode)
    run = Fanout(RoleGuard(), MemoryStore("adopted-bucket"))
    scratch = MemoryStore("scratch")
    for channel in CHANNELS[mode]:
        publish(scratch, channel, *packages["noarch"], *packages["linux-64"])
        index_channel(scratch, channel, index_options(run.clock, jobs=1))
    for key in scratch.objects:
        if key.endswith(f"/{REPODATA_JSON}") or package_extension(key) is not None:
            run.store.write(key, scratch.read(key)[0], content_type="application/octet-stream")
    run.guard.watch(run.store)
    for channel in CHANNELS[mode]:
        execute(run, mode, grants, channel, EXECUTIONS[0])
    return run


@pytest.fixture(scope="module")
def adopting_fanout(packages: dict[str, list[Package]]) -> Callable[[str], Fanout]:
    return cache(lambda mode: run_adopting(mode, packages))


@pytest.mark.parametrize("mode", MODES_AS_SYNTHESIZED)
def test_a_fanout_over_a_bucket_another_tool_indexed_adopts_its_repodata_within_the_roles(
    mode, adopting_fanout
):
    run = adopting_fanout(mode)

    assert run.guard.denied == [] and run.failures == []
    reads = done(run, RUN_PLAN_HANDLER, "s3:GetObject")
    assert {key for key in reads if key.endswith(f"/{REPODATA_JSON}")}, reads
    for channel in CHANNELS[mode]:
        assert run.commits[channel, EXECUTIONS[0]].complete
