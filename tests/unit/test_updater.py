"""The event use case (updater.update_subdir) on a local folder with real packages: only the named files
are looked at, duplicates and out-of-order notices converge, and a subdir with a state is never listed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.sample_channel import SamplePackage
from reindexer.contract import REPODATA_JSON, REPODATA_ZST, SHARD_INDEX, STATE_FILE
from reindexer.options import IndexOptions
from reindexer.reports import SubdirReport
from reindexer.state import SubdirState
from reindexer.storage.local import LocalStore
from reindexer.store import StoredObject, TransientStoreError
from reindexer.updater import update_subdir
from tests.support.checks import all_records, decode_msgpack_zst, read_repodata, sha256_hex, zstd_decompress
from tests.support.stores import copy_channel, index_folder, rebuild_package, upload

SUBDIR = "linux-64"
# Held back from the first index: the files "uploaded" after it (one has a '+' in its version).
NEW = "sample-linux64-0001-2.3.4-h0000011_2.tar.bz2"
NEW_PLUS = "sample-linux64-0001-3.9.6+local-h0000015_0.tar.bz2"
KNOWN = "sample-linux64-0000-1.4.8-h0000001_1.tar.bz2"
# Every file of the package name sample-linux64-0000.
NAME_0000 = "sample-linux64-0000"
FILES_0000 = (
    KNOWN,
    "sample-linux64-0000-2.9.2-h0000005_2.tar.bz2",
    "sample-linux64-0000-3.0.1-h0000009_0.tar.bz2",
)
TRACKED = (REPODATA_JSON, REPODATA_ZST, SHARD_INDEX, STATE_FILE)


class Channel:
    """A copy of the sample channel indexed without the held-back files, which wait in `staging`."""

    def __init__(self, root: Path, staging: Path, packages: list[SamplePackage]) -> None:
        self.root = root
        self.staging = staging
        self.packages = {package.filename: package for package in packages}

    @property
    def subdir(self) -> Path:
        return self.root / SUBDIR

    def upload(self, name: str) -> None:
        upload(self.staging / name, self.subdir / name)

    def delete(self, name: str) -> None:
        (self.subdir / name).unlink()

    def records(self) -> dict[str, dict]:
        return all_records(read_repodata(self.subdir))

    def state(self) -> SubdirState:
        return SubdirState.from_bytes((self.subdir / STATE_FILE).read_bytes())

    def shard_names(self) -> set[str]:
        return set(decode_msgpack_zst((self.subdir / SHARD_INDEX).read_bytes())["shards"])

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        """Inode and mtime of the outputs and the state: every write replaces the file, so both change."""
        stats = {name: (self.subdir / name).stat() for name in TRACKED}
        return {name: (stat.st_ino, stat.st_mtime_ns) for name, stat in stats.items()}


@pytest.fixture
def channel(tmp_path: Path, small_channel: tuple[Path, list[SamplePackage]]) -> Channel:
    folder, packages = small_channel
    root = copy_channel(folder, tmp_path / "channel")
    staging = tmp_path / "staging"
    staging.mkdir()
    for name in (NEW, NEW_PLUS):
        (root / SUBDIR / name).rename(staging / name)
    report, _ = index_folder(root)
    assert report.ok
    assert NEW not in all_records(read_repodata(root / SUBDIR))
    return Channel(root, staging, packages)


def channel_files_reads(channel: Channel) -> int:
    """What making the channel files again after a publication reads: the channel state and every subdir's
    state (reindexer.channel_files)."""
    return 1 + sum(1 for path in channel.root.iterdir() if path.is_dir() and not path.name.startswith("."))


def update(store: LocalStore, *names: str) -> SubdirReport:
    report = update_subdir(store, "", SUBDIR, names, IndexOptions(jobs=2))
    assert report.error is None, report.to_dict()
    return report


def assert_record_matches_file(channel: Channel, name: str) -> None:
    record = channel.records()[name]
    data = (channel.subdir / name).read_bytes()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["size"] == len(data)
    assert channel.state().packages[name].size == len(data)


def assert_outputs_agree(channel: Channel) -> None:
    raw = (channel.subdir / REPODATA_JSON).read_bytes()
    assert zstd_decompress((channel.subdir / REPODATA_ZST).read_bytes()) == raw
    records = channel.records()
    assert set(channel.state().packages) == set(records)
    assert channel.shard_names() == {record["name"] for record in records.values()}


# --- new, known, deleted -----------------------------------------------------------------------------


def test_new_file_is_read_with_one_get_and_no_head(channel: Channel) -> None:
    channel.upload(NEW)
    store = LocalStore(channel.root)

    report = update(store, NEW)

    assert report.added == [NEW]
    assert (report.updated, report.removed, report.rejected, report.failed) == ([], [], [], [])
    assert report.written
    assert store.requests["head"] == 0
    # The state and the package, then the channel files' reads.
    assert store.requests["read"] == 2 + channel_files_reads(channel)
    assert report.channel_files is not None and report.channel_files.error is None
    assert store.requests["list"] == 0
    assert_record_matches_file(channel, NEW)
    assert_outputs_agree(channel)


def test_new_file_with_plus_in_its_version_is_indexed(channel: Channel) -> None:
    channel.upload(NEW_PLUS)

    report = update(LocalStore(channel.root), NEW_PLUS)

    assert report.added == [NEW_PLUS]
    assert channel.records()[NEW_PLUS]["version"] == "3.9.6+local"
    assert_record_matches_file(channel, NEW_PLUS)


def test_duplicate_delivery_reads_nothing_but_the_state_and_rewrites_nothing(channel: Channel) -> None:
    channel.upload(NEW)
    update(LocalStore(channel.root), NEW)
    before = channel.fingerprints()
    records = channel.records()
    store = LocalStore(channel.root)

    report = update(store, NEW, KNOWN)

    assert (report.added, report.updated, report.removed) == ([], [], [])
    assert not report.written
    # The state, no package; and the channel state, to see the channel files were made from this state.
    assert store.requests["read"] == 2
    assert report.channel_files is None
    assert store.requests["head"] == 2  # one per named file
    assert store.requests["write"] == 1  # the lease only
    assert store.requests["list"] == 0
    assert channel.fingerprints() == before
    assert channel.records() == records
    assert not (channel.subdir / ".reindexer" / "lease.json").exists()


def test_deleted_file_loses_its_record(channel: Channel) -> None:
    channel.delete(KNOWN)
    store = LocalStore(channel.root)

    report = update(store, KNOWN)

    assert report.removed == [KNOWN]
    assert report.written
    assert KNOWN not in channel.records()
    assert KNOWN not in channel.state().packages
    assert NAME_0000 in channel.shard_names()  # two other files of that name remain
    assert store.requests["list"] == 0
    # The state (the deletion was seen with a HEAD), then the channel files' reads.
    assert store.requests["read"] == 1 + channel_files_reads(channel)
    assert_outputs_agree(channel)


def test_deleting_every_file_of_a_name_drops_its_shard(channel: Channel) -> None:
    for name in FILES_0000:
        channel.delete(name)

    report = update(LocalStore(channel.root), *FILES_0000)

    assert report.removed == sorted(FILES_0000)
    assert NAME_0000 not in channel.shard_names()
    assert NAME_0000 not in channel.state().shards
    assert not any(record["name"] == NAME_0000 for record in channel.records().values())
    assert_outputs_agree(channel)


def test_updater_never_lists_a_subdir_that_has_a_state(channel: Channel) -> None:
    channel.upload(NEW)
    channel.delete(KNOWN)
    (channel.subdir / "broken-1.0-h0_0.tar.bz2").write_bytes(b"not a bzip2 archive")
    store = LocalStore(channel.root)

    report = update(store, NEW, KNOWN, "broken-1.0-h0_0.tar.bz2", "README.conda")

    assert (report.added, report.removed) == ([NEW], [KNOWN])
    assert store.requests["list"] == 0


# --- out-of-order and late notices -------------------------------------------------------------------


def test_delete_notice_processed_while_the_file_exists_ends_indexed(channel: Channel) -> None:
    """Uploaded, deleted, uploaded again: the delete notice arrives first, the bucket says it exists."""
    channel.upload(NEW)
    store = LocalStore(channel.root)

    deleted_notice = update(store, NEW)
    created_notice = update(store, NEW)

    assert deleted_notice.added == [NEW]
    assert (created_notice.added, created_notice.removed, created_notice.written) == ([], [], False)
    assert_record_matches_file(channel, NEW)


def test_create_notice_processed_after_the_file_was_deleted_ends_absent(channel: Channel) -> None:
    """Uploaded then deleted before the create notice was processed: nothing to index, nothing written."""
    before = channel.fingerprints()

    report = update(LocalStore(channel.root), NEW)

    assert (report.added, report.removed, report.failed, report.rejected) == ([], [], [], [])
    assert NEW not in channel.records()
    assert NEW not in channel.state().packages
    assert channel.fingerprints() == before


def test_late_create_notice_of_a_known_file_that_is_gone_removes_it(channel: Channel) -> None:
    channel.delete(KNOWN)

    report = update(LocalStore(channel.root), KNOWN)

    assert report.removed == [KNOWN]
    assert KNOWN not in channel.records()


# --- changed content and bad packages ----------------------------------------------------------------


def test_same_name_reupload_with_new_content_is_reread(channel: Channel, tmp_path: Path) -> None:
    old_sha256 = channel.records()[KNOWN]["sha256"]
    rebuilt = rebuild_package(replace(channel.packages[KNOWN], payload="new content"), tmp_path / "rebuilt")
    upload(rebuilt, channel.subdir / KNOWN)

    report = update(LocalStore(channel.root), KNOWN)

    assert report.updated == [KNOWN]
    assert report.added == []
    new_sha256 = channel.records()[KNOWN]["sha256"]
    assert new_sha256 == sha256_hex(rebuilt.read_bytes()) != old_sha256
    assert_record_matches_file(channel, KNOWN)
    assert_outputs_agree(channel)


def test_bad_package_in_batch_is_rejected_and_the_good_ones_beside_it_are_indexed(channel: Channel) -> None:
    bad = "broken-1.0-h0_0.tar.bz2"
    (channel.subdir / bad).write_bytes(b"not a bzip2 archive")
    (channel.subdir / "README.conda").write_bytes(b"misnamed")
    channel.upload(NEW)
    channel.upload(NEW_PLUS)

    report = update(LocalStore(channel.root), bad, NEW, "README.conda", NEW_PLUS)

    assert report.added == sorted([NEW, NEW_PLUS])
    assert {rejection.file for rejection in report.rejected} == {bad, "README.conda"}
    assert all(rejection.reason for rejection in report.rejected)
    records = channel.records()
    assert NEW in records
    assert NEW_PLUS in records
    assert bad not in records
    assert set(channel.state().rejected) == {bad, "README.conda"}


def test_bad_package_replaced_by_a_good_one_is_indexed(channel: Channel) -> None:
    (channel.subdir / NEW).write_bytes(b"truncated upload")
    store = LocalStore(channel.root)
    first = update(store, NEW)
    assert [rejection.file for rejection in first.rejected] == [NEW]

    channel.upload(NEW)
    second = update(store, NEW)

    assert second.added == [NEW]
    assert NEW not in channel.state().rejected
    assert_record_matches_file(channel, NEW)


def test_known_package_replaced_by_a_bad_one_is_removed_and_rejected(channel: Channel) -> None:
    upload_bytes = channel.staging / "garbage"
    upload_bytes.write_bytes(b"garbage")
    upload(upload_bytes, channel.subdir / KNOWN)

    report = update(LocalStore(channel.root), KNOWN)

    assert report.removed == [KNOWN]
    assert [rejection.file for rejection in report.rejected] == [KNOWN]
    assert KNOWN not in channel.records()


class FlakyStore(LocalStore):
    """Fails to download one key with a transient error, as a throttled or dropped GET does."""

    def __init__(self, root: Path, failing: str) -> None:
        super().__init__(root)
        self.failing = failing

    def download(
        self, key: str, sink: Callable[[bytes], None], *, expect: Callable[[StoredObject], None] | None = None
    ) -> StoredObject:
        if key == self.failing:
            self.requests["read"] += 1
            raise TransientStoreError(f"{key}: SlowDown")
        return super().download(key, sink, expect=expect)


def test_transient_read_failure_of_a_new_file_is_reported_and_the_others_are_indexed(
    channel: Channel,
) -> None:
    channel.upload(NEW)
    channel.upload(NEW_PLUS)

    report = update(FlakyStore(channel.root, f"{SUBDIR}/{NEW}"), NEW, NEW_PLUS)

    assert [failure.file for failure in report.failed] == [NEW]
    assert report.added == [NEW_PLUS]
    assert NEW not in channel.records()
    assert NEW not in channel.state().rejected  # not a verdict on the package: retried later
    assert_record_matches_file(channel, NEW_PLUS)


def test_transient_read_failure_of_a_changed_file_keeps_its_last_good_record(
    channel: Channel, tmp_path: Path
) -> None:
    old_record = channel.records()[KNOWN]
    rebuilt = rebuild_package(replace(channel.packages[KNOWN], payload="new content"), tmp_path / "rebuilt")
    upload(rebuilt, channel.subdir / KNOWN)

    report = update(FlakyStore(channel.root, f"{SUBDIR}/{KNOWN}"), KNOWN)

    assert [failure.file for failure in report.failed] == [KNOWN]
    assert channel.records()[KNOWN] == old_record

    retried = update(LocalStore(channel.root), KNOWN)

    assert retried.updated == [KNOWN]
    assert channel.records()[KNOWN]["sha256"] == sha256_hex(rebuilt.read_bytes())


# --- a subdir without a state ------------------------------------------------------------------------


def test_subdir_without_state_is_bootstrapped_by_a_full_index(
    tmp_path: Path, small_channel: tuple[Path, list[SamplePackage]]
) -> None:
    folder, packages = small_channel
    root = copy_channel(folder, tmp_path / "channel")
    expected = sorted(p.filename for p in packages if p.subdir == SUBDIR)
    store = LocalStore(root)

    report = update(store, expected[0])

    assert report.added == expected  # every file in the folder, not only the one named
    assert store.requests["list"] >= 1
    assert sorted(all_records(read_repodata(root / SUBDIR))) == expected
    assert sorted(SubdirState.from_bytes((root / SUBDIR / STATE_FILE).read_bytes()).packages) == expected
    assert not (root / "osx-arm64" / REPODATA_JSON).exists()  # other subdirs are not touched ...
    assert (root / "noarch" / REPODATA_JSON).exists()  # ... but a new channel gets the noarch clients need

    again = LocalStore(root)
    update(again, expected[0])
    assert again.requests["list"] == 0
