"""The indexing use case end to end on a local folder (LocalStore), with real packages from rattler-build."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rattler.index import index_fs

from devtools.sample_channel import SamplePackage, package_files
from reindexer.contract import STATE_FILE
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions, PublishSettings
from reindexer.package_fetch import Gone, read_package
from reindexer.publication import COMMIT_ATTEMPTS
from reindexer.reports import ChannelReport
from reindexer.shards import shard_path
from reindexer.state import IndexedPackage, RejectedFile, SubdirState
from reindexer.storage.local import LocalStore
from reindexer.store import FolderListing, PreconditionFailedError, StoredObject, TransientStoreError
from reindexer.subdir_ref import SubdirRef
from tests.support.checks import all_records, decode_msgpack_zst, read_repodata, sha256_hex, zstd_decompress
from tests.support.stores import (
    channel_files,
    copy_channel,
    index_folder,
    index_ignoring_lease,
    rebuild_package,
    upload,
)

SUBDIRS = ("linux-64", "noarch", "osx-arm64", "win-64")


@pytest.fixture
def channel(tmp_path, small_channel) -> Path:
    """A private copy of the session's sample channel, so a test may change it."""
    folder, _ = small_channel
    return copy_channel(folder, tmp_path / "channel")


@pytest.fixture
def packages(small_channel) -> list[SamplePackage]:
    return small_channel[1]


def reads(store: LocalStore, report: ChannelReport) -> int:
    """The subdir runs' reads: states and packages. Left out, the channel files' own: the channel state, and
    each subdir's state again when the run made the channel files (reindexer.channel_files)."""
    if report.dry_run:  # a dry run leaves the channel files alone
        return store.requests["read"]
    channel_files = 1 + (len(report.subdirs) if report.channel_files is not None else 0)
    return store.requests["read"] - channel_files


def packages_in(folder: Path) -> set[str]:
    return {path.name for path in package_files(folder.parent) if path.parent == folder}


def assert_valid_outputs(subdir_folder: Path, expected_files: set[str]) -> dict[str, dict]:
    """repodata.json lists exactly the expected files with correct digests; .zst and shards agree with it."""
    subdir = subdir_folder.name
    raw = (subdir_folder / "repodata.json").read_bytes()
    repodata = json.loads(raw)
    assert repodata["info"]["subdir"] == subdir
    assert repodata["removed"] == []
    assert all(name.endswith(".tar.bz2") for name in repodata["packages"])
    assert all(name.endswith(".conda") for name in repodata["packages.conda"])
    records = all_records(repodata)
    assert set(records) == expected_files
    for filename, record in records.items():
        data = (subdir_folder / filename).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest(), filename
        assert record["md5"] == hashlib.md5(data).hexdigest(), filename
        assert record["size"] == len(data), filename
        assert record["subdir"] == subdir

    assert zstd_decompress((subdir_folder / "repodata.json.zst").read_bytes()) == raw

    index = decode_msgpack_zst((subdir_folder / "repodata_shards.msgpack.zst").read_bytes())
    assert index["info"]["subdir"] == subdir
    assert index["info"]["shards_base_url"] == "./shards/"
    assert set(index["shards"]) == {record["name"] for record in records.values()}
    from_shards: dict[str, dict] = {}
    for name, digest in index["shards"].items():
        path = subdir_folder / shard_path(digest.hex())
        assert hashlib.sha256(path.read_bytes()).digest() == digest, name
        shard = decode_msgpack_zst(path.read_bytes())
        for filename, entry in {**shard["packages"], **shard["packages.conda"]}.items():
            assert entry["name"] == name
            from_shards[filename] = entry
    assert set(from_shards) == set(records)
    for filename, entry in from_shards.items():
        assert entry["sha256"] == bytes.fromhex(records[filename]["sha256"])
        assert entry["md5"] == bytes.fromhex(records[filename]["md5"])
    return records


# --- cold and no-op runs ------------------------------------------------------------------------------


def test_cold_run_writes_every_output_for_every_subdir(channel, packages):
    report, _ = index_folder(channel)

    assert report.ok
    assert sorted(report.subdirs) == sorted(SUBDIRS)
    for subdir in SUBDIRS:
        expected = {p.filename for p in packages if p.subdir == subdir}
        records = assert_valid_outputs(channel / subdir, expected)
        assert sorted(report.subdirs[subdir].added) == sorted(expected)
        assert report.subdirs[subdir].written
        assert (channel / subdir / STATE_FILE).is_file()
        for package in packages:
            if package.subdir == subdir:
                record = records[package.filename]
                assert record["depends"] == list(package.depends)
                assert record["version"] == package.version


def test_cold_run_writes_an_empty_noarch_index_when_the_folder_is_missing(channel):
    shutil.rmtree(channel / "noarch")

    report, _ = index_folder(channel)

    assert report.ok
    assert "noarch" in report.subdirs
    assert_valid_outputs(channel / "noarch", set())
    assert (channel / "noarch" / STATE_FILE).is_file()


def test_empty_folder_becomes_a_channel_with_noarch(tmp_path):
    report, _ = index_folder(tmp_path)

    assert report.ok
    assert list(report.subdirs) == ["noarch"]
    assert_valid_outputs(tmp_path / "noarch", set())


def test_second_run_writes_nothing_and_reads_no_package(channel):
    index_folder(channel)
    before = channel_files(channel)

    report, store = index_folder(channel)

    assert "write" not in store.requests
    assert reads(store, report) == len(report.subdirs)  # one state read per subdir, no package
    assert channel_files(channel) == before
    for subdir in report.subdirs.values():
        assert not subdir.written
        assert subdir.added == subdir.updated == subdir.removed == []


def test_second_run_after_writing_an_empty_noarch_writes_nothing(tmp_path):
    index_folder(tmp_path)

    _, store = index_folder(tmp_path)

    assert "write" not in store.requests


# --- incremental changes ------------------------------------------------------------------------------


def test_adding_one_package_reads_only_that_package(channel, packages, tmp_path):
    index_folder(channel)
    new = replace(packages[1], version="9.9.9", build="h9999999_0", payload="new")
    upload(rebuild_package(new, tmp_path / "scratch"), channel / new.key)

    report, store = index_folder(channel)

    assert reads(store, report) == len(report.subdirs) + 1
    assert report.subdirs[new.subdir].added == [new.filename]
    expected = {p.filename for p in packages if p.subdir == new.subdir} | {new.filename}
    assert_valid_outputs(channel / new.subdir, expected)


def test_deleting_a_package_drops_its_record(channel, packages):
    index_folder(channel)
    gone = packages[1]
    (channel / gone.key).unlink()

    report, store = index_folder(channel)

    assert reads(store, report) == len(report.subdirs)
    assert report.subdirs[gone.subdir].removed == [gone.filename]
    expected = {p.filename for p in packages if p.subdir == gone.subdir} - {gone.filename}
    assert_valid_outputs(channel / gone.subdir, expected)


def test_deleting_every_file_of_a_name_drops_it_from_the_shard_index(channel, packages):
    index_folder(channel)
    name = packages[1].name
    doomed = [p for p in packages if p.name == name]
    assert len(doomed) > 1
    for package in doomed:
        (channel / package.key).unlink()

    report, _ = index_folder(channel)

    subdir = packages[1].subdir
    assert sorted(report.subdirs[subdir].removed) == sorted(p.filename for p in doomed)
    index = decode_msgpack_zst((channel / subdir / "repodata_shards.msgpack.zst").read_bytes())
    assert name not in index["shards"]
    assert index["shards"]  # the other names are still there
    records = all_records(read_repodata(channel / subdir))
    assert all(record["name"] != name for record in records.values())


@pytest.mark.parametrize("index", [0, 1], ids=["conda", "tar.bz2"])
def test_same_name_reupload_with_new_content_updates_the_record(channel, packages, tmp_path, index):
    index_folder(channel)
    original = packages[index]
    old_sha256 = sha256_hex((channel / original.key).read_bytes())
    rebuilt = rebuild_package(replace(original, payload="different payload, same name"), tmp_path / "scratch")
    assert rebuilt.name == original.filename
    assert sha256_hex(rebuilt.read_bytes()) != old_sha256
    upload(rebuilt, channel / original.key)

    report, store = index_folder(channel)

    assert reads(store, report) == len(report.subdirs) + 1
    assert report.subdirs[original.subdir].updated == [original.filename]
    assert report.subdirs[original.subdir].added == []
    record = all_records(read_repodata(channel / original.subdir))[original.filename]
    assert record["sha256"] == sha256_hex(rebuilt.read_bytes())
    assert_valid_outputs(
        channel / original.subdir, {p.filename for p in packages if p.subdir == original.subdir}
    )


def test_force_reads_every_package_again(channel, packages):
    index_folder(channel)

    report, store = index_folder(channel, force=True)

    assert reads(store, report) == len(report.subdirs) + len(packages)
    assert report.ok


# --- bad files ----------------------------------------------------------------------------------------


def test_bad_package_is_rejected_while_the_good_ones_are_indexed(channel, packages):
    bad = "broken-1.0-h0_0.conda"
    (channel / "linux-64" / bad).write_bytes(b"this is not a zip file")

    report, _ = index_folder(channel)

    assert report.ok
    rejected = {r.file: r.reason for r in report.subdirs["linux-64"].rejected}
    assert list(rejected) == [bad]
    assert "not a valid .conda" in rejected[bad]
    assert "\n" not in rejected[bad]
    assert_valid_outputs(channel / "linux-64", {p.filename for p in packages if p.subdir == "linux-64"})


def test_rejected_package_is_not_read_again_on_the_next_run(channel):
    (channel / "linux-64" / "broken-1.0-h0_0.tar.bz2").write_bytes(b"garbage")
    index_folder(channel)

    report, store = index_folder(channel)

    assert reads(store, report) == len(report.subdirs)
    assert "write" not in store.requests
    assert [r.file for r in report.subdirs["linux-64"].rejected] == ["broken-1.0-h0_0.tar.bz2"]


def test_bad_package_appearing_after_a_run_is_recorded_without_rewriting_outputs(channel):
    index_folder(channel)
    repodata_before = (channel / "linux-64" / "repodata.json").read_bytes()
    (channel / "linux-64" / "broken-1.0-h0_0.tar.bz2").write_bytes(b"garbage")

    report, _ = index_folder(channel)
    assert [r.file for r in report.subdirs["linux-64"].rejected] == ["broken-1.0-h0_0.tar.bz2"]
    assert (channel / "linux-64" / "repodata.json").read_bytes() == repodata_before

    _, store = index_folder(channel)  # the rejection was remembered
    assert "write" not in store.requests


def test_fixed_bad_package_is_indexed_on_the_next_run(channel, packages, tmp_path):
    original = packages[1]
    good = channel / original.key
    kept = tmp_path / "kept"
    shutil.copyfile(good, kept)
    good.write_bytes(b"garbage")
    report, _ = index_folder(channel)
    assert [r.file for r in report.subdirs[original.subdir].rejected] == [original.filename]

    upload(kept, good)
    report, _ = index_folder(channel)

    assert report.subdirs[original.subdir].rejected == []
    assert report.subdirs[original.subdir].added == [original.filename]
    assert original.filename in all_records(read_repodata(channel / original.subdir))


def test_non_package_file_is_rejected_with_a_reason(channel):
    (channel / "linux-64" / "README.md").write_text("hello")
    (channel / "linux-64" / "notes-1.0.conda").write_bytes(b"")

    report, store = index_folder(channel)

    rejected = {r.file: r.reason for r in report.subdirs["linux-64"].rejected}
    assert "not a conda package" in rejected["README.md"]
    assert "<name>-<version>-<build>" in rejected["notes-1.0.conda"]
    assert reads(store, report) == len(report.subdirs) + sum(len(s.added) for s in report.subdirs.values())


def test_empty_package_file_is_rejected(channel):
    (channel / "linux-64" / "empty-1.0-h0_0.tar.bz2").write_bytes(b"")

    report, _ = index_folder(channel)

    rejected = {r.file: r.reason for r in report.subdirs["linux-64"].rejected}
    assert rejected == {"empty-1.0-h0_0.tar.bz2": "empty file (0 bytes)"}


def test_package_in_the_wrong_subdir_folder_is_rejected(channel, packages):
    linux = next(p for p in packages if p.subdir == "linux-64")
    shutil.copyfile(channel / linux.key, channel / "win-64" / linux.filename)

    report, _ = index_folder(channel)

    rejected = {r.file: r.reason for r in report.subdirs["win-64"].rejected}
    assert "says subdir 'linux-64' but the file is in 'win-64'" in rejected[linux.filename]


def test_packages_in_the_channel_root_are_reported_on_the_channel(channel, packages):
    shutil.copyfile(channel / packages[1].key, channel / packages[1].filename)
    (channel / "README.md").write_text("a channel")

    report, _ = index_folder(channel)

    assert report.ok
    assert [(r.file, r.reason) for r in report.rejected] == [
        (packages[1].filename, "not inside a subdir folder")
    ]


def test_packages_in_an_unknown_subdir_folder_are_reported_on_the_channel(channel, packages):
    (channel / "linux-65").mkdir()
    shutil.copyfile(channel / packages[1].key, channel / "linux-65" / packages[1].filename)
    (channel / "linux-65" / "notes.txt").write_text("not a package")
    (channel / "docs").mkdir()
    (channel / "docs" / "index.md").write_text("docs")

    report, _ = index_folder(channel)

    assert report.ok
    assert [(r.file, r.reason) for r in report.rejected] == [
        (f"linux-65/{packages[1].filename}", "'linux-65' is not a known conda subdir")
    ]
    assert "linux-65" not in report.subdirs
    assert not (channel / "linux-65" / "repodata.json").exists()


def test_read_package_of_a_file_that_vanished_reports_it_gone_not_rejected(tmp_path):
    store = LocalStore(tmp_path)

    outcome = read_package(
        store, "linux-64", StoredObject("linux-64/gone-1.0-h0_0.conda", "e", 10), max_size=1024
    )

    assert outcome == Gone()


# --- repairs, settings, adoption ----------------------------------------------------------------------


def delete(path: Path) -> None:
    path.unlink()


def corrupt(path: Path) -> None:
    path.write_bytes(b'{"packages": {}')  # a torn write


@pytest.mark.parametrize("damage", [delete, corrupt], ids=["deleted", "torn"])
@pytest.mark.parametrize("output", ["repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst"])
def test_damaged_output_is_rewritten_on_the_next_run(channel, damage: Callable[[Path], None], output):
    index_folder(channel)
    path = channel / "linux-64" / output
    good = path.read_bytes()
    damage(path)

    report, store = index_folder(channel)

    assert report.subdirs["linux-64"].written
    assert reads(store, report) == len(report.subdirs)  # repaired from the state, no package read
    if output == "repodata_shards.msgpack.zst":
        assert decode_msgpack_zst(path.read_bytes())["shards"] == decode_msgpack_zst(good)["shards"]
    else:
        assert path.read_bytes() == good
    assert_valid_outputs(channel / "linux-64", packages_in(channel / "linux-64"))
    _, store = index_folder(channel)
    assert "write" not in store.requests


def test_unreadable_state_is_rebuilt(channel, packages):
    index_folder(channel)
    (channel / "linux-64" / STATE_FILE).write_bytes(b"garbage")

    report, _ = index_folder(channel)

    assert report.ok
    state = SubdirState.from_bytes((channel / "linux-64" / STATE_FILE).read_bytes())
    assert set(state.packages) == {p.filename for p in packages if p.subdir == "linux-64"}
    _, store = index_folder(channel)
    assert "write" not in store.requests


def test_state_remembers_etags_records_and_outputs(channel):
    index_folder(channel)
    store = LocalStore(channel)
    listing = {obj.name: obj for obj in store.list_folder("linux-64").objects}

    state = SubdirState.from_bytes((channel / "linux-64" / STATE_FILE).read_bytes())

    for filename, package in state.packages.items():
        assert (package.etag, package.size) == (listing[filename].etag, listing[filename].size)
    records = all_records(read_repodata(channel / "linux-64"))
    assert {name: json.loads(text) for name, text in state.records().items()} == records
    for output in ("repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst"):
        assert state.outputs[output] == listing[output].etag


def test_changing_the_base_url_rewrites_the_outputs(channel):
    index_folder(channel)

    report, store = index_folder(channel, settings=PublishSettings(base_url="https://cdn.example.org/chan"))

    assert all(subdir.written for subdir in report.subdirs.values())
    assert reads(store, report) == len(report.subdirs)
    repodata = read_repodata(channel / "linux-64")
    assert repodata["info"]["base_url"] == "https://cdn.example.org/chan/linux-64/"
    assert repodata["repodata_version"] == 2


def test_run_after_rattler_index_keeps_every_package_and_writes_valid_outputs(channel, packages):
    asyncio.run(index_fs(channel))
    assert (channel / "linux-64" / "repodata.json").is_file()

    report, _ = index_folder(channel)

    assert report.ok
    assert report.rejected == []
    for subdir in SUBDIRS:
        assert report.subdirs[subdir].rejected == []
        assert_valid_outputs(channel / subdir, {p.filename for p in packages if p.subdir == subdir})
    _, store = index_folder(channel)
    assert "write" not in store.requests


class Md5EtagStore(LocalStore):
    """A LocalStore whose package ETags are the MD5 of their bytes, as S3 gives for single-part uploads."""

    def list_folder(self, prefix: str) -> FolderListing:
        listing = super().list_folder(prefix)
        listing.objects = [self._md5_etag(obj) for obj in listing.objects]
        return listing

    def download(
        self, key: str, sink: Callable[[bytes], None], *, expect: Callable[[StoredObject], None] | None = None
    ) -> StoredObject:
        return self._md5_etag(super().download(key, sink, expect=expect))

    def _md5_etag(self, obj: StoredObject) -> StoredObject:
        if not obj.name.endswith((".conda", ".tar.bz2")):
            return obj
        etag = hashlib.md5(self._path(obj.key).read_bytes()).hexdigest()
        return StoredObject(obj.key, etag, obj.size)


def test_records_of_another_indexer_are_adopted_when_etags_prove_them(channel, packages):
    asyncio.run(index_fs(channel))
    rattler_records = {subdir: all_records(read_repodata(channel / subdir)) for subdir in SUBDIRS}
    store = Md5EtagStore(channel)

    report = index_channel(store, "", IndexOptions())

    assert report.ok
    # Per subdir: the missing state and rattler's repodata.json are read; no package is.
    assert reads(store, report) == 2 * len(report.subdirs)
    for subdir in SUBDIRS:
        assert report.subdirs[subdir].unchanged == len(rattler_records[subdir])
        records = assert_valid_outputs(channel / subdir, {p.filename for p in packages if p.subdir == subdir})
        for filename, record in records.items():
            assert record["sha256"] == rattler_records[subdir][filename]["sha256"]


# --- dry runs and subdir selection --------------------------------------------------------------------


def test_dry_run_writes_nothing_and_reports_planned_additions(channel, packages):
    before = channel_files(channel)

    report, store = index_folder(channel, dry_run=True)

    assert report.dry_run
    assert "write" not in store.requests
    assert channel_files(channel) == before
    for subdir in SUBDIRS:
        assert sorted(report.subdirs[subdir].added) == sorted(
            p.filename for p in packages if p.subdir == subdir
        )


def test_dry_run_reports_planned_removals_and_reads_no_package(channel, packages):
    index_folder(channel)
    (channel / packages[1].key).unlink()
    before = channel_files(channel)

    report, store = index_folder(channel, dry_run=True)

    assert report.subdirs[packages[1].subdir].removed == [packages[1].filename]
    assert "write" not in store.requests
    assert reads(store, report) == len(report.subdirs)
    assert channel_files(channel) == before


def test_subdir_option_restricts_the_run_to_that_subdir_and_noarch(channel):
    report, _ = index_folder(channel, subdirs=["linux-64"])

    assert sorted(report.subdirs) == ["linux-64", "noarch"]
    assert (channel / "linux-64" / "repodata.json").is_file()
    assert (channel / "noarch" / "repodata.json").is_file()
    assert not (channel / "osx-arm64" / "repodata.json").exists()
    assert not (channel / "win-64" / "repodata.json").exists()


def test_nested_channel_prefix_is_indexed_in_place(tmp_path, small_channel, packages):
    copy_channel(small_channel[0], tmp_path / "org" / "dev")
    store = LocalStore(tmp_path)
    report = index_channel(store, "org/dev", IndexOptions())

    assert report.ok
    assert_valid_outputs(
        tmp_path / "org" / "dev" / "linux-64", {p.filename for p in packages if p.subdir == "linux-64"}
    )
    assert not (tmp_path / "linux-64").exists()


def test_state_tracks_rejections_with_their_etag(channel):
    (channel / "linux-64" / "broken-1.0-h0_0.conda").write_bytes(b"garbage")
    index_folder(channel)

    state = SubdirState.from_bytes((channel / "linux-64" / STATE_FILE).read_bytes())

    rejected = state.rejected["broken-1.0-h0_0.conda"]
    assert isinstance(rejected, RejectedFile)
    assert rejected.size == len(b"garbage")
    assert all(isinstance(p, IndexedPackage) for p in state.packages.values())


def test_good_package_replaced_by_a_bad_file_leaves_the_index(channel, packages):
    index_folder(channel)
    victim = packages[1]
    (channel / victim.key).write_bytes(b"garbage")

    report, _ = index_folder(channel)

    assert [r.file for r in report.subdirs[victim.subdir].rejected] == [victim.filename]
    assert victim.filename not in all_records(read_repodata(channel / victim.subdir))
    assert_valid_outputs(channel / victim.subdir, packages_in(channel / victim.subdir) - {victim.filename})


# --- failures and concurrent indexers -----------------------------------------------------------------


class FlakyDownloadStore(LocalStore):
    """Fails every download of the named files, as a dropped connection would."""

    def __init__(self, root: Path, failing: set[str]) -> None:
        super().__init__(root)
        self.failing = failing

    def download(
        self, key: str, sink: Callable[[bytes], None], *, expect: Callable[[StoredObject], None] | None = None
    ) -> StoredObject:
        if key.rsplit("/", 1)[-1] in self.failing:
            self._count("read")
            raise TransientStoreError(f"connection reset while reading {key}")
        return super().download(key, sink, expect=expect)


def test_package_that_cannot_be_fetched_is_reported_and_read_on_the_next_run(channel, packages):
    flaky = packages[1]

    report = index_channel(FlakyDownloadStore(channel, {flaky.filename}), "", IndexOptions())

    subdir = report.subdirs[flaky.subdir]
    assert report.ok
    assert [f.file for f in subdir.failed] == [flaky.filename]
    assert flaky.filename not in subdir.added
    assert subdir.rejected == []
    assert flaky.filename not in all_records(read_repodata(channel / flaky.subdir))

    report, store = index_folder(channel)

    assert report.subdirs[flaky.subdir].added == [flaky.filename]
    assert reads(store, report) == len(report.subdirs) + 1
    assert_valid_outputs(channel / flaky.subdir, packages_in(channel / flaky.subdir))


def test_known_package_that_cannot_be_fetched_keeps_its_last_record(channel, packages, tmp_path):
    index_folder(channel)
    original = packages[1]
    old_record = all_records(read_repodata(channel / original.subdir))[original.filename]
    upload(rebuild_package(replace(original, payload="v2"), tmp_path / "scratch"), channel / original.key)

    report = index_channel(FlakyDownloadStore(channel, {original.filename}), "", IndexOptions())

    assert [f.file for f in report.subdirs[original.subdir].failed] == [original.filename]
    assert all_records(read_repodata(channel / original.subdir))[original.filename] == old_record

    report, _ = index_folder(channel)  # fetchable again: the new content is read

    assert report.subdirs[original.subdir].updated == [original.filename]
    assert all_records(read_repodata(channel / original.subdir))[original.filename]["sha256"] == sha256_hex(
        (channel / original.key).read_bytes()
    )


class RacingStore(LocalStore):
    """Lets a lease-ignoring indexer run to completion just before this one commits its first state."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.raced = False

    def write(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key.endswith(STATE_FILE) and not self.raced:
            self.raced = True
            subdir = key.split("/", maxsplit=1)[0]
            rival = index_ignoring_lease(LocalStore(self.root), "", subdir)
            assert rival.error is None
        return super().write(key, data, **kwargs)


def test_commit_that_loses_a_race_is_retried_and_converges(channel, packages):
    store = RacingStore(channel)

    report = index_channel(store, "", IndexOptions())

    assert store.raced
    assert report.ok
    assert report.subdirs["linux-64"].attempts == 2
    for subdir in SUBDIRS:
        assert_valid_outputs(channel / subdir, {p.filename for p in packages if p.subdir == subdir})
    _, second = index_folder(channel)
    assert "write" not in second.requests


class AlwaysLosingStore(LocalStore):
    def write(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key.endswith(STATE_FILE):
            self._count("write")
            raise PreconditionFailedError(f"{key} changed since it was read")
        return super().write(key, data, **kwargs)


def test_subdir_that_keeps_losing_races_is_reported_as_failed(channel):
    report = index_channel(AlwaysLosingStore(channel), "", IndexOptions(subdirs=["linux-64"]))

    assert not report.ok
    assert report.subdirs["linux-64"].attempts == COMMIT_ATTEMPTS
    assert "conflicting updates" in (report.subdirs["linux-64"].error or "")


def test_a_crash_in_one_subdir_costs_that_subdir_only(channel, monkeypatch):
    import reindexer.indexer

    original = reindexer.indexer.index_subdir

    def crash_in_win(subdir: SubdirRef, options: IndexOptions, *more: Any) -> Any:
        if subdir.name == "win-64":
            raise RecursionError("deep\nand multi-line")
        return original(subdir, options, *more)

    monkeypatch.setattr(reindexer.indexer, "index_subdir", crash_in_win)
    report, _ = index_folder(channel)

    assert report.subdirs["win-64"].error == "unexpected RecursionError: deep and multi-line"
    assert not report.ok
    assert all(report.subdirs[name].error is None for name in SUBDIRS if name != "win-64")
    assert (channel / "linux-64" / "repodata.json").is_file()
