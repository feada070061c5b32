"""Store wrappers for fault injection: transient errors at random, and a crash at the N-th write."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from reindexer.store import FolderListing, Store, StoredObject, TransientStoreError

T = TypeVar("T")
KEEP_ALIVE_THREAD = "lease-keep-alive"  # the name reindexer.lease gives its renewal thread


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
