"""A bucket in memory with S3's semantics: MD5 ETags, conditional writes and deletes, keys listed in order.

For deterministic tests of races and crashes: hooks pause or fail a chosen request before or after it takes
effect, and switches model real servers' quirks (Ceph RGW refusing a quoted If-Match and ignoring
If-Match on DELETE; s3rver ignoring every condition). It sees the same probe as a real server would.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..clock import SYSTEM_CLOCK, Clock
from ..store import FolderListing, NotFoundError, PreconditionFailedError, StoredObject, StoreError
from ..store_conditions import ConditionalRequests, ProbedStore, StoreConditions

LIST_PAGE = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class StoreQuirks:
    """How a real server departs from S3 on conditional requests."""

    refuses_quoted_if_match: bool = False  # Ceph RGW 16: If-Match with "quoted" ETag always fails (412)
    ignores_delete_condition: bool = False  # Ceph RGW 16: DELETE If-Match deletes whatever the ETag
    ignores_conditions: bool = False  # s3rver: If-None-Match and If-Match are ignored everywhere


CEPH_LIKE = StoreQuirks(refuses_quoted_if_match=True, ignores_delete_condition=True)
IGNORES_CONDITIONS = StoreQuirks(ignores_conditions=True, ignores_delete_condition=True)


@dataclass
class _Object:
    data: bytes
    etag: str
    content_type: str
    cache_control: str | None


@dataclass
class Hook:
    """Runs `action(operation, key)` when a matching request is made, before it takes effect (or after,
    when `after`: its answer is then lost to the caller if the action raises)."""

    operation: str
    pattern: str
    action: Callable[[str, str], None]
    after: bool = False
    times: int | None = None  # None: every matching request

    def matches(self, operation: str, key: str, after: bool) -> bool:
        return (
            self.after == after
            and self.operation in (operation, "*")
            and fnmatch.fnmatchcase(key, self.pattern)
            and (self.times is None or self.times > 0)
        )


@dataclass
class Pause:
    """A request held at a hook until `release()`; `reached` is set once a request is waiting there."""

    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def hold(self, operation: str, key: str) -> None:
        del operation, key
        self.reached.set()
        if not self.released.wait(timeout=60):
            raise StoreError("a paused request was never released (test timeout)")

    def release(self) -> None:
        self.released.set()

    def wait_reached(self, timeout: float = 30) -> None:
        if not self.reached.wait(timeout):
            raise AssertionError("no request reached the pause")


class MemoryStore(ProbedStore):
    """A bucket as a dictionary. Request names (and counts) are S3's: GetObject, PutObject, ..."""

    def __init__(
        self,
        name: str = "memory",
        *,
        quirks: StoreQuirks | None = None,
        single_writer: bool = False,
        conditions: StoreConditions | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.quirks = quirks or StoreQuirks()
        self.requests: Counter[str] = Counter()
        self.objects: dict[str, _Object] = {}
        self.hooks: list[Hook] = []
        self._lock = threading.RLock()
        self.conditional = ConditionalRequests(
            self, single_writer=single_writer, known=conditions, clock=clock
        )

    # --- hooks -------------------------------------------------------------------------------------------

    def on(
        self,
        operation: str,
        pattern: str,
        action: Callable[[str, str], None],
        *,
        after: bool = False,
        times: int | None = None,
    ) -> Hook:
        """Call `action` on requests of `operation` (an S3 name, or '*') whose key matches the glob."""
        hook = Hook(operation, pattern, action, after, times)
        with self._lock:
            self.hooks.append(hook)
        return hook

    def pause(self, operation: str, pattern: str, *, after: bool = False, times: int | None = 1) -> Pause:
        pause = Pause()
        self.on(operation, pattern, pause.hold, after=after, times=times)
        return pause

    def fail(
        self,
        operation: str,
        pattern: str,
        error: BaseException,
        *,
        after: bool = False,
        times: int | None = 1,
    ) -> Hook:
        def raise_it(operation: str, key: str) -> None:
            del operation, key
            raise error

        return self.on(operation, pattern, raise_it, after=after, times=times)

    # --- the Store interface ---------------------------------------------------------------------------

    def describe(self, key: str) -> str:
        return f"memory://{self.name}/{key}"

    def list_folder(self, prefix: str) -> FolderListing:
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        with self._lock:
            snapshot = {key: stored for key, stored in self.objects.items() if key.startswith(folder)}
        listing = FolderListing()
        # One ListObjectsV2 request per page of keys, as S3 pages them.
        for _ in range(max(1, -(-len(snapshot) // LIST_PAGE))):
            self._request("ListObjectsV2", folder, lambda: None)
        for key in sorted(snapshot):
            rest = key[len(folder) :]
            if "/" in rest:
                sub = rest.split("/", 1)[0]
                if not listing.folders or listing.folders[-1] != sub:
                    listing.folders.append(sub)
                continue
            stored = snapshot[key]
            listing.objects.append(StoredObject(key, stored.etag, len(stored.data)))
        return listing

    def read(self, key: str) -> tuple[bytes, str]:
        stored = self._request("GetObject", key, lambda: self._existing(key))
        return stored.data, stored.etag

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes, str] | None:
        # One GetObject with If-None-Match: S3 answers 304 with no body while the ETag is unchanged.
        stored = self._request("GetObject", key, lambda: self._existing(key))
        if etag is not None and stored.etag == etag:
            return None
        return stored.data, stored.etag

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        stored = self._request("GetObject", key, lambda: self._existing(key))
        found = StoredObject(key, stored.etag, len(stored.data))
        if expect is not None:
            expect(found)
        for start in range(0, len(stored.data), 1024 * 1024):
            sink(stored.data[start : start + 1024 * 1024])
        return found

    def head(self, key: str) -> StoredObject | None:
        def look() -> StoredObject | None:
            stored = self.objects.get(key)
            return None if stored is None else StoredObject(key, stored.etag, len(stored.data))

        return self._request("HeadObject", key, look)

    # --- requests sent exactly as given (store_conditions.ProbeTarget) -----------------------------------

    def delete_as_given(self, key: str, *, if_match: str | None = None) -> None:
        def remove() -> None:
            stored = self.objects.get(key)
            checked = if_match is not None and not (
                self.quirks.ignores_delete_condition or self.quirks.ignores_conditions
            )
            if checked and (stored is None or not self._if_match_holds(if_match or "", stored.etag)):
                raise PreconditionFailedError(f"{self.describe(key)} changed since it was read (412)")
            self.objects.pop(key, None)

        self._request("DeleteObject", key, remove)

    # --- inside ------------------------------------------------------------------------------------------

    def _put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        if_match: str | None,
        if_none_match: bool,
    ) -> str:
        def store() -> str:
            current = self.objects.get(key)
            if not self.quirks.ignores_conditions:
                if if_none_match and current is not None:
                    raise PreconditionFailedError(f"{self.describe(key)} already exists (412)")
                if if_match is not None and (
                    current is None or not self._if_match_holds(if_match, current.etag)
                ):
                    raise PreconditionFailedError(f"{self.describe(key)} changed since it was read (412)")
            etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
            self.objects[key] = _Object(bytes(data), etag, content_type, cache_control)
            return etag

        return self._request("PutObject", key, store)

    def _if_match_holds(self, header: str, etag: str) -> bool:
        if header.startswith('"'):
            return not self.quirks.refuses_quoted_if_match and header == f'"{etag}"'
        return header == etag

    def _existing(self, key: str) -> _Object:
        stored = self.objects.get(key)
        if stored is None:
            raise NotFoundError(f"{self.describe(key)} does not exist")
        return stored

    def _request(self, operation: str, key: str, effect: Callable[[], T]) -> T:
        with self._lock:
            self.requests[operation] += 1
        self._run_hooks(operation, key, after=False)
        with self._lock:
            result = effect()
        self._run_hooks(operation, key, after=True)
        return result

    def _run_hooks(self, operation: str, key: str, *, after: bool) -> None:
        with self._lock:
            due = [hook for hook in self.hooks if hook.matches(operation, key, after)]
            for hook in due:
                if hook.times is not None:
                    hook.times -= 1
        for hook in due:
            hook.action(operation, key)
