"""`reindexer status` and `reindexer wait` (issue 12) on a local folder and on MemoryStore, with a fake clock:
status in both forms for indexed, never-indexed, rejected, yanked and leased subdirs, reading only; wait's
three outcomes and their exit codes, a re-upload waited for anew, and polls that are conditional GETs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reindexer.contract import LEASE_FILE, STATE_FILE, join_key
from reindexer.indexer import index_channel
from reindexer.lease import Lease, LeaseTerms, lease_holder
from reindexer.operations import yank
from reindexer.options import IndexOptions
from reindexer.state import SubdirState
from reindexer.storage.memory import MemoryStore
from reindexer.store import TransientStoreError
from reindexer.subdir_ref import SubdirRef
from reindexer.updater import update_subdir
from reindexer_cli import status_commands
from reindexer_cli.cli import build_parser, main
from reindexer_cli.status_commands import (
    INDEXED,
    LOCAL_FOLDER,
    MAX_INTERVAL,
    NOT_PROBED,
    REJECTED,
    TIMED_OUT,
    TIMED_OUT_OUTCOME,
    channel_status,
    wait_for_upload,
)
from tests.support.archives import index_json, package_bytes
from tests.support.clock import FakeClock
from tests.support.stores import channel_files

CHANNEL = "dev"
SUBDIR = "linux-64"
A1, A2, B1 = "a-1.0-h0_0.conda", "a-2.0-h0_0.conda", "b-1.0-h0_0.tar.bz2"
BAD = "bad-1.0-h0_0.conda"
NEW = "c-1.0-h0_0.conda"
ARCHIVES = {
    A1: package_bytes(A1, index_json("a", "1.0")),
    A2: package_bytes(A2, index_json("a", "2.0")),
    B1: package_bytes(B1, index_json("b", "1.0")),
}
NEW_ARCHIVE = package_bytes(NEW, index_json("c", "1.0"))
PACKAGE_TYPE = "application/octet-stream"


class ScriptedClock(FakeClock):
    """A fake clock that runs `actions[n]` right after its n-th sleep (1-based): what another process does
    while the waiter sleeps."""

    def __init__(self, actions: dict[int, Callable[[], object]] | None = None) -> None:
        super().__init__()
        self.actions = actions or {}

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if action := self.actions.get(len(self.slept)):
            action()


class PollRecorder(MemoryStore):
    """MemoryStore noting how the state is read: (etag given, whether a body came back) per conditional GET,
    and the keys of unconditional reads."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.polls: list[tuple[str | None, bool]] = []
        self.plain_reads: list[str] = []

    def read(self, key: str) -> tuple[bytes, str]:
        self.plain_reads.append(key)
        return super().read(key)

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes, str] | None:
        found = super().read_if_changed(key, etag)
        if key.endswith(STATE_FILE):
            self.polls.append((etag, found is not None))
        return found


def put(store: MemoryStore, name: str, data: bytes, subdir: str = SUBDIR) -> str:
    return store.write(join_key(CHANNEL, subdir, name), data, content_type=PACKAGE_TYPE)


def index(store: MemoryStore, clock: FakeClock) -> None:
    assert index_channel(store, CHANNEL, IndexOptions(clock=clock)).ok


def update(store: MemoryStore, clock: FakeClock, *names: str) -> Callable[[], object]:
    """The package-event path indexing `names`, as a callable for a ScriptedClock."""
    return lambda: update_subdir(store, CHANNEL, SUBDIR, names, IndexOptions(clock=clock))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> PollRecorder:
    """A channel in memory: linux-64 indexed with one rejected file, A2 yanked; win-64 holds an upload that
    was never indexed."""
    store = PollRecorder(clock=clock)
    for name, data in ARCHIVES.items():
        put(store, name, data)
    put(store, BAD, b"not a zip")
    index(store, clock)
    edit = yank(SubdirRef(store, CHANNEL, SUBDIR), [A2], "segfaults on import", IndexOptions(clock=clock))
    assert edit.report is not None and not edit.report.error
    put(store, "w-1.0-h0_0.conda", b"later", subdir="win-64")
    return store


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The same channel in a local folder, indexed by `reindexer index` (no yank)."""
    channel = tmp_path / "channel"
    (channel / SUBDIR).mkdir(parents=True)
    for name, data in {**ARCHIVES, BAD: b"not a zip"}.items():
        (channel / SUBDIR / name).write_bytes(data)
    assert main(["index", str(channel)]) == 0
    (channel / "win-64").mkdir()
    (channel / "win-64" / "w-1.0-h0_0.conda").write_bytes(b"later")
    return channel


def state_of(store: MemoryStore) -> SubdirState:
    return SubdirState.from_bytes(store.read(join_key(CHANNEL, SUBDIR, STATE_FILE))[0])


def wait_args(*argv: str) -> Any:
    return build_parser().parse_args(["wait", *argv])


# --- published_at and the lease's holder ----------------------------------------------------------------


def test_a_publication_keeps_its_clock_time_and_an_older_state_reads_as_unknown(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    put(store, A1, ARCHIVES[A1])
    index(store, clock)
    assert state_of(store).published_at == clock.now

    clock.advance(60)
    put(store, B1, ARCHIVES[B1])
    update(store, clock, B1)()
    assert state_of(store).published_at == clock.now

    older = SubdirState.from_bytes(SubdirState().to_bytes())
    assert older.published_at == 0.0


# --- status ----------------------------------------------------------------------------------------------


def test_status_of_a_local_folder_lists_each_subdir_in_lines(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = channel_files(folder)
    capsys.readouterr()

    assert main(["status", str(folder)]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"channel {folder}"
    assert lines[1] == f"store: {LOCAL_FOLDER}"
    linux = next(line for line in lines if line.startswith(f"  {SUBDIR}:"))
    assert "3 packages indexed, 1 rejected; published 20" in linux and linux.endswith(" UTC")
    assert any(line.startswith(f"    rejected {BAD}: ") and "zip" in line for line in lines)
    assert "  win-64: never indexed" in lines
    assert "  noarch: 0 packages indexed" in "\n".join(lines)
    assert not any("lease" in line for line in lines)
    assert channel_files(folder) == before  # reading only


def test_status_json_of_a_local_folder_is_one_document(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    assert main(["status", str(folder), "--json"]) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["target"] == str(folder)
    assert document["store"] == {"summary": LOCAL_FOLDER, "conditions": None}
    assert set(document["subdirs"]) == {"linux-64", "noarch", "win-64"}
    linux = document["subdirs"][SUBDIR]
    assert linux["indexed"] is True
    assert linux["packages"] == 3
    assert linux["published_at"].endswith("Z")
    assert [entry["file"] for entry in linux["rejected"]] == [BAD]
    assert linux["yanked"] == [] and linux["patch_problems"] == [] and linux["lease"] is None
    assert document["subdirs"]["win-64"] == {
        "indexed": False,
        "packages": 0,
        "published_at": None,
        "rejected": [],
        "yanked": [],
        "patch_problems": [],
        "lease": None,
        "problem": None,
    }


def test_status_shows_yanked_files_with_their_reasons_and_reads_only(memory: PollRecorder, clock) -> None:
    memory.requests.clear()

    status = channel_status(memory, CHANNEL, clock=clock)

    document = status.to_dict()
    linux = document["subdirs"][SUBDIR]
    assert linux["packages"] == 3  # a yanked file stays indexed; it is left out of what clients see
    assert linux["yanked"] == [{"file": A2, "reason": "segfaults on import"}]
    assert [entry["file"] for entry in linux["rejected"]] == [BAD]
    assert document["subdirs"]["win-64"]["indexed"] is False
    lines = status_commands.status_lines(status)
    assert f"    yanked {A2}: segfaults on import" in lines
    # One listing, then per subdir its state and lease, and the bucket's probed conditions: GETs only.
    assert set(memory.requests) == {"ListObjectsV2", "GetObject"}
    assert memory.requests["GetObject"] == 2 * len(status.subdirs) + 1


def test_status_shows_the_stores_probed_conditions_or_that_there_are_none(
    memory: PollRecorder, clock
) -> None:
    status = channel_status(memory, CHANNEL, clock=clock)
    # Indexing probed the store: its answer is cached at the bucket root.
    assert status.store.startswith(
        "create-only PUT honoured; If-Match PUT quoted ETag; If-Match DELETE honoured"
    )
    assert "(probed " in status.store
    assert status.to_dict()["store"]["conditions"]["safe_for_many_writers"] is True

    fresh = MemoryStore(clock=clock)
    assert channel_status(fresh, CHANNEL, clock=clock).store == NOT_PROBED
    assert "PutObject" not in fresh.requests  # status never probes


def test_status_shows_a_lease_in_force_and_who_holds_it(memory: PollRecorder, clock: FakeClock) -> None:
    lease = Lease(SubdirRef(memory, CHANNEL, SUBDIR), LeaseTerms(lifetime=300.0, wait=0.0), clock=clock)
    lease.acquire()
    clock.advance(100)

    status = channel_status(memory, CHANNEL, clock=clock)

    lease_json = status.to_dict()["subdirs"][SUBDIR]["lease"]
    assert lease_json["holder"] == lease_holder()
    assert lease_json["in_force"] is True
    assert lease_json["seconds_left"] == 200.0
    lines = status_commands.status_lines(status)
    assert any(line.startswith(f"    lease: held by {lease_holder()} until ") for line in lines)
    assert "(200 s left)" in "\n".join(lines)

    clock.advance(300)
    expired = channel_status(memory, CHANNEL, clock=clock)
    assert expired.to_dict()["subdirs"][SUBDIR]["lease"]["in_force"] is False
    assert any("lease: none in force (left by" in line for line in status_commands.status_lines(expired))


def test_status_reads_a_lease_without_a_holder_and_a_state_without_a_publication_time(
    memory: PollRecorder, clock: FakeClock
) -> None:
    lease_key = join_key(CHANNEL, SUBDIR, LEASE_FILE)
    memory.write(
        lease_key,
        json.dumps({"owner": "0123456789abcdef", "expires_at": clock.now + 60}).encode(),
        content_type="application/json",
    )
    state = state_of(memory)
    state.published_at = 0.0
    memory.write(join_key(CHANNEL, SUBDIR, STATE_FILE), state.to_bytes(), content_type="application/zstd")

    status = channel_status(memory, CHANNEL, clock=clock)

    subdir = status.to_dict()["subdirs"][SUBDIR]
    assert subdir["published_at"] is None
    assert subdir["lease"]["holder"] == "" and subdir["lease"]["in_force"] is True
    lines = "\n".join(status_commands.status_lines(status))
    assert "published at an unknown time" in lines
    assert "lease: held by owner 0123456789ab until " in lines


def test_status_of_an_unreadable_state_says_so(memory: PollRecorder, clock: FakeClock) -> None:
    memory.write(join_key(CHANNEL, SUBDIR, STATE_FILE), b"garbage", content_type="application/zstd")

    status = channel_status(memory, CHANNEL, clock=clock)

    assert status.to_dict()["subdirs"][SUBDIR]["problem"].startswith("unreadable state")
    assert any("state unreadable" in line for line in status_commands.status_lines(status))


def test_status_of_a_channel_without_subdirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 0
    assert "no subdir folders: nothing indexed yet" in capsys.readouterr().out


def test_status_of_a_missing_folder_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reindexer: error: ") and len(err.strip().splitlines()) == 1


# --- wait: the command on a local folder ------------------------------------------------------------------


def test_wait_for_an_indexed_upload_exits_0_with_one_line(folder: Path, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()

    assert main(["wait", str(folder / SUBDIR / A1)]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == 1 and out.startswith(f"indexed {folder / SUBDIR / A1} (ETag ")


def test_wait_for_a_rejected_upload_exits_1_with_the_reason_on_stderr(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    assert main(["wait", str(folder / SUBDIR / BAD)]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"reindexer: rejected {folder / SUBDIR / BAD}: ") and "zip" in err


def test_wait_for_a_missing_file_exits_1(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["wait", str(folder / SUBDIR / "nope-1.0-h0_0.conda")]) == 1
    assert capsys.readouterr().err.startswith("reindexer: error: no such file: ")


@pytest.mark.parametrize(
    "argument", ["no-subdir.conda", "x/not-a-subdir/a-1.0-h0_0.conda", "x/linux-64/a.txt"]
)
def test_wait_for_something_not_a_package_in_a_subdir_is_a_usage_error(
    argument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wait", argument]) == 2
    assert "TARGET/SUBDIR/FILE" in capsys.readouterr().err


def test_wait_for_an_upload_nobody_indexes_times_out_with_124(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / SUBDIR / NEW).write_bytes(NEW_ARCHIVE)
    clock = FakeClock()
    capsys.readouterr()

    code = status_commands.run_wait(wait_args(str(folder / SUBDIR / NEW), "--timeout", "60"), clock=clock)

    assert code == TIMED_OUT == 124
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("reindexer: timed out after 60 s: ")
    # The backoff starts at --interval (1 s), doubles up to 10 s, and the last pause ends at the deadline.
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 5.0]
    assert sum(clock.slept) == 60.0


def test_wait_with_a_longer_interval_keeps_it(folder: Path) -> None:
    (folder / SUBDIR / NEW).write_bytes(NEW_ARCHIVE)
    clock = FakeClock()
    args = wait_args(str(folder / SUBDIR / NEW), "--timeout", "50", "--interval", "20")
    assert status_commands.run_wait(args, clock=clock) == TIMED_OUT
    assert clock.slept == [20.0, 20.0, 10.0]


@pytest.mark.parametrize("option", [["--timeout", "-1"], ["--interval", "0"], ["--timeout", "nan"]])
def test_wait_refuses_bad_times(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["wait", "x/linux-64/a-1.0-h0_0.conda", *option])
    assert exited.value.code == 2


# --- wait: polling, on MemoryStore ------------------------------------------------------------------------


def test_an_upload_indexed_while_waiting_ends_the_wait_and_polls_are_conditional(
    memory: PollRecorder,
) -> None:
    put(memory, NEW, NEW_ARCHIVE)
    clock = ScriptedClock()
    clock.actions = {4: update(memory, clock, NEW)}  # indexed during the fourth pause
    memory.requests.clear()
    memory.polls.clear()
    memory.plain_reads.clear()

    result = wait_for_upload(SubdirRef(memory, CHANNEL, SUBDIR), NEW, timeout=600, clock=clock)

    assert result.outcome == INDEXED
    assert result.etag == memory.head(join_key(CHANNEL, SUBDIR, NEW)).etag  # type: ignore[union-attr]
    assert result.polls == 5
    assert clock.slept == [1.0, 2.0, 4.0, 8.0]
    # The first poll reads the state; the next three send its ETag and get nothing back (304); the state the
    # update committed is read once.
    first_etag = memory.polls[1][0]
    assert memory.polls[0] == (None, True)
    assert memory.polls[1:4] == [(first_etag, False)] * 3
    assert memory.polls[4] == (first_etag, True)
    # Every poll was conditional: the two plain reads of the state are the update's own (its transaction's,
    # then the channel files', made again from every subdir's state after the commit).
    assert memory.plain_reads.count(join_key(CHANNEL, SUBDIR, STATE_FILE)) == 2


def test_the_waiter_sends_one_head_and_one_get_per_poll(memory: PollRecorder) -> None:
    put(memory, NEW, NEW_ARCHIVE)
    clock = FakeClock()
    memory.requests.clear()

    result = wait_for_upload(SubdirRef(memory, CHANNEL, SUBDIR), NEW, timeout=30, clock=clock)

    assert result.outcome == TIMED_OUT_OUTCOME
    assert result.polls == 7  # at 0, 1, 3, 7, 15, 25 and 30 s
    assert dict(memory.requests) == {"HeadObject": 1, "GetObject": 7}
    assert [transferred for _, transferred in memory.polls] == [True] + [False] * 6


def test_a_re_upload_with_a_new_etag_is_waited_for_anew(memory: PollRecorder) -> None:
    old = memory.head(join_key(CHANNEL, SUBDIR, A1))
    assert old is not None and state_of(memory).packages[A1].etag == old.etag
    new_etag = put(memory, A1, package_bytes(A1, index_json("a", "1.0", license="BSD-3-Clause")))
    assert new_etag != old.etag
    clock = ScriptedClock()
    clock.actions = {2: update(memory, clock, A1)}

    result = wait_for_upload(SubdirRef(memory, CHANNEL, SUBDIR), A1, clock=clock)

    # The state held A1 with its old ETag all along: only the new upload's indexing ends the wait.
    assert result.outcome == INDEXED and result.etag == new_etag
    assert clock.slept == [1.0, 2.0]
    assert state_of(memory).packages[A1].etag == new_etag


def test_a_re_upload_that_is_rejected_ends_the_wait_with_its_reason(memory: PollRecorder) -> None:
    put(memory, A1, b"broken now")
    clock = ScriptedClock()
    clock.actions = {1: update(memory, clock, A1)}

    result = wait_for_upload(SubdirRef(memory, CHANNEL, SUBDIR), A1, clock=clock)

    assert result.outcome == REJECTED
    assert "zip" in result.reason
    assert result.reason == state_of(memory).rejected[A1].reason


def test_the_first_upload_to_a_subdir_never_indexed_is_waited_for(memory: PollRecorder) -> None:
    clock = ScriptedClock()
    name = "w-1.0-h0_0.conda"
    clock.actions = {3: lambda: update_subdir(memory, CHANNEL, "win-64", [name], IndexOptions(clock=clock))}

    result = wait_for_upload(SubdirRef(memory, CHANNEL, "win-64"), name, clock=clock)

    assert result.outcome == REJECTED  # b"later" is no archive: rejected, and said so
    assert result.polls == 4


def test_a_transient_error_while_polling_is_outlived(memory: PollRecorder) -> None:
    memory.fail("GetObject", f"{CHANNEL}/{SUBDIR}/{STATE_FILE}", TransientStoreError("SlowDown"), times=2)
    clock = FakeClock()

    result = wait_for_upload(SubdirRef(memory, CHANNEL, SUBDIR), A1, clock=clock)

    assert result.outcome == INDEXED
    assert result.polls == 3


def test_a_store_that_stays_down_is_named_in_the_timeout_line(
    memory: PollRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    memory.fail("GetObject", f"{CHANNEL}/{SUBDIR}/{STATE_FILE}", TransientStoreError("SlowDown"), times=None)

    code = status_commands.wait_and_report(
        SubdirRef(memory, CHANNEL, SUBDIR), A1, timeout=20, clock=FakeClock()
    )

    assert code == TIMED_OUT
    err = capsys.readouterr().err
    assert "(last error: SlowDown)" in err and len(err.splitlines()) == 1


def test_the_backoff_never_exceeds_its_ceiling(memory: PollRecorder) -> None:
    put(memory, NEW, NEW_ARCHIVE)
    clock = FakeClock()
    wait_for_upload(SubdirRef(memory, CHANNEL, SUBDIR), NEW, timeout=3600, clock=clock)
    assert max(clock.slept) == MAX_INTERVAL
    assert sum(clock.slept) == 3600
