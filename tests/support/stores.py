"""Buckets, folders and store wrappers for tests: our S3Store on loopback and the requests it sent, channel
folders to copy and change, the indexer run on either, stores that fail, crash or write without a lease."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from devtools.sample_channel import SamplePackage, build_packages
from reindexer.contract import PACKAGE_SUFFIXES, join_key
from reindexer.indexer import index_channel, index_subdir_locked
from reindexer.lease import Lease
from reindexer.options import IndexOptions
from reindexer.reports import ChannelReport, SubdirReport
from reindexer.storage.local import LocalStore
from reindexer.storage.s3 import S3Endpoint, S3Store
from reindexer.store import FolderListing, Store, StoredObject, TransientStoreError
from reindexer.subdir_ref import SubdirRef

T = TypeVar("T")
KEEP_ALIVE_THREAD = "lease-keep-alive"  # the name reindexer.lease gives its renewal thread

# --- Buckets: our S3Store on a loopback server, and what a boto3 client reads back ----------------------


def s3_store(bucket: str, endpoint_url: str, **options: Any) -> S3Store:
    """Our S3Store on a loopback server (path-style, us-east-1), as the CLI builds it."""
    endpoint = S3Endpoint(url=endpoint_url, region="us-east-1", path_style=True)
    return S3Store(bucket, endpoint, **options)


def is_package_key(key: str | None) -> bool:
    return key is not None and key.endswith(PACKAGE_SUFFIXES)


def subdirs_of(keys: Iterable[str]) -> set[str]:
    """The subdir folder of each `<channel>/<subdir>/<file>` key."""
    return {key.rsplit("/", 2)[-2] for key in keys}


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


def get_bytes(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def get_repodata(client: Any, bucket: str, channel: str, subdir: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        get_bytes(client, bucket, join_key(channel, subdir, "repodata.json"))
    )
    return document


# --- Running the indexer --------------------------------------------------------------------------------


def run_index(store: Store, channel: str, options: IndexOptions | None = None) -> ChannelReport:
    """One index run on any store with fresh request counters; fails the test when any subdir failed."""
    store.requests.clear()
    report = index_channel(store, channel, options or IndexOptions())
    assert report.ok, report.to_dict()
    return report


def index_folder(folder: Path, **options: Any) -> tuple[ChannelReport, LocalStore]:
    """Index a local channel folder with a fresh store (so its request counters start at zero); the report
    may hold failures (the caller checks it) and the store is returned for its counters."""
    store = LocalStore(folder)
    report = index_channel(store, "", IndexOptions(**options))
    return report, store


class IgnoredLease:
    def check(self) -> None:
        """A writer that ignores leases never doubts it may commit."""


def index_ignoring_lease(
    store: Store, channel: str, subdir: str, options: IndexOptions | None = None
) -> SubdirReport:
    """A writer that takes no lease (an older indexer, a hand-run tool): only the state's compare-and-swap
    protects a concurrent update from it, which is what race tests need to exercise."""
    ref = SubdirRef(store, channel, subdir)
    return index_subdir_locked(ref, options or IndexOptions(), cast(Lease, IgnoredLease()))


# --- Folders: a private copy of a channel, changed as uploaders change it -------------------------------


def copy_channel(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def channel_files(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its content, to prove that nothing was written."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def rebuild_package(package: SamplePackage, scratch: Path) -> Path:
    """Build `package` (e.g. with another payload) in a scratch folder and return its path."""
    scratch.mkdir(parents=True, exist_ok=True)
    (path,) = build_packages([package], scratch)
    return path


def upload(source: Path, destination: Path) -> None:
    """Put a file in place the way an uploader does: a new object replaces the old one atomically."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.parent / f"upload-{destination.name}.partial"
    shutil.copyfile(source, temporary)
    os.replace(temporary, destination)


# --- Wrappers for fault injection: transient errors at random, a crash at the N-th write ----------------


class Crash(BaseException):
    """The process was killed: a BaseException, so no `except Exception` or `except StoreError` stops it
    and no cleanup that needs storage can run (every later request raises it too)."""


class StoreWrapper:
    """Passes every call through `_around(operation, key, call)`, which subclasses override."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.requests: Counter[str] = inner.requests

    def _around(self, operation: str, key: str, call: Callable[[], T]) -> T:
        del operation, key
        return call()

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    def list_folder(self, prefix: str) -> FolderListing:
        return self._around("list", prefix, lambda: self.inner.list_folder(prefix))

    def read(self, key: str) -> tuple[bytes, str]:
        return self._around("read", key, lambda: self.inner.read(key))

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes, str] | None:
        return self._around("read", key, lambda: self.inner.read_if_changed(key, etag))

    def download(
        self, key: str, sink: Callable[[bytes], None], *, expect: Callable[[StoredObject], None] | None = None
    ) -> StoredObject:
        return self._around("download", key, lambda: self.inner.download(key, sink, expect=expect))

    def write(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        return self._around(
            "write",
            key,
            lambda: self.inner.write(
                key,
                data,
                content_type=content_type,
                cache_control=cache_control,
                if_match=if_match,
                if_none_match=if_none_match,
            ),
        )

    def head(self, key: str) -> StoredObject | None:
        return self._around("head", key, lambda: self.inner.head(key))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._around("delete", key, lambda: self.inner.delete(key, if_match=if_match))


class FlakyStore(StoreWrapper):
    """Raises TransientStoreError on a random share of requests (seeded, so a failure can be replayed).

    Half of the failed writes and deletes fail *after* taking effect, like a request whose response was
    lost: the caller cannot tell whether its write happened.
    """

    def __init__(self, inner: Store, *, rate: float, seed: int) -> None:
        super().__init__(inner)
        self.rate = rate
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def _draw(self) -> tuple[bool, bool]:
        with self._lock:
            return self._random.random() < self.rate, self._random.random() < 0.5

    def _around(self, operation: str, key: str, call: Callable[[], T]) -> T:
        if not self.enabled:
            return call()
        fail, after = self._draw()
        if not fail:
            return call()
        mutation = operation in ("write", "delete")
        with self._lock:
            self.injected[f"{operation} after" if mutation and after else operation] += 1
        if mutation and after:
            call()
            raise TransientStoreError(
                f"{self.describe(key)}: injected fault after {operation} (response lost)"
            )
        raise TransientStoreError(f"{self.describe(key)}: injected fault on {operation}")


class CrashingStore(StoreWrapper):
    """Counts writes and deletes (the mutations) and dies at mutation number `crash_at` (0-based), before it
    takes effect; from then on every request raises Crash. `crash_at=None` never crashes (a rehearsal).

    The lease keep-alive thread is neither counted nor crashed (its renewals depend on timing); once the
    process is dead its renewals fail with a transient error, which that thread logs and survives.
    """

    def __init__(self, inner: Store, crash_at: int | None) -> None:
        super().__init__(inner)
        self.crash_at = crash_at
        self.mutations: list[str] = []
        self.dead = False
        self._lock = threading.Lock()

    def _around(self, operation: str, key: str, call: Callable[[], T]) -> T:
        keeper = threading.current_thread().name == KEEP_ALIVE_THREAD
        with self._lock:
            if self.dead:
                if keeper:
                    raise TransientStoreError("the process is dead")
                raise Crash(f"{operation} {key} after the crash")
            if operation in ("write", "delete") and not keeper:
                if len(self.mutations) == self.crash_at:
                    self.dead = True
                    raise Crash(f"killed before {operation} {key}")
                self.mutations.append(f"{operation} {key}")
        return call()
