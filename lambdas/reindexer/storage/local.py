"""A channel in a local folder behind the Store interface.

ETags are derived from modification time and size, so a no-op run never reads a package; writes are atomic
(temporary file + rename), and conditional writes are checked under an advisory lock.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..store import (
    FatalStoreError,
    FolderListing,
    NotFoundError,
    PreconditionFailedError,
    StoredObject,
    StoreError,
)

DOWNLOAD_CHUNK = 1024 * 1024
LOCK_FILE = ".reindexer.lock"


class LocalStore:
    """A folder on disk as a Store. Keys are paths relative to the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if not root.is_dir():
            raise FatalStoreError(f"{root} is not a folder")
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def list_folder(self, prefix: str) -> FolderListing:
        self._count("list")
        folder = self._path(prefix)
        listing = FolderListing()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except FileNotFoundError:
            return listing
        except OSError as error:
            raise FatalStoreError(f"cannot list {folder}: {error.strerror}") from None
        for entry in entries:
            if entry.is_dir():
                listing.folders.append(entry.name)
            elif entry.is_file() and entry.name != LOCK_FILE and not entry.name.startswith(".tmp-"):
                stat = entry.stat()
                key = f"{prefix.strip('/')}/{entry.name}" if prefix.strip("/") else entry.name
                listing.objects.append(StoredObject(key, _etag(stat), stat.st_size))
        return listing

    def read(self, key: str) -> tuple[bytes, str]:
        self._count("read")
        path = self._path(key)
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                return file.read(), _etag(stat)
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error.strerror}") from None

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes, str] | None:
        """The file's ETag (inode, modification time, size) is compared before a byte of it is read."""
        if etag is None:
            return self.read(key)
        self._count("read")
        path = self._path(key)
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                if _etag(stat) == etag:
                    return None
                return file.read(), _etag(stat)
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error.strerror}") from None

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        self._count("read")
        path = self._path(key)
        try:
            with path.open("rb") as file:
                stat = os.fstat(file.fileno())
                if expect is not None:
                    expect(StoredObject(key, _etag(stat), stat.st_size))
                while chunk := file.read(DOWNLOAD_CHUNK):
                    sink(chunk)
                return StoredObject(key, _etag(stat), stat.st_size)
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error.strerror}") from None

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
        # Content type and cache headers have no meaning on a file system.
        del content_type, cache_control
        self._count("write")
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if if_match is None and not if_none_match:
                return _replace_atomically(path, data)
            with self._exclusive():
                current = _current_etag(path)
                if if_none_match and current is not None:
                    raise PreconditionFailedError(f"{path} already exists")
                if if_match is not None and current != if_match:
                    raise PreconditionFailedError(f"{path} changed since it was read")
                return _replace_atomically(path, data)
        except OSError as error:
            raise StoreError(f"cannot write {path}: {error.strerror}") from None

    def head(self, key: str) -> StoredObject | None:
        self._count("head")
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return StoredObject(key, _etag(stat), stat.st_size)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._count("delete")
        path = self._path(key)
        if if_match is None:
            path.unlink(missing_ok=True)
            return
        with self._exclusive():
            current = _current_etag(path)
            if current is not None and current != if_match:
                raise PreconditionFailedError(f"{path} changed since it was read")
            path.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def _count(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock, open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _etag(stat: os.stat_result) -> str:
    # Every write replaces the file, so the inode tells apart two writes within one clock tick.
    return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"


def _current_etag(path: Path) -> str | None:
    try:
        return _etag(path.stat())
    except FileNotFoundError:
        return None


def _replace_atomically(path: Path, data: bytes) -> str:
    descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            # Readers of the channel (a web server, `file://` clients) need the file world-readable.
            os.fchmod(file.fileno(), 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return _etag(path.stat())
