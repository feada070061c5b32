"""Patch instructions at publication (issue 11): a subdir's patch_instructions.json gives the view clients
read (repodata.json, its .zst twin and the shards), the records as read stay beside it in
repodata_from_packages.json(.zst), a bad file leaves the last good view in force, a run with nothing to do
writes nothing, rattler's solver follows yank and unyank, and two operators' yanks both land."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rattler import Gateway, Subdir, solve

from reindexer.contract import (
    PATCH_INSTRUCTIONS,
    REPODATA_FROM_PACKAGES,
    REPODATA_FROM_PACKAGES_ZST,
    REPODATA_JSON,
    REPODATA_ZST,
    SECONDS_PER_DAY,
    SHARD_INDEX,
    join_key,
)
from reindexer.indexer import index_channel
from reindexer.lease import LEASE_FILE
from reindexer.operations import unyank, yank
from reindexer.options import IndexOptions
from reindexer.patches import MAX_INSTRUCTIONS_BYTES, REVOKED_DEPENDENCY
from reindexer.reports import SubdirReport
from reindexer.shards import shard_path
from reindexer.storage.local import LocalStore
from reindexer.storage.memory import MemoryStore
from reindexer.store import Store
from reindexer.subdir_ref import SubdirRef
from reindexer.updater import update_subdir
from tests.support.archives import index_json, package_bytes
from tests.support.checks import MutationCounter, all_records, decode_msgpack_zst, sha256_hex, zstd_decompress
from tests.support.clients import ROUTES, ChannelServer

CHANNEL = "ch"
SUBDIR = "linux-64"
PATCH_KEY = join_key(CHANNEL, SUBDIR, PATCH_INSTRUCTIONS)

A1_TAR, A1_CONDA, A2 = "a-1.0-h0_0.tar.bz2", "a-1.0-h0_0.conda", "a-2.0-h0_0.conda"
B1, B2, C1 = "b-1.0-h0_0.tar.bz2", "b-2.0-h0_0.conda", "c-1.0-h0_0.conda"
PACKAGES = {
    # a 1.0 in both formats: an override of the .tar.bz2 reaches its .conda twin.
    A1_TAR: index_json("a", "1.0", depends=["b >=1"]),
    A1_CONDA: index_json("a", "1.0", depends=["b >=1"]),
    A2: index_json("a", "2.0", depends=["b >=1"]),
    B1: index_json("b", "1.0"),
    B2: index_json("b", "2.0", constrains=["c >=0.5"]),
    C1: index_json("c", "1.0"),
}
# Remove, revoke, a depends override (by the .tar.bz2 name) and a constrains override (packages.conda).
GOOD = {
    "patch_instructions_version": 1,
    "packages": {A1_TAR: {"depends": ["b >=2"]}},
    "packages.conda": {B2: {"constrains": ["c >=1"]}},
    "remove": [A2],
    "revoke": [B1],
}
# Another good file: a different override, a removal by .tar.bz2 name (its .conda twin goes too).
OTHER = {"patch_instructions_version": 1, "packages.conda": {C1: {"depends": ["b"]}}, "remove": [A1_TAR]}

RETENTION = 7 * SECONDS_PER_DAY

# --- a channel and its runs ---------------------------------------------------------------------------------


def put(store: Store, key: str, data: bytes) -> str:
    """An upload (a package, or an operator's patch file) straight into the bucket."""
    return store.write(key, data, content_type="application/octet-stream")


def put_patch(store: Store, instructions: dict[str, Any] | bytes) -> None:
    data = instructions if isinstance(instructions, bytes) else json.dumps(instructions).encode()
    put(store, PATCH_KEY, data)


def upload(store: Store, filename: str, data: bytes) -> None:
    put(store, join_key(CHANNEL, SUBDIR, filename), data)


# Built once: a .conda's zip entries carry the time they were made, so a rebuild has other digests.
ARCHIVES = {filename: package_bytes(filename, index) for filename, index in PACKAGES.items()}
D1 = "d-1.0-h0_0.conda"
D1_ARCHIVE = package_bytes(D1, index_json("d", "1.0"))


def channel_store(*, patch: dict[str, Any] | None = None) -> MemoryStore:
    store = MemoryStore()
    for filename, data in ARCHIVES.items():
        upload(store, filename, data)
    if patch is not None:
        put_patch(store, patch)
    return store


def full_run(store: Store, **options: Any) -> SubdirReport:
    report = index_channel(store, CHANNEL, IndexOptions(**options))
    assert report.ok, report.to_dict()
    return report.subdirs[SUBDIR]


def event_run(store: Store, *names: str) -> SubdirReport:
    report = update_subdir(store, CHANNEL, SUBDIR, list(names or [PATCH_INSTRUCTIONS]), IndexOptions())
    assert report.error is None, report.to_dict()
    return report


RUNS: dict[str, Callable[[Store], SubdirReport]] = {"full": full_run, "event": event_run}

# --- what is published --------------------------------------------------------------------------------------


def read(store: Store, name: str) -> bytes:
    return store.read(join_key(CHANNEL, SUBDIR, name))[0]


def exists(store: Store, name: str) -> bool:
    return store.head(join_key(CHANNEL, SUBDIR, name)) is not None


def hex_digests(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value.hex() if isinstance(value, bytes) else value for key, value in record.items()}


def shard_records(store: Store) -> dict[str, dict[str, Any]]:
    """Every record the shard index reaches, each shard checked against its address and its name."""
    index = decode_msgpack_zst(read(store, SHARD_INDEX))
    records: dict[str, dict[str, Any]] = {}
    for name, digest in index["shards"].items():
        data = read(store, shard_path(digest.hex()))
        assert sha256_hex(data) == digest.hex(), f"shard of {name} does not match its address"
        shard = decode_msgpack_zst(data)
        for filename, record in all_records(shard).items():
            assert record["name"] == name, f"{filename} in the shard of {name}"
            records[filename] = hex_digests(record)
    return records


def assert_published(store: Store, records: dict[str, dict[str, Any]], removed: list[str]) -> bytes:
    """repodata.json, repodata.json.zst and the shards all hold exactly `records`; repodata.json lists
    `removed`. Returns repodata.json's bytes."""
    raw = read(store, REPODATA_JSON)
    assert zstd_decompress(read(store, REPODATA_ZST)) == raw, "repodata.json.zst is not repodata.json"
    document = json.loads(raw)
    assert all_records(document) == records
    assert document["removed"] == sorted(removed)
    assert shard_records(store) == records
    return raw


def assert_unpatched_beside(store: Store, records: dict[str, dict[str, Any]] | None) -> None:
    """repodata_from_packages.json(.zst) hold the records as read; None: neither file exists."""
    if records is None:
        assert not exists(store, REPODATA_FROM_PACKAGES)
        assert not exists(store, REPODATA_FROM_PACKAGES_ZST)
        return
    raw = read(store, REPODATA_FROM_PACKAGES)
    assert zstd_decompress(read(store, REPODATA_FROM_PACKAGES_ZST)) == raw
    document = json.loads(raw)
    assert all_records(document) == records
    assert document["removed"] == []


def unpatched_records() -> dict[str, dict[str, Any]]:
    """The channel's records as read from its packages (an index without instructions publishes them)."""
    store = channel_store()
    full_run(store)
    return all_records(json.loads(read(store, REPODATA_JSON)))


UNPATCHED = unpatched_records()


def patched(
    changes: dict[str, dict[str, Any]], removed: tuple[str, ...] = (), revoked: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """The unpatched records with fields changed by hand (conda-index's semantics), some removed or
    revoked."""
    records = {name: dict(record) for name, record in UNPATCHED.items() if name not in removed}
    for name, fields in changes.items():
        records[name].update(fields)
    for name in revoked:
        records[name]["revoked"] = True
        records[name]["depends"] = [*records[name]["depends"], REVOKED_DEPENDENCY]
    return records


GOOD_VIEW = patched(
    {A1_TAR: {"depends": ["b >=2"]}, A1_CONDA: {"depends": ["b >=2"]}, B2: {"constrains": ["c >=1"]}},
    removed=(A2,),
    revoked=(B1,),
)
OTHER_VIEW = patched({C1: {"depends": ["b"]}}, removed=(A1_TAR, A1_CONDA))
OTHER_REMOVED = [A1_CONDA, A1_TAR]


def test_full_index_publishes_the_patched_view_everywhere_and_the_records_as_read_beside_it():
    """Protects clients of every route (repodata.json, .zst, shards): a removed build is listed in "removed"
    and in no record set, a revoked one is marked, overrides reach a .tar.bz2 and its .conda twin alike."""
    store = channel_store(patch=GOOD)

    report = full_run(store)

    assert report.written and report.patch_problems == []
    assert_published(store, GOOD_VIEW, removed=[A2])
    assert GOOD_VIEW[B1]["revoked"] is True
    assert GOOD_VIEW[B1]["depends"] == [REVOKED_DEPENDENCY]
    assert_unpatched_beside(store, UNPATCHED)


@pytest.mark.parametrize("run", RUNS)
def test_writing_changing_and_deleting_the_file_republishes(run: str):
    """Protects operators who upload patch_instructions.json themselves: the notification's run (or the
    next full run) publishes the new view, and deleting the file gives the records as read back, with the
    unpatched copies gone."""
    store = channel_store()
    full_run(store)
    assert_unpatched_beside(store, None)

    put_patch(store, GOOD)
    assert RUNS[run](store).written
    good = assert_published(store, GOOD_VIEW, removed=[A2])
    assert_unpatched_beside(store, UNPATCHED)
    # The same bytes as a full index of the same bucket from scratch.
    assert good == read(index_fresh_copy(store), REPODATA_JSON)

    put_patch(store, OTHER)
    assert RUNS[run](store).written
    assert_published(store, OTHER_VIEW, removed=OTHER_REMOVED)
    assert_unpatched_beside(store, UNPATCHED)

    store.delete(PATCH_KEY)
    assert RUNS[run](store).written
    assert_published(store, UNPATCHED, removed=[])
    assert_unpatched_beside(store, None)


def index_fresh_copy(store: MemoryStore) -> MemoryStore:
    """The bucket's packages and patch file in a new bucket, indexed by one full run."""
    copy = MemoryStore()
    for key, stored in store.objects.items():
        if key.endswith((".conda", ".tar.bz2", PATCH_INSTRUCTIONS)):
            put(copy, key, stored.data)
    full_run(copy)
    return copy


# --- a bad file ---------------------------------------------------------------------------------------------

BAD_FILES = {
    "not-json": (b'{"remove": ["a-2.0-h0_0.conda"', "is not valid JSON"),
    "version-2": (json.dumps({"patch_instructions_version": 2}).encode(), "is not supported"),
    "breaks-a-record": (
        json.dumps({"packages.conda": {C1: {"depends": "zlib"}}}).encode(),
        "depends must be a list",
    ),
    # Refused by its listed (or HEADed) size: never read.
    "oversize": (b" " * (MAX_INSTRUCTIONS_BYTES + 1), "over the limit"),
}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("bad", BAD_FILES)
def test_a_bad_file_is_reported_and_the_last_good_view_stays_until_it_is_fixed(bad: str, run: str):
    """Protects a channel's yanks from a broken upload: the file is reported in one line naming it, the
    last good view stays published (a yanked build does not come back), new uploads are indexed under it,
    and a fixed file clears the problem."""
    store = channel_store(patch=GOOD)
    full_run(store)
    published = read(store, REPODATA_JSON)
    data, says = BAD_FILES[bad]
    patch_reads: list[str] = []
    store.on("GetObject", PATCH_KEY, lambda operation, key: patch_reads.append(key))

    put_patch(store, data)
    report = RUNS[run](store)

    (problem,) = report.patch_problems
    assert PATCH_INSTRUCTIONS in problem and says in problem, problem
    assert "\n" not in problem
    assert read(store, REPODATA_JSON) == published
    assert_published(store, GOOD_VIEW, removed=[A2])
    assert_unpatched_beside(store, UNPATCHED)
    if bad == "oversize":
        assert patch_reads == []

    # A new upload is indexed under the last good instructions; the problem is still reported.
    upload(store, D1, D1_ARCHIVE)
    report = event_run(store, D1)
    assert report.added == [D1]
    assert report.patch_problems == [problem]
    with_d = {**GOOD_VIEW, D1: all_records(json.loads(read(store, REPODATA_JSON)))[D1]}
    assert_published(store, with_d, removed=[A2])
    # A full run keeps reporting it and changes nothing.
    assert full_run(store).patch_problems == [problem]
    assert_published(store, with_d, removed=[A2])

    put_patch(store, OTHER)
    report = RUNS[run](store)
    assert report.patch_problems == []
    assert_published(store, {**OTHER_VIEW, D1: with_d[D1]}, removed=OTHER_REMOVED)


def test_one_event_batch_with_a_package_and_a_file_that_breaks_its_record_keeps_the_last_good_view():
    """Protects the event path from the order of one batch: the new file is checked against the records
    it will patch, the package uploaded in the same batch included."""
    store = channel_store(patch=GOOD)
    full_run(store)
    upload(store, D1, D1_ARCHIVE)
    put_patch(store, {"remove": [C1], "packages.conda": {D1: {"depends": "zlib"}}})

    report = event_run(store, D1, PATCH_INSTRUCTIONS)

    assert report.added == [D1]
    (problem,) = report.patch_problems
    assert problem.startswith(f"{PATCH_INSTRUCTIONS} not applied: {D1} after patching: ")
    with_d = {**GOOD_VIEW, D1: all_records(json.loads(read(store, REPODATA_JSON)))[D1]}
    assert with_d[D1]["depends"] == []
    assert_published(store, with_d, removed=[A2])


def test_a_bad_first_file_is_reported_and_the_records_are_published_as_read():
    """With no good instructions ever, a bad file costs nothing but the report."""
    store = channel_store(patch={"remove": "a-2.0-h0_0.conda"})

    report = full_run(store)

    (problem,) = report.patch_problems
    assert problem.startswith(f"{PATCH_INSTRUCTIONS} not applied: ")
    assert_published(store, UNPATCHED, removed=[])
    assert_unpatched_beside(store, None)


# --- a run with nothing to do -------------------------------------------------------------------------------


@pytest.mark.parametrize("then_bad", [False, True], ids=["good-file", "bad-file-after-a-good-one"])
def test_a_full_run_after_patching_reads_no_package_and_writes_nothing(then_bad: bool):
    """Protects request costs: the schedule's nightly full run over a patched channel is free."""
    store = channel_store(patch=GOOD)
    full_run(store, shard_retention=RETENTION)
    if then_bad:
        put_patch(store, b"not json")
        assert full_run(store, shard_retention=RETENTION).patch_problems
    package_reads: list[str] = []
    for pattern in ("*.conda", "*.tar.bz2", f"*/{PATCH_INSTRUCTIONS}"):
        store.on("GetObject", pattern, lambda operation, key: package_reads.append(key))
    counter = MutationCounter(store)

    report = index_channel(counter, CHANNEL, IndexOptions(shard_retention=RETENTION))

    assert report.ok, report.to_dict()
    assert not counter.mutations, f"a no-op run wrote {dict(counter.mutations)}"
    assert package_reads == []
    assert not any(subdir.written for subdir in report.subdirs.values())
    # The event of the file's last upload, delivered again: the lease is taken and given back, nothing else.
    again = update_subdir(counter, CHANNEL, SUBDIR, [PATCH_INSTRUCTIONS], IndexOptions())
    assert not again.written
    assert counter.mutations
    assert all(mutation.endswith(f"/{LEASE_FILE}") for mutation in counter.mutations), counter.mutations
    assert package_reads == []


# --- rattler's solver ---------------------------------------------------------------------------------------


async def _solve(url: str, route: str, cache: Path) -> list[str]:
    gateway = Gateway(cache_dir=cache, default_config=ROUTES[route].config)
    records = await solve([url], ["tool"], gateway=gateway, platforms=[Subdir(SUBDIR), Subdir("noarch")])
    return sorted(record.file_name for record in records)


def solved(server: ChannelServer, tmp_path: Path, step: str) -> dict[str, list[str]]:
    """What rattler's solver picks for `tool` through each route (sharded, .zst, plain JSON), fresh caches."""
    return {
        route: asyncio.run(_solve(server.url(route, "channel"), route, tmp_path / f"cache-{step}-{route}"))
        for route in ROUTES
    }


def test_rattler_does_not_choose_a_yanked_build_and_chooses_it_again_once_unyanked(tmp_path: Path):
    """Protects pixi and rattler users: a yank takes effect on every route the solver may read, an unyank
    undoes it."""
    folder = tmp_path / "channel"
    (folder / SUBDIR).mkdir(parents=True)
    older, newest = "tool-1.0-h0_0.conda", "tool-2.0-h0_0.conda"
    for filename, version in ((older, "1.0"), (newest, "2.0")):
        (folder / SUBDIR / filename).write_bytes(package_bytes(filename, index_json("tool", version)))
    store = LocalStore(folder)
    assert index_channel(store, "", IndexOptions()).ok
    subdir = SubdirRef(store, "", SUBDIR)

    with ChannelServer(tmp_path) as server:
        assert solved(server, tmp_path, "before") == {route: [newest] for route in ROUTES}

        yanked = yank(subdir, [newest], "broken build", IndexOptions())
        assert yanked.report is not None and yanked.report.written
        assert solved(server, tmp_path, "yanked") == {route: [older] for route in ROUTES}

        back = unyank(subdir, [newest], IndexOptions())
        assert back.report is not None and back.report.written
        assert solved(server, tmp_path, "unyanked") == {route: [newest] for route in ROUTES}


# --- two operators at once ----------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["no-file-yet", "file-exists"])
def test_concurrent_yanks_both_land(existing: bool):
    """Protects operators working at the same time: the yank whose compare-and-swap write of
    patch_instructions.json loses reads the other's and tries again, so neither yank is lost."""
    store = channel_store(patch={"remove": [C1]} if existing else None)
    full_run(store)
    subdir = SubdirRef(store, CHANNEL, SUBDIR)
    patch_writes: list[str] = []
    store.on("PutObject", PATCH_KEY, lambda operation, key: patch_writes.append(key))
    # The first write of the file waits (before it takes effect) until the other yank is done.
    held = store.pause("PutObject", PATCH_KEY, times=1)
    outcome: list[Any] = []

    def first() -> None:
        try:
            outcome.append(yank(subdir, [A2], "first operator", IndexOptions()))
        except BaseException as error:  # reported to the test below
            outcome.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        held.wait_reached()
        second = yank(subdir, [B1], "second operator", IndexOptions())
    finally:
        held.release()
        thread.join(timeout=30)
    assert not thread.is_alive()
    (first_edit,) = outcome
    assert not isinstance(first_edit, BaseException), first_edit

    instructions = json.loads(store.read(PATCH_KEY)[0])
    assert {A2, B1} <= set(instructions["remove"])
    assert instructions["reindexer_reasons"][A2] == "first operator"
    assert instructions["reindexer_reasons"][B1] == "second operator"
    assert second.report is not None and second.report.error is None
    assert first_edit.report is not None and first_edit.report.error is None
    document = json.loads(read(store, REPODATA_JSON))
    assert not {A2, B1} & set(all_records(document))
    assert {A2, B1} <= set(document["removed"])
    # Three writes: the second operator's, the first's lost compare-and-swap and its retry, which started
    # from the second operator's file.
    assert len(patch_writes) == 3
    assert B1 in first_edit.before.remove
