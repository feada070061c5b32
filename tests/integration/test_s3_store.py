"""S3Store against in-process moto: listings, reads, conditional writes, error mapping, headers, counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage
from reindexer.contract import REPODATA_JSON, REPODATA_ZST, SHARD_INDEX, STATE_FILE
from reindexer.options import IndexOptions, PublishSettings
from reindexer.publication import SHARD_CACHE_CONTROL
from reindexer.storage.s3 import S3Store
from reindexer.store import FatalStoreError, NotFoundError, PreconditionFailedError, UnreadableObjectError
from tests.integration.conftest import MOTO_BUCKET
from tests.support.checks import md5_hex
from tests.support.stores import run_index, s3_store

SmallChannel = tuple[Path, list[SamplePackage]]


def put(store: S3Store, key: str, data: bytes) -> None:
    store.client.put_object(Bucket=MOTO_BUCKET, Key=key, Body=data)


def test_list_folder_returns_direct_children_and_sub_folders(moto_store: S3Store) -> None:
    for key in (
        "top.txt",
        "ch/noarch/a-1-0.conda",
        "ch/noarch/b-1-0.tar.bz2",
        "ch/noarch/shards/abc.msgpack.zst",
        "ch/noarch/.reindexer/state.json.zst",
        "ch/linux-64/c-1-0.conda",
        "chx/noarch/d-1-0.conda",
    ):
        put(moto_store, key, key.encode())

    subdir = moto_store.list_folder("ch/noarch")
    assert sorted(obj.key for obj in subdir.objects) == ["ch/noarch/a-1-0.conda", "ch/noarch/b-1-0.tar.bz2"]
    assert sorted(obj.name for obj in subdir.objects) == ["a-1-0.conda", "b-1-0.tar.bz2"]
    assert sorted(subdir.folders) == [".reindexer", "shards"]
    for obj in subdir.objects:
        assert obj.size == len(obj.key.encode())
        assert obj.etag == md5_hex(obj.key.encode())

    channel = moto_store.list_folder("ch")
    assert channel.objects == []
    assert sorted(channel.folders) == ["linux-64", "noarch"]

    # A trailing slash is the same folder; "ch" must not match the sibling prefix "chx".
    assert sorted(moto_store.list_folder("ch/").folders) == ["linux-64", "noarch"]

    root = moto_store.list_folder("")
    assert [obj.key for obj in root.objects] == ["top.txt"]
    assert sorted(root.folders) == ["ch", "chx"]

    assert moto_store.list_folder("nothing/here").objects == []


def test_list_folder_pages_through_more_than_a_thousand_objects(
    moto_client: Any, moto_store: S3Store
) -> None:
    for number in range(1005):  # in-process: no HTTP round trip per object
        moto_client.put_object(Bucket=MOTO_BUCKET, Key=f"big/noarch/p{number:04d}-1-0.conda", Body=b"x")
    listing = moto_store.list_folder("big/noarch")
    assert len(listing.objects) == 1005
    assert moto_store.requests["ListObjectsV2"] == 2


def test_read_and_download_return_content_and_md5_etag(moto_store: S3Store) -> None:
    data = b"hello conda " * 1000
    put(moto_store, "ch/noarch/file.bin", data)

    content, etag = moto_store.read("ch/noarch/file.bin")
    assert content == data
    assert etag == md5_hex(data)
    assert '"' not in etag

    chunks: list[bytes] = []
    fetched = moto_store.download("ch/noarch/file.bin", chunks.append)
    assert b"".join(chunks) == data
    assert fetched.key == "ch/noarch/file.bin"
    assert fetched.etag == md5_hex(data)
    assert fetched.size == len(data)


def test_write_returns_unquoted_etag_and_sets_headers(moto_store: S3Store) -> None:
    etag = moto_store.write(
        "ch/noarch/out.json", b"{}", content_type="application/json", cache_control="public, max-age=5"
    )
    assert etag == md5_hex(b"{}")
    head = moto_store.client.head_object(Bucket=MOTO_BUCKET, Key="ch/noarch/out.json")
    assert head["ContentType"] == "application/json"
    assert head["CacheControl"] == "public, max-age=5"


def test_write_if_none_match_on_existing_key_fails(moto_store: S3Store) -> None:
    first = moto_store.write("k/state", b"one", content_type="application/zstd", if_none_match=True)
    assert first == md5_hex(b"one")
    with pytest.raises(PreconditionFailedError) as caught:
        moto_store.write("k/state", b"two", content_type="application/zstd", if_none_match=True)
    assert "\n" not in str(caught.value)
    assert moto_store.read("k/state")[0] == b"one"


def test_write_with_stale_if_match_fails_and_current_one_succeeds(moto_store: S3Store) -> None:
    first = moto_store.write("k/state", b"one", content_type="application/zstd")
    second = moto_store.write("k/state", b"two", content_type="application/zstd", if_match=first)
    with pytest.raises(PreconditionFailedError):
        moto_store.write("k/state", b"three", content_type="application/zstd", if_match=first)
    assert moto_store.read("k/state") == (b"two", second)
    moto_store.write("k/state", b"four", content_type="application/zstd", if_match=second)
    assert moto_store.read("k/state")[0] == b"four"


def test_write_with_if_match_on_a_missing_key_fails_as_precondition(moto_store: S3Store) -> None:
    # The Store contract: a conditional write raises PreconditionFailedError when the object is not in
    # the expected state, and a vanished object is not (LocalStore agrees). S3 answers 404 NoSuchKey here.
    etag = moto_store.write("k/state", b"one", content_type="application/zstd")
    moto_store.delete("k/state")
    with pytest.raises(PreconditionFailedError):
        moto_store.write("k/state", b"two", content_type="application/zstd", if_match=etag)


def test_missing_bucket_is_fatal_with_one_line_message(moto_client: object, moto_endpoint: str) -> None:
    store = s3_store("no-such-bucket-here", moto_endpoint)
    with pytest.raises(FatalStoreError) as caught:
        store.list_folder("ch")
    message = str(caught.value)
    assert "no-such-bucket-here" in message
    assert "\n" not in message


def test_missing_key_is_not_found(moto_store: S3Store) -> None:
    with pytest.raises(NotFoundError) as caught:
        moto_store.read("ch/noarch/missing.json")
    assert "s3://channel-bucket/ch/noarch/missing.json" in str(caught.value)
    with pytest.raises(NotFoundError):
        moto_store.download("ch/noarch/missing.conda", lambda chunk: None)


def test_delete_removes_and_tolerates_missing_keys(moto_store: S3Store) -> None:
    put(moto_store, "ch/noarch/x", b"x")
    moto_store.delete("ch/noarch/x")
    moto_store.delete("ch/noarch/x")
    with pytest.raises(NotFoundError):
        moto_store.read("ch/noarch/x")


def test_requests_are_counted_by_operation(moto_store: S3Store) -> None:
    moto_store.write("a/b", b"1", content_type="text/plain")
    moto_store.write("a/c", b"2", content_type="text/plain")
    moto_store.read("a/b")
    moto_store.download("a/c", lambda chunk: None)
    moto_store.list_folder("a")
    with pytest.raises(NotFoundError):
        moto_store.read("a/missing")
    moto_store.delete("a/b")
    assert dict(moto_store.requests) == {
        "PutObject": 2,
        "GetObject": 3,
        "ListObjectsV2": 1,
        "DeleteObject": 1,
    }


def _headers(store: S3Store, key: str) -> tuple[str, str | None]:
    head = store.client.head_object(Bucket=MOTO_BUCKET, Key=key)
    return head["ContentType"], head.get("CacheControl")


def test_index_run_stores_content_type_and_cache_control(
    moto_store: S3Store, small_channel: SmallChannel
) -> None:
    folder, _ = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    run_index(moto_store, "ch")

    for subdir in ("noarch", "linux-64", "osx-arm64", "win-64"):
        prefix = f"ch/{subdir}"
        assert _headers(moto_store, f"{prefix}/{REPODATA_JSON}") == ("application/json", "public, max-age=60")
        assert _headers(moto_store, f"{prefix}/{REPODATA_ZST}") == ("application/zstd", "public, max-age=60")
        assert _headers(moto_store, f"{prefix}/{SHARD_INDEX}") == ("application/zstd", "public, max-age=60")
        shards = moto_store.list_folder(f"{prefix}/shards").objects
        assert shards
        for shard in shards:
            assert _headers(moto_store, shard.key) == ("application/zstd", SHARD_CACHE_CONTROL)
        assert _headers(moto_store, f"{prefix}/{STATE_FILE}")[1] == "no-store"
    assert SHARD_CACHE_CONTROL == "public, max-age=31536000, immutable"

    # A different max-age is a settings change: the next run rewrites the repodata files with it.
    report = run_index(moto_store, "ch", IndexOptions(settings=PublishSettings(repodata_max_age=7)))
    assert all(subdir.written for subdir in report.subdirs.values())
    for name in (REPODATA_JSON, REPODATA_ZST, SHARD_INDEX):
        assert _headers(moto_store, f"ch/linux-64/{name}")[1] == "public, max-age=7"
    shard = moto_store.list_folder("ch/linux-64/shards").objects[0]
    assert _headers(moto_store, shard.key)[1] == SHARD_CACHE_CONTROL


def test_an_archived_object_is_unreadable_not_a_denial(moto_client: Any, moto_store: S3Store) -> None:
    # moto answers a GET of a GLACIER object as S3 does: 403 InvalidObjectState, which is a verdict on that
    # object (the package is rejected with this reason), not an access problem that stops the run.
    moto_client.put_object(
        Bucket=MOTO_BUCKET, Key="ch/noarch/cold-1-0.conda", Body=b"x", StorageClass="GLACIER"
    )
    with pytest.raises(UnreadableObjectError, match="is archived") as caught:
        moto_store.download("ch/noarch/cold-1-0.conda", lambda chunk: None)
    assert "\n" not in str(caught.value)
