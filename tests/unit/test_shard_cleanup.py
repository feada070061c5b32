"""Shard clean-up (issue 11): full runs delete the shards no shard index has named for the retention, and
only those. Simulated days on a FakeClock over a MemoryStore: uploads through the event path, a nightly full
run with shard_retention = 7 days, operators' yanks, and a writer that crashed after writing a shard."""

from __future__ import annotations

from reindexer.contract import SECONDS_PER_DAY, SHARD_INDEX, SHARDS_FOLDER, STATE_FILE, join_key
from reindexer.indexer import index_channel
from reindexer.operations import unyank, yank
from reindexer.options import IndexOptions
from reindexer.reports import SubdirReport
from reindexer.shards import SHARD_SUFFIX, shard_path
from reindexer.state import SubdirState
from reindexer.storage.memory import MemoryStore
from reindexer.subdir_ref import SubdirRef
from reindexer.updater import update_subdir
from tests.support.archives import index_json, package_bytes
from tests.support.checks import decode_msgpack_zst, sha256_hex
from tests.support.clock import FakeClock

CHANNEL = "ch"
SUBDIR = "linux-64"
DAY = SECONDS_PER_DAY
RETENTION_DAYS = 7
RETENTION = RETENTION_DAYS * DAY
NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
CHANGED_PER_DAY = 2
# Versions of a name kept in the bucket: an upload beyond them deletes the oldest (one event, two names).
KEPT_VERSIONS = 3


def key(name: str) -> str:
    return join_key(CHANNEL, SUBDIR, name)


class Channel:
    """One subdir on a fake clock, watched: every shard deletion is checked when it happens (nobody names
    the shard, it has been unreferenced for the whole retention, and it comes from a full run)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        self.full_options = IndexOptions(clock=self.clock, shard_retention=RETENTION)
        # What the package-event handler passes: no retention.
        self.event_options = IndexOptions(clock=self.clock)
        self.subdir = SubdirRef(self.store, CHANNEL, SUBDIR)
        self.deleted: list[str] = []
        self.reported_deleted = 0
        # Shard files nobody names, by digest: since when the test has seen them so.
        self.unreferenced_since: dict[str, float] = {}
        self._in_full_run = False
        self.store.on("DeleteObject", key(f"{SHARDS_FOLDER}/*"), self._on_delete)

    # --- what the bucket holds ---------------------------------------------------------------------------

    def shard_files(self) -> set[str]:
        prefix = key(SHARDS_FOLDER) + "/"
        return {k[len(prefix) : -len(SHARD_SUFFIX)] for k in self.store.objects if k.startswith(prefix)}

    def named(self) -> dict[str, str]:
        """The shard index's digests by package name (read without counting a request)."""
        index = decode_msgpack_zst(self.store.objects[key(SHARD_INDEX)].data)
        return {name: digest.hex() for name, digest in index["shards"].items()}

    def state(self) -> SubdirState:
        return SubdirState.from_bytes(self.store.objects[key(STATE_FILE)].data)

    # --- what happens to it ------------------------------------------------------------------------------

    def upload(self, *filenames: str, delete: tuple[str, ...] = ()) -> SubdirReport:
        """Uploads (and deletions) announced by one batch of events, applied by the event path."""
        for filename in filenames:
            name, version, _ = filename.rsplit("-", 2)
            data = package_bytes(filename, index_json(name, version))
            self.store.write(key(filename), data, content_type="application/octet-stream")
        for filename in delete:
            self.store.delete(key(filename))
        report = update_subdir(self.store, CHANNEL, SUBDIR, [*filenames, *delete], self.event_options)
        assert report.error is None, report.to_dict()
        self.observe()
        return report

    def full_run(self) -> SubdirReport:
        self._in_full_run = True
        try:
            report = index_channel(self.store, CHANNEL, self.full_options)
        finally:
            self._in_full_run = False
        assert report.ok, report.to_dict()
        subdir = report.subdirs[SUBDIR]
        self.reported_deleted += subdir.shards_deleted
        self.observe()
        return subdir

    def yank(self, filename: str) -> None:
        edit = yank(self.subdir, [filename], "broken", self.event_options)
        assert edit.report is not None and edit.report.written
        self.observe()

    def unyank(self, filename: str) -> None:
        edit = unyank(self.subdir, [filename], self.event_options)
        assert edit.report is not None and edit.report.written
        self.observe()

    def stray_shard(self, content: bytes) -> str:
        """A shard file a writer left before it crashed: written, never named by an index nor tracked."""
        digest = sha256_hex(content)
        self.store.write(key(shard_path(digest)), content, content_type="application/zstd")
        self.observe()
        return digest

    # --- checks ------------------------------------------------------------------------------------------

    def observe(self) -> None:
        """After each step: every shard the index names exists; unreferenced shard files start their time
        (a shard named again loses it)."""
        named = set(self.named().values())
        files = self.shard_files()
        assert named <= files, f"the shard index names missing shards {sorted(named - files)}"
        now = self.clock.time()
        for digest in files - named:
            self.unreferenced_since.setdefault(digest, now)
        for digest in named:
            self.unreferenced_since.pop(digest, None)
        for digest in set(self.unreferenced_since) - files:
            del self.unreferenced_since[digest]

    def _on_delete(self, operation: str, deleted_key: str) -> None:
        digest = deleted_key.rsplit("/", 1)[-1].removesuffix(SHARD_SUFFIX)
        assert self._in_full_run, f"shard {digest} deleted outside a full run"
        assert digest not in self.named().values(), f"shard {digest} deleted while the index names it"
        since = self.unreferenced_since.get(digest)
        assert since is not None, f"shard {digest} deleted before it was seen unreferenced"
        assert self.clock.time() - since >= RETENTION, f"shard {digest} deleted before its retention ended"
        self.deleted.append(digest)

    def next_day(self, hours: float = 0) -> None:
        self.clock.advance(DAY - hours * 3600)


def versions(name: str, count: int) -> list[str]:
    return [f"{name}-1.{number}-h0_0.conda" for number in range(count)]


def seeded() -> Channel:
    """A channel with one version of every name, published by a first full run."""
    channel = Channel()
    for name in NAMES:
        channel.store.write(
            key(f"{name}-1.0-h0_0.conda"),
            package_bytes(f"{name}-1.0-h0_0.conda", index_json(name, "1.0")),
            content_type="application/octet-stream",
        )
    channel.full_run()
    return channel


def test_200_days_of_uploads_and_nightly_full_runs_keep_the_shard_folder_bounded():
    """Protects the bucket's size and its clients: superseded shards go after the retention (so the folder
    stays bounded over months), never earlier (a client holding yesterday's shard index still finds every
    shard it names), and every deletion is counted in the report."""
    channel = seeded()
    uploads: dict[str, list[str]] = {name: [f"{name}-1.0-h0_0.conda"] for name in NAMES}
    bound = len(NAMES) + (RETENTION_DAYS + 1) * CHANGED_PER_DAY
    sizes = []
    for day in range(1, 201):
        channel.clock.advance(10 * 3600)  # uploads during the day
        for number in range(CHANGED_PER_DAY):
            name = NAMES[(day * CHANGED_PER_DAY + number) % len(NAMES)]
            filename = f"{name}-1.{day}-h0_0.conda"
            uploads[name].append(filename)
            oldest = (uploads[name].pop(0),) if len(uploads[name]) > KEPT_VERSIONS else ()
            channel.upload(filename, delete=oldest)
            assert len(channel.shard_files()) <= bound
        channel.clock.advance(14 * 3600)  # the nightly full run
        channel.full_run()
        sizes.append(len(channel.shard_files()))
        assert sizes[-1] <= bound, f"day {day}: {sizes[-1]} shard files"

    assert max(sizes) <= bound
    # Steady state: the current shards and a week of superseded ones, nothing more, nothing less.
    assert sizes[-1] == len(NAMES) + RETENTION_DAYS * CHANGED_PER_DAY
    assert len(channel.deleted) == len(set(channel.deleted)) > 190 * CHANGED_PER_DAY
    assert channel.reported_deleted == len(channel.deleted)
    # The state tracks exactly the unreferenced shard files still there.
    state = channel.state()
    assert set(state.orphans) == channel.shard_files() - set(state.shards.values())


def test_a_shard_named_again_within_the_retention_is_kept():
    """Protects yank then unyank: the shard of the name comes back with the same address, and the nightly
    runs meanwhile (and after) do not delete it."""
    channel = seeded()
    for filename in versions("tool", 2):
        channel.store.write(
            key(filename),
            package_bytes(filename, index_json("tool", filename.split("-")[1])),
            content_type="application/octet-stream",
        )
    channel.full_run()
    before = channel.named()["tool"]

    channel.next_day()
    channel.yank("tool-1.1-h0_0.conda")
    yanked = channel.named()["tool"]
    assert yanked != before
    for _ in range(3):
        channel.next_day()
        channel.full_run()
    channel.unyank("tool-1.1-h0_0.conda")

    assert channel.named()["tool"] == before
    assert before in channel.shard_files()
    for _ in range(3 * RETENTION_DAYS):
        channel.next_day()
        channel.full_run()
    assert before in channel.shard_files()
    assert before not in channel.deleted
    assert yanked in channel.deleted  # unreferenced since the unyank: gone one retention later

    # Dropped again, it gets a whole new retention (not the time it spent orphaned before the unyank).
    channel.yank("tool-1.1-h0_0.conda")
    for _ in range(RETENTION_DAYS - 1):
        channel.next_day()
        channel.full_run()
        assert before in channel.shard_files()
    channel.next_day()
    channel.full_run()
    assert before in channel.deleted
    assert channel.reported_deleted == len(channel.deleted)


def test_a_shard_left_by_a_crashed_writer_is_deleted_one_retention_after_a_full_run_first_sees_it():
    """Protects the bucket from shards nobody tracks (a writer that stopped before its commit): the first
    full run that lists one starts counting, and it goes one retention later, not before."""
    channel = seeded()
    channel.next_day()
    stray = channel.stray_shard(b"a shard whose index was never committed")
    channel.next_day()

    first = channel.full_run()  # first sees it: counting starts now
    assert first.shards_deleted == 0
    assert stray in channel.state().orphans
    seen_at = channel.clock.time()
    for _ in range(RETENTION_DAYS - 1):
        channel.next_day()
        assert channel.full_run().shards_deleted == 0
        assert stray in channel.shard_files()
    channel.clock.advance(DAY - 60)
    assert channel.full_run().shards_deleted == 0  # a minute short of the retention
    channel.clock.advance(60)

    report = channel.full_run()

    assert channel.clock.time() - seen_at == RETENTION
    assert report.shards_deleted == 1
    assert channel.deleted == [stray]
    assert stray not in channel.shard_files()
    assert stray not in channel.state().orphans


def test_the_event_path_never_deletes_and_the_next_full_run_honours_the_times_it_tracked():
    """Protects the event role (it may not delete shards): 30 days of uploads through events alone delete
    nothing; the next full run deletes exactly the shards superseded more than a retention ago."""
    channel = seeded()
    stray = channel.stray_shard(b"left by a crash before the events began")
    superseded_on: dict[str, int] = {}
    for day in range(1, 31):
        channel.next_day()
        for name in NAMES[: CHANGED_PER_DAY + day % 2]:
            before = channel.named()[name]
            channel.upload(f"{name}-1.{day}-h0_0.conda")
            superseded_on[before] = day
    assert channel.deleted == []
    assert set(superseded_on) | {stray} <= channel.shard_files()

    channel.next_day()  # day 31
    report = channel.full_run()

    expired = {digest for digest, day in superseded_on.items() if 31 - day >= RETENTION_DAYS}
    assert set(channel.deleted) == expired
    assert report.shards_deleted == len(expired)
    assert channel.shard_files() == set(channel.named().values()) | (set(superseded_on) - expired) | {stray}
    # The crash's shard was never tracked by the event path: its count starts with this full run.
    assert channel.state().orphans[stray] == channel.clock.time()


def test_a_full_run_without_retention_deletes_nothing():
    """Protects `reindexer index` callers that pass no retention (and the event handler's options)."""
    channel = seeded()
    stray = channel.stray_shard(b"stray")
    for day in range(1, 12):
        channel.next_day()
        channel.upload(f"alpha-1.{day}-h0_0.conda")
        report = index_channel(channel.store, CHANNEL, IndexOptions(clock=channel.clock))
        assert report.ok, report.to_dict()
        assert report.subdirs[SUBDIR].shards_deleted == 0
    assert channel.deleted == []
    assert stray in channel.shard_files()
