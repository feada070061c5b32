"""Indexing a channel on S3: cold and no-op runs, re-uploads, deletions, adopting rattler-index output."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from rattler.index import S3Credentials, index_s3

import reindexer.package_reader
from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage, build_packages
from reindexer.contract import (
    CHANNEL_STATE_FILE,
    REPODATA_JSON,
    REPODATA_ZST,
    SHARD_INDEX,
    STATE_FILE,
    join_key,
)
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.storage.s3 import S3Endpoint, S3Store
from reindexer_cli.embedded_s3 import EmbeddedS3
from tests.integration.conftest import MOTO_BUCKET
from tests.support import archives
from tests.support.checks import all_records, decode_msgpack_zst, md5_hex, sha256_hex, zstd_decompress
from tests.support.stores import (
    CallRecorder,
    get_bytes,
    get_repodata,
    index_ignoring_lease,
    multipart_upload,
    run_index,
    s3_store,
    subdirs_of,
)

SmallChannel = tuple[Path, list[SamplePackage]]
SUBDIRS = ("linux-64", "noarch", "osx-arm64", "win-64")


@pytest.mark.parametrize("channel", ["", "org/dev"], ids=["bucket-root", "nested-prefix"])
def test_cold_run_reads_each_package_once_and_publishes_every_subdir(
    moto_store: S3Store, moto_calls: CallRecorder, small_channel: SmallChannel, channel: str
) -> None:
    folder, packages = small_channel
    files = upload_channel(moto_store.client, MOTO_BUCKET, channel, folder)
    assert len(files) == len(packages) == 24

    report = run_index(moto_store, channel)

    assert sorted(report.subdirs) == sorted(SUBDIRS)
    assert report.target == f"s3://{MOTO_BUCKET}/{channel}"
    assert report.rejected == []
    # Exactly one GET per package and no package HEAD. The only other GETs are the (missing) state files,
    # then the channel files' (the missing channel state, and each subdir's state as committed); the only
    # HEADs check, under the lease, that no one committed a state since the survey.
    assert moto_calls.package_reads() == dict.fromkeys(files, 1)
    states = {join_key(channel, subdir, STATE_FILE) for subdir in SUBDIRS}
    channel_state = join_key(channel, CHANNEL_STATE_FILE)
    assert {key for key in moto_calls.keys("GetObject") if key not in files} == states | {channel_state}
    assert moto_store.requests["GetObject"] == len(files) + 2 * len(SUBDIRS) + 1
    assert set(moto_calls.keys("HeadObject")) == states
    assert report.requests == dict(moto_store.requests)

    for subdir in SUBDIRS:
        sub = report.subdirs[subdir]
        expected = sorted(p.filename for p in packages if p.subdir == subdir)
        assert sub.added == expected
        assert (sub.updated, sub.removed, sub.rejected, sub.failed) == ([], [], [], [])
        assert sub.written
        repodata = get_repodata(moto_store.client, MOTO_BUCKET, channel, subdir)
        assert repodata["info"]["subdir"] == subdir
        assert repodata["repodata_version"] == 1
        records = all_records(repodata)
        assert sorted(records) == expected
        for filename, record in records.items():
            data = files[join_key(channel, subdir, filename)].read_bytes()
            assert record["sha256"] == sha256_hex(data)
            assert record["md5"] == md5_hex(data)
            assert record["size"] == len(data)
            assert record["subdir"] == subdir
        keys = {obj.name for obj in moto_store.list_folder(join_key(channel, subdir)).objects}
        assert {REPODATA_JSON, REPODATA_ZST, SHARD_INDEX} <= keys
    # Nothing was written outside the channel prefix.
    if channel:
        everything = moto_store.client.list_objects_v2(Bucket=MOTO_BUCKET)["Contents"]
        assert all(obj["Key"].startswith(channel + "/") for obj in everything)


def test_noop_rerun_writes_nothing_and_reads_no_package(
    moto_store: S3Store, moto_calls: CallRecorder, small_channel: SmallChannel
) -> None:
    folder, _ = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")
    before = {
        obj["Key"]: obj["ETag"] for obj in moto_store.client.list_objects_v2(Bucket=MOTO_BUCKET)["Contents"]
    }
    moto_calls.clear()

    report = run_index(moto_store, "ch")

    assert moto_store.requests.get("PutObject", 0) == 0
    assert moto_store.requests.get("HeadObject", 0) == 0
    assert moto_store.requests.get("DeleteObject", 0) == 0
    assert moto_calls.package_reads() == {}
    for sub in report.subdirs.values():
        assert not sub.written
        assert (sub.added, sub.updated, sub.removed) == ([], [], [])
        assert sub.unchanged == 6
    after = {
        obj["Key"]: obj["ETag"] for obj in moto_store.client.list_objects_v2(Bucket=MOTO_BUCKET)["Contents"]
    }
    assert after == before


def test_same_name_reupload_with_new_content_is_reread(
    moto_store: S3Store,
    moto_calls: CallRecorder,
    small_channel: SmallChannel,
    tmp_path: Path,
) -> None:
    folder, packages = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")
    target = next(p for p in packages if p.subdir == "linux-64" and p.archive == ".tar.bz2")
    old = get_repodata(moto_store.client, MOTO_BUCKET, "ch", "linux-64")["packages"][target.filename]

    # Same file name, different bytes: what a rebuilt-and-reuploaded package looks like.
    rebuilt = dataclasses.replace(target, payload="rebuilt with other content\n")
    (path,) = build_packages([rebuilt], tmp_path)
    assert path.name == target.filename
    data = path.read_bytes()
    assert sha256_hex(data) != old["sha256"]
    key = f"ch/linux-64/{target.filename}"
    moto_store.client.put_object(Bucket=MOTO_BUCKET, Key=key, Body=data)
    moto_calls.clear()

    report = run_index(moto_store, "ch")

    assert moto_calls.package_reads() == {key: 1}
    assert report.subdirs["linux-64"].updated == [target.filename]
    assert report.subdirs["linux-64"].added == []
    assert report.subdirs["linux-64"].written
    assert not report.subdirs["noarch"].written
    record = get_repodata(moto_store.client, MOTO_BUCKET, "ch", "linux-64")["packages"][target.filename]
    assert record["sha256"] == sha256_hex(data)
    assert record["md5"] == md5_hex(data)
    assert record["size"] == len(data)
    zst = zstd_decompress(get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/{REPODATA_ZST}"))
    assert zst == get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/{REPODATA_JSON}")

    # The shard of that name now carries the new digest.
    index = decode_msgpack_zst(get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/{SHARD_INDEX}"))
    digest = index["shards"][target.name].hex()
    shard = decode_msgpack_zst(
        get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/shards/{digest}.msgpack.zst")
    )
    assert shard["packages"][target.filename]["sha256"] == bytes.fromhex(sha256_hex(data))


def test_deleted_package_is_dropped(
    moto_store: S3Store, moto_calls: CallRecorder, small_channel: SmallChannel
) -> None:
    folder, packages = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")
    target = next(p for p in packages if p.subdir == "osx-arm64")
    moto_store.client.delete_object(Bucket=MOTO_BUCKET, Key=f"ch/{target.key}")
    moto_calls.clear()

    report = run_index(moto_store, "ch")

    assert moto_calls.package_reads() == {}
    assert report.subdirs["osx-arm64"].removed == [target.filename]
    assert report.subdirs["osx-arm64"].written
    records = all_records(get_repodata(moto_store.client, MOTO_BUCKET, "ch", "osx-arm64"))
    assert target.filename not in records
    assert len(records) == 5
    index = decode_msgpack_zst(get_bytes(moto_store.client, MOTO_BUCKET, f"ch/osx-arm64/{SHARD_INDEX}"))
    digest = index["shards"][target.name].hex()
    shard = decode_msgpack_zst(
        get_bytes(moto_store.client, MOTO_BUCKET, f"ch/osx-arm64/shards/{digest}.msgpack.zst")
    )
    assert target.filename not in {**shard["packages"], **shard["packages.conda"]}


def test_empty_bucket_root_gets_an_empty_noarch(moto_store: S3Store) -> None:
    report = run_index(moto_store, "")
    assert sorted(report.subdirs) == ["noarch"]
    repodata = get_repodata(moto_store.client, MOTO_BUCKET, "", "noarch")
    assert repodata["packages"] == {} and repodata["packages.conda"] == {}


def _rattler_index(server: EmbeddedS3, url: str) -> None:
    credentials = S3Credentials(
        server.endpoint_url, "us-east-1", "testing", "testing", addressing_style="path"
    )
    asyncio.run(index_s3(url, credentials=credentials))


def test_adopts_a_channel_indexed_by_rattler_index(
    embedded_s3: EmbeddedS3, http_s3_client: Any, http_bucket: str, small_channel: SmallChannel
) -> None:
    folder, _ = small_channel
    files = upload_channel(http_s3_client, http_bucket, "ch", folder)
    _rattler_index(embedded_s3, f"s3://{http_bucket}/ch")
    rattler_records = {
        subdir: all_records(get_repodata(http_s3_client, http_bucket, "ch", subdir)) for subdir in SUBDIRS
    }
    assert sum(len(records) for records in rattler_records.values()) == len(files)

    store = s3_store(http_bucket, embedded_s3.endpoint_url)
    calls = CallRecorder(store)
    report = run_index(store, "ch")

    # The single-part ETags equal rattler's md5s, so its records are trusted and no package is read.
    assert calls.package_reads() == {}
    assert subdirs_of(files) == set(SUBDIRS)
    for subdir in SUBDIRS:
        sub = report.subdirs[subdir]
        assert sub.written
        assert sub.unchanged == len(rattler_records[subdir])
        assert (sub.added, sub.updated, sub.removed, sub.rejected) == ([], [], [], [])
        ours = all_records(get_repodata(http_s3_client, http_bucket, "ch", subdir))
        assert sorted(ours) == sorted(rattler_records[subdir])
        for filename, record in ours.items():
            assert record["sha256"] == rattler_records[subdir][filename]["sha256"]
            assert record["sha256"] == sha256_hex(files[f"ch/{subdir}/{filename}"].read_bytes())
        zst = get_bytes(http_s3_client, http_bucket, f"ch/{subdir}/{REPODATA_ZST}")
        assert zstd_decompress(zst) == get_bytes(http_s3_client, http_bucket, f"ch/{subdir}/{REPODATA_JSON}")
        head = http_s3_client.head_object(Bucket=http_bucket, Key=f"ch/{subdir}/{REPODATA_JSON}")
        assert head["CacheControl"] == "public, max-age=60"

    calls.clear()
    second = run_index(store, "ch")
    assert store.requests.get("PutObject", 0) == 0
    assert calls.package_reads() == {}
    assert not any(sub.written for sub in second.subdirs.values())


def test_adoption_rereads_packages_whose_etag_is_not_an_md5(
    embedded_s3: EmbeddedS3, http_s3_client: Any, http_bucket: str, small_channel: SmallChannel
) -> None:
    folder, packages = small_channel
    files = upload_channel(http_s3_client, http_bucket, "ch", folder)
    target = next(p for p in packages if p.subdir == "win-64")
    key = f"ch/{target.key}"
    etag = multipart_upload(http_s3_client, http_bucket, key, files[key].read_bytes())
    assert etag.endswith("-1")
    _rattler_index(embedded_s3, f"s3://{http_bucket}/ch")

    store = s3_store(http_bucket, embedded_s3.endpoint_url)
    calls = CallRecorder(store)
    report = run_index(store, "ch")

    # A multipart ETag proves nothing about the content, so that one package is read; the rest is adopted.
    assert calls.package_reads() == {key: 1}
    assert report.subdirs["win-64"].unchanged == 5
    record = get_repodata(http_s3_client, http_bucket, "ch", "win-64")["packages"][target.filename]
    assert record["md5"] == md5_hex(files[key].read_bytes())
    calls.clear()
    run_index(store, "ch")
    assert calls.package_reads() == {}
    assert store.requests.get("PutObject", 0) == 0


def test_outputs_overwritten_by_another_indexer_are_rewritten(
    embedded_s3: EmbeddedS3, http_s3_client: Any, http_bucket: str, small_channel: SmallChannel
) -> None:
    folder, _ = small_channel
    upload_channel(http_s3_client, http_bucket, "ch", folder)
    store = s3_store(http_bucket, embedded_s3.endpoint_url)
    run_index(store, "ch")
    published = {
        subdir: get_bytes(http_s3_client, http_bucket, f"ch/{subdir}/{REPODATA_JSON}") for subdir in SUBDIRS
    }

    # Someone runs rattler-index over the channel: it replaces repodata.json and friends with its own.
    _rattler_index(embedded_s3, f"s3://{http_bucket}/ch")
    for subdir in SUBDIRS:
        assert get_bytes(http_s3_client, http_bucket, f"ch/{subdir}/{REPODATA_JSON}") != published[subdir]

    calls = CallRecorder(store)
    report = run_index(store, "ch")

    # The state's output ETags no longer match: outputs are rewritten from the state, no package is read.
    assert calls.package_reads() == {}
    for subdir in SUBDIRS:
        assert report.subdirs[subdir].written
        assert get_bytes(http_s3_client, http_bucket, f"ch/{subdir}/{REPODATA_JSON}") == published[subdir]
        zst = get_bytes(http_s3_client, http_bucket, f"ch/{subdir}/{REPODATA_ZST}")
        assert zstd_decompress(zst) == published[subdir]
        head = http_s3_client.head_object(Bucket=http_bucket, Key=f"ch/{subdir}/{SHARD_INDEX}")
        assert head["CacheControl"] == "public, max-age=60"


class _RacingStore(S3Store):
    """An S3Store that lets `rival` run once, just before this store's first write of a matching key."""

    def __init__(self, bucket: str, endpoint_url: str, when: str, rival: Any) -> None:
        super().__init__(bucket, S3Endpoint(url=endpoint_url, region="us-east-1", path_style=True))
        self._when = when
        self._rival = rival

    def write(self, key: str, data: bytes, **kwargs: Any) -> str:
        if self._rival is not None and key.endswith(self._when):
            rival, self._rival = self._rival, None
            rival()
        return super().write(key, data, **kwargs)


@pytest.mark.parametrize(
    "when",
    [STATE_FILE, REPODATA_ZST],
    ids=["rival-commits-before-our-commit", "rival-runs-between-our-listing-and-publishing"],
)
def test_concurrent_indexers_converge(
    moto_store: S3Store, small_channel: SmallChannel, tmp_path: Path, when: str
) -> None:
    folder, packages = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")
    late = dataclasses.replace(
        next(p for p in packages if p.subdir == "linux-64"), name="late-arrival", version="1.0"
    )
    (late_path,) = build_packages([late], tmp_path)

    def rival() -> None:
        # A package lands and a writer that takes no lease indexes it and commits first: only the
        # compare-and-swap on the state stands between it and a lost update.
        moto_store.client.put_object(
            Bucket=MOTO_BUCKET, Key=f"ch/linux-64/{late.filename}", Body=late_path.read_bytes()
        )
        index_ignoring_lease(moto_store, "ch", "linux-64")

    # Our run starts from the old listing: it must lose the state commit (412), retry, and converge.
    slow = _RacingStore(MOTO_BUCKET, moto_store.endpoint.url or "", when, rival)
    new = dataclasses.replace(late, name="new-in-our-run")
    (new_path,) = build_packages([new], tmp_path)
    moto_store.client.put_object(
        Bucket=MOTO_BUCKET, Key=f"ch/linux-64/{new.filename}", Body=new_path.read_bytes()
    )
    report = index_channel(slow, "ch", IndexOptions(subdirs=["linux-64"]))

    assert report.ok, report.to_dict()
    assert report.subdirs["linux-64"].attempts == 2
    records = all_records(get_repodata(moto_store.client, MOTO_BUCKET, "ch", "linux-64"))
    assert {late.filename, new.filename} <= set(records)
    assert len(records) == 8
    zst = zstd_decompress(get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/{REPODATA_ZST}"))
    assert zst == get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/{REPODATA_JSON}")
    index = decode_msgpack_zst(get_bytes(moto_store.client, MOTO_BUCKET, f"ch/linux-64/{SHARD_INDEX}"))
    assert {late.name, new.name} <= set(index["shards"])

    # And a further run finds everything in order.
    again = run_index(moto_store, "ch")
    assert moto_store.requests.get("PutObject", 0) == 0
    assert not any(sub.written for sub in again.subdirs.values())


def test_large_multipart_package_is_indexed_with_its_real_digests(moto_store: S3Store) -> None:
    # Bigger than the in-memory spool (so it spills to a temporary file) and uploaded in parts, so its
    # ETag is not an MD5: the record's md5 must come from the bytes, and the ETag still detects no change.
    # Three 8 MiB parts, and more than the spool keeps in memory.
    payload = os.urandom(max(reindexer.package_reader.SPOOL_MEMORY_LIMIT, 16 * 1024 * 1024) + 1024 * 1024)
    filename = "bigpkg-1.0-h0_0.conda"
    data = archives.conda_archive(
        "bigpkg-1.0-h0_0",
        archives.info_members(archives.index_json("bigpkg", subdir="linux-64")),
        {"share/big.bin": payload},
    )
    assert len(data) > reindexer.package_reader.SPOOL_MEMORY_LIMIT
    key = f"ch/linux-64/{filename}"
    etag = multipart_upload(moto_store.client, MOTO_BUCKET, key, data, part_size=8 * 1024 * 1024)
    assert etag.endswith("-3")

    report = run_index(moto_store, "ch")

    assert report.subdirs["linux-64"].added == [filename]
    record = get_repodata(moto_store.client, MOTO_BUCKET, "ch", "linux-64")["packages.conda"][filename]
    assert record["md5"] == md5_hex(data)
    assert record["sha256"] == sha256_hex(data)
    assert record["size"] == len(data)
    calls = CallRecorder(moto_store)
    again = run_index(moto_store, "ch")
    assert calls.package_reads() == {}
    assert not again.subdirs["linux-64"].written


def test_unreadable_state_is_rebuilt_from_published_repodata(
    moto_store: S3Store, moto_calls: CallRecorder, small_channel: SmallChannel
) -> None:
    folder, _ = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")
    published = get_bytes(moto_store.client, MOTO_BUCKET, f"ch/noarch/{REPODATA_JSON}")
    moto_store.client.put_object(Bucket=MOTO_BUCKET, Key=f"ch/noarch/{STATE_FILE}", Body=b"garbage")
    moto_calls.clear()

    report = run_index(moto_store, "ch")

    # Our own repodata.json vouches for every package (ETag = md5): nothing is read, the state is rewritten.
    assert moto_calls.package_reads() == {}
    assert report.subdirs["noarch"].unchanged == 6
    assert get_bytes(moto_store.client, MOTO_BUCKET, f"ch/noarch/{REPODATA_JSON}") == published
    assert moto_calls.keys("PutObject")[f"ch/noarch/{STATE_FILE}"] == 1
    moto_calls.clear()
    again = run_index(moto_store, "ch")
    assert moto_store.requests.get("PutObject", 0) == 0
    assert not any(sub.written for sub in again.subdirs.values())


def test_state_deleted_during_a_run_is_retried(moto_store: S3Store, small_channel: SmallChannel) -> None:
    folder, packages = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")
    victim = next(p for p in packages if p.subdir == "win-64")
    moto_store.client.delete_object(Bucket=MOTO_BUCKET, Key=f"ch/{victim.key}")

    def operator_wipes_state() -> None:
        # Someone deletes the state to force a rebuild while our run is about to commit.
        moto_store.client.delete_object(Bucket=MOTO_BUCKET, Key=f"ch/win-64/{STATE_FILE}")

    racing = _RacingStore(MOTO_BUCKET, moto_store.endpoint.url or "", STATE_FILE, operator_wipes_state)
    report = index_channel(racing, "ch", IndexOptions(subdirs=["win-64"]))

    # The commit's If-Match no longer holds: that is a lost race like any other, to be retried.
    assert report.ok, report.to_dict()
    assert report.subdirs["win-64"].attempts == 2
    records = all_records(get_repodata(moto_store.client, MOTO_BUCKET, "ch", "win-64"))
    assert victim.filename not in records
    assert len(records) == 5


def test_channels_sharing_a_bucket_stay_apart(moto_store: S3Store, small_channel: SmallChannel) -> None:
    folder, packages = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "org/dev", folder)
    upload_channel(moto_store.client, MOTO_BUCKET, "org/dev-old", folder)
    moto_store.client.put_object(Bucket=MOTO_BUCKET, Key="org/dev-old/linux-64/extra-1-0.conda", Body=b"x")

    report = run_index(moto_store, "org/dev")

    assert report.rejected == []
    assert all(sub.rejected == [] for sub in report.subdirs.values())
    records = all_records(get_repodata(moto_store.client, MOTO_BUCKET, "org/dev", "linux-64"))
    assert sorted(records) == sorted(p.filename for p in packages if p.subdir == "linux-64")
    untouched = moto_store.client.list_objects_v2(Bucket=MOTO_BUCKET, Prefix="org/dev-old/")["Contents"]
    assert all(obj["Key"].endswith((".conda", ".tar.bz2")) for obj in untouched)
