"""A per-subdir lease built on conditional writes: one writer at a time publishes a subdir's outputs.

Protocol (object `<subdir>/.reindexer/lease.json`, body: owner, expiry time, and who holds it for people to
read: the Lambda function's name or the host's, and the process id):
- acquire: create it with `If-None-Match: *`. If it exists and has expired (or cannot be parsed), take it
  over with `If-Match: <its ETag>`; if it is live, wait with jittered backoff and try again.
- hold: a keep-alive thread renews it with `If-Match: <our ETag>` every third of its lifetime; a failed
  renewal marks the lease lost, and a lost lease forbids the commit.
- release: delete it with `If-Match: <our ETag>`, so a lease someone else took over is never removed. A
  store that ignores If-Match on DELETE (Ceph RGW) gets a conditional overwrite marking it expired instead.

Why it is safe: S3 applies each conditional write atomically, so two writers can never both create or take
over the same lease version. Lifetimes exceed the holder's own time limit (a Lambda's timeout), so a holder
cannot outlive its lease unnoticed. The lease orders the writes of outputs; the state is still committed
with compare-and-swap, so even a violated lease cannot lose an update (see publication.commit_state).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .clock import SYSTEM_CLOCK, Clock
from .contract import LEASE_FILE
from .store import (
    ConditionUnsupportedError,
    NotFoundError,
    PreconditionFailedError,
    Store,
    StoreError,
    TransientStoreError,
)
from .subdir_ref import SubdirRef

logger = logging.getLogger(__name__)

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
# Set by Lambda in every function's environment.
FUNCTION_NAME_VARIABLE = "AWS_LAMBDA_FUNCTION_NAME"


def lease_holder() -> str:
    """Who holds the leases this process takes, as `reindexer status` shows it: "function-or-host:pid"."""
    return _holder_of(os.getpid())


@functools.cache
def _holder_of(pid: int) -> str:
    # Keyed by the process id, so a forked worker names itself rather than its parent.
    return f"{os.environ.get(FUNCTION_NAME_VARIABLE) or socket.gethostname()}:{pid}"


@dataclass(frozen=True)
class LeaseBody:
    """A stored lease as people read it (`reindexer status`); leases written before `holder` have ""."""

    owner: str
    expires_at: float
    holder: str = ""

    @classmethod
    def parse(cls, data: bytes) -> LeaseBody | None:
        """None when the body is not a lease (the protocol counts such a lease as expired)."""
        try:
            body = json.loads(data)
            owner, expires_at, holder = body["owner"], float(body["expires_at"]), body.get("holder", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not isinstance(owner, str) or not isinstance(holder, str):
            return None
        return cls(owner, expires_at, holder)


class LeaseBusyError(TransientStoreError):
    """Another indexer held the subdir for longer than we were allowed to wait."""


class LeaseLostError(PreconditionFailedError):
    """Our lease expired or was taken over before we committed."""


@dataclass(frozen=True)
class LeaseTerms:
    """How long a lease lives unless renewed, and how long to wait for a busy one."""

    lifetime: float = 300.0
    wait: float = 900.0


class Lease:
    """The lease on one subdir; use `hold()` as a context manager around the whole update."""

    def __init__(self, subdir: SubdirRef, terms: LeaseTerms, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store: Store = subdir.store
        self.key = subdir.key(LEASE_FILE)
        self.terms = terms
        self.owner = uuid.uuid4().hex
        self.holder = lease_holder()
        self._clock = clock
        self._etag: str | None = None
        self._expires_at = 0.0
        self._lost = False
        self._holder_expiry = 0.0
        self._guard = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[Lease]:
        """Acquire, keep alive while the block runs, then release."""
        self.acquire()
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep_alive, args=(stop,), name="lease-keep-alive", daemon=True)
        keeper.start()
        try:
            yield self
        finally:
            stop.set()
            keeper.join()
            self.release()

    def acquire(self) -> None:
        waited_since = self._clock.monotonic()
        backoff = FIRST_BACKOFF
        while True:
            if self._try_acquire():
                return
            if self._clock.monotonic() - waited_since >= self.terms.wait:
                location = self.store.describe(self.key)
                raise LeaseBusyError(
                    f"{location}: another indexer held the subdir for over {self.terms.wait:.0f} s "
                    f"(its lease runs {self._holder_expiry - self._clock.time():.0f} s more)"
                )
            self._clock.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def check(self) -> None:
        """Raise LeaseLostError unless the lease is still ours with time to spare for a commit."""
        with self._guard:
            if self._lost or self._etag is None or self._clock.time() >= self._expires_at:
                raise LeaseLostError(f"{self.store.describe(self.key)}: lease lost before the commit")

    def renew(self) -> None:
        with self._guard:
            if self._lost or self._etag is None:
                return
            try:
                self._etag, self._expires_at = self._write(if_match=self._etag)
            except (PreconditionFailedError, NotFoundError):
                if not self._reclaim():
                    self._lost = True
                    logger.warning("lost the lease %s to another indexer", self.store.describe(self.key))

    def release(self) -> None:
        with self._guard:
            etag, self._etag = self._etag, None
        if etag is None:
            return
        try:
            try:
                self.store.delete(self.key, if_match=etag)
            except ConditionUnsupportedError:
                # An unconditional delete could remove a lease someone took over meanwhile.
                self._write(if_match=etag, expires_at=0.0)
        except (PreconditionFailedError, NotFoundError):
            pass  # taken over after it expired: it is someone else's now
        except StoreError as error:
            # Harmless beyond a delay: the lease expires on its own.
            logger.warning("could not release %s: %s", self.store.describe(self.key), error)

    def _try_acquire(self) -> bool:
        while True:
            try:
                with self._guard:
                    self._etag, self._expires_at = self._write(if_none_match=True)
                    self._lost = False
                return True
            except PreconditionFailedError:
                pass
            try:
                data, current = self.store.read(self.key)
                break
            except NotFoundError:
                continue  # released between our two requests: try to create it again at once
        if self._owner_of(data) == self.owner:
            # Our own write took effect but its answer was lost, and the retry met our lease.
            with self._guard:
                self._etag, self._expires_at, self._lost = current, self._expiry_of(data), False
            return True
        self._holder_expiry = self._expiry_of(data)
        if self._holder_expiry > self._clock.time():
            return False
        try:
            with self._guard:
                self._etag, self._expires_at = self._write(if_match=current)
                self._lost = False
            logger.info("took over the expired lease %s", self.store.describe(self.key))
            return True
        except (PreconditionFailedError, NotFoundError):
            return False

    def _write(
        self, *, if_match: str | None = None, if_none_match: bool = False, expires_at: float | None = None
    ) -> tuple[str, float]:
        if expires_at is None:
            expires_at = self._clock.time() + self.terms.lifetime
        body = json.dumps({"owner": self.owner, "expires_at": expires_at, "holder": self.holder}).encode()
        etag = self.store.write(
            self.key,
            body,
            content_type="application/json",
            cache_control="no-store",
            if_match=if_match,
            if_none_match=if_none_match,
        )
        return etag, expires_at

    def _keep_alive(self, stop: threading.Event) -> None:
        while not stop.wait(self.terms.lifetime / 3):
            try:
                self.renew()
            except TransientStoreError as error:
                logger.warning("could not renew %s: %s", self.store.describe(self.key), error)

    def _reclaim(self) -> bool:
        """After a failed renewal: is the stored lease still ours (a write whose answer was lost)?"""
        try:
            data, current = self.store.read(self.key)
        except NotFoundError:
            return False
        if self._owner_of(data) != self.owner:
            return False
        self._etag, self._expires_at = current, self._expiry_of(data)
        return True

    @staticmethod
    def _owner_of(data: bytes) -> str | None:
        try:
            owner = json.loads(data)["owner"]
        except (ValueError, KeyError, TypeError):
            return None
        return owner if isinstance(owner, str) else None

    @staticmethod
    def _expiry_of(data: bytes) -> float:
        """Expiry time of a stored lease; an unreadable lease counts as expired."""
        try:
            return float(json.loads(data)["expires_at"])
        except (ValueError, KeyError, TypeError):
            return 0.0
