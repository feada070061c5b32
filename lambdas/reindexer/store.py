"""The storage interface the indexer works against: list a folder, read, stream, and write conditionally.

Implementations (S3, local folder) live in `reindexer.storage`; the core only sees this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing or a read saw it. The ETag identifies that exact content."""

    key: str
    etag: str
    size: int

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass
class FolderListing:
    """The direct children of a folder: its objects and the names of its sub-folders."""

    objects: list[StoredObject] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


class StoreError(Exception):
    """A storage operation failed; the message is one line fit for a user."""


class NotFoundError(StoreError):
    """The object does not exist."""


class PreconditionFailedError(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class TransientStoreError(StoreError):
    """Worth retrying later: throttling, a 5xx, a timeout, a dropped connection."""


class UnreadableObjectError(StoreError):
    """The object exists but cannot be read with the indexer's credentials: an archived storage class
    (Glacier, Deep Archive) or a customer-provided encryption key (SSE-C). A verdict on the object."""


class ConditionUnsupportedError(StoreError):
    """The store would carry out this conditional request unconditionally (it ignores the condition), so it
    was not sent; the caller must choose a form the store honours."""


class FatalStoreError(StoreError):
    """Nothing can be done with this target: missing bucket or local folder, access denied, endpoint down.

    A missing prefix is not one of these: an empty channel is indexed as such (noarch/repodata.json).
    """


class UnsafeStoreError(FatalStoreError):
    """The store ignores the conditional writes that keep two indexers from overwriting each other."""


class Store(Protocol):
    """What the indexer needs from a storage backend. Keys are '/'-separated and relative to the root."""

    requests: Counter[str]

    def describe(self, key: str) -> str:
        """A user-facing location such as s3://bucket/key or a path."""
        ...

    def list_folder(self, prefix: str) -> FolderListing:
        """Direct children of `prefix` (a folder key without trailing slash; '' for the root)."""
        ...

    def read(self, key: str) -> tuple[bytes, str]:
        """Whole content and ETag of a small object; NotFoundError if absent."""
        ...

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes, str] | None:
        """Content and ETag of a small object unless its ETag is still `etag`: then None, and nothing is
        transferred (a GET with If-None-Match, answered 304 Not Modified). With etag None, a plain read;
        NotFoundError if absent."""
        ...

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        """Stream an object's bytes to `sink` and return what was read (its ETag and size).

        `expect` is shown the object (ETag, size) before its first byte is read; whatever it raises (a
        refusal) propagates and nothing is downloaded.
        """
        ...

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
        """Store `data`; return the new ETag. With if_match / if_none_match the write is conditional and
        raises PreconditionFailedError when the object is not in the expected state."""
        ...

    def head(self, key: str) -> StoredObject | None:
        """ETag and size of an object without reading it; None if absent."""
        ...

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove an object; absent objects are not an error. With if_match, only that exact version
        is removed (PreconditionFailedError otherwise); ConditionUnsupportedError if the store would
        ignore the condition."""
        ...
