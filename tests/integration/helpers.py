"""Helpers shared by the S3 integration tests: uploads, public-read policies, call recording, decoding."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import msgpack

from reindexer.contract import PACKAGE_SUFFIXES, join_key
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.reports import ChannelReport
from reindexer.storage.s3 import S3Endpoint, S3Store
from tests.common import zstd_decompress


def is_package_key(key: str | None) -> bool:
    return key is not None and key.endswith(PACKAGE_SUFFIXES)


def multipart_upload(client: Any, bucket: str, key: str, data: bytes, part_size: int | None = None) -> str:
    """Upload in parts (one part by default) as large-file uploaders do; return the ETag (not an MD5)."""
    size = part_size or max(1, len(data))
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for number, start in enumerate(range(0, len(data), size), start=1):
        part = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[start : start + size],
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    etag: str = done["ETag"].strip('"')
    return etag


def s3_store(bucket: str, endpoint_url: str, **options: Any) -> S3Store:
    """Our S3Store on a loopback server (path-style, us-east-1), as the CLI builds it."""
    endpoint = S3Endpoint(url=endpoint_url, region="us-east-1", path_style=True)
    return S3Store(bucket, endpoint, **options)


class CallRecorder:
    """Records every S3 request a store sends as (operation, key), once per call (retries excluded)."""

    def __init__(self, store: S3Store) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        store.on_request = self._record

    def _record(self, operation: str, key: str) -> None:
        with self._lock:
            self.calls.append((operation, key))

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def keys(self, operation: str) -> Counter[str]:
        return Counter(key for name, key in self.calls if name == operation and key is not None)

    def package_reads(self) -> Counter[str]:
        return Counter({key: n for key, n in self.keys("GetObject").items() if is_package_key(key)})


def run_index(store: S3Store, channel: str, options: IndexOptions | None = None) -> ChannelReport:
    """One index run with fresh request counters; fails the test when any subdir failed."""
    store.requests.clear()
    report = index_channel(store, channel, options or IndexOptions())
    assert report.ok, report.to_dict()
    return report


def get_bytes(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def get_repodata(client: Any, bucket: str, channel: str, subdir: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        get_bytes(client, bucket, join_key(channel, subdir, "repodata.json"))
    )
    return document


def all_records(repodata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}


def decode_msgpack_zst(data: bytes) -> Any:
    return msgpack.unpackb(zstd_decompress(data), raw=False)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def subdirs_of(keys: Iterable[str]) -> set[str]:
    return {key.rsplit("/", 2)[-2] for key in keys}
