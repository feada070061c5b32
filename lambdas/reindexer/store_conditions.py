"""What an S3-compatible store honours of conditional requests, found by probing a scratch key once per
bucket (the answer is kept on the store and in a small object), and how writes adapt to it.

Real servers differ: AWS and SeaweedFS honour everything; Ceph RGW refuses If-Match with the ETag quoted as
S3 returns it (the unquoted form works) and ignores If-Match on DELETE; s3rver ignores every condition.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from .clock import SYSTEM_CLOCK, Clock
from .contract import PROBE_KEY_PREFIX, STORE_CONDITIONS_KEY
from .store import (
    ConditionUnsupportedError,
    NotFoundError,
    PreconditionFailedError,
    StoredObject,
    StoreError,
    UnsafeStoreError,
)

logger = logging.getLogger(__name__)

# A store can be upgraded or replaced behind the same endpoint: probe again now and then.
REPROBE_AFTER_SECONDS = 7 * 24 * 3600.0
QUOTED = "quoted"
UNQUOTED = "unquoted"
IF_MATCH_FORMS = (QUOTED, UNQUOTED)
# An ETag no object has: sent as a stale If-Match, it must be refused.
STALE_ETAG = "0" * 32
SINGLE_WRITER_HINT = "pass --single-writer only if no other indexer ever writes this channel"


@dataclass(frozen=True)
class StoreConditions:
    """The conditional requests a store honours, as a probe found them."""

    create_only: bool  # PutObject If-None-Match: * refuses an existing key
    if_match: str | None  # the If-Match form PutObject honours (QUOTED, UNQUOTED), None if ignored
    conditional_delete: bool  # DeleteObject If-Match refuses a stale ETag
    probed_at: float = 0.0

    @classmethod
    def all_honoured(cls) -> StoreConditions:
        return cls(create_only=True, if_match=QUOTED, conditional_delete=True)

    @property
    def safe_for_many_writers(self) -> bool:
        return self.create_only and self.if_match is not None

    def limitation(self) -> str | None:
        """One line naming what is missing for two indexers to work safely at once; None if nothing."""
        missing = []
        if not self.create_only:
            missing.append("If-None-Match: * (create only)")
        if self.if_match is None:
            missing.append("If-Match (replace only the version read)")
        if not missing:
            return None
        return f"ignores {' and '.join(missing)} on PUT, so two indexers could overwrite each other's index"

    def summary(self) -> str:
        return (
            f"create-only PUT {'honoured' if self.create_only else 'ignored'}; "
            f"If-Match PUT {self.if_match + ' ETag' if self.if_match else 'ignored'}; "
            f"If-Match DELETE {'honoured' if self.conditional_delete else 'ignored'}"
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "safe_for_many_writers": self.safe_for_many_writers}

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StoreConditions | None:
        """The conditions a cached object records; None if it is not exactly what `to_bytes` writes."""
        try:
            fields = json.loads(data)
        except ValueError:
            return None
        if not isinstance(fields, dict) or set(fields) != {
            "create_only",
            "if_match",
            "conditional_delete",
            "probed_at",
        }:
            return None
        flags = (fields["create_only"], fields["conditional_delete"])
        if not all(isinstance(flag, bool) for flag in flags):
            return None
        if fields["if_match"] not in (*IF_MATCH_FORMS, None):
            return None
        probed_at = fields["probed_at"]
        if isinstance(probed_at, bool) or not isinstance(probed_at, int | float):
            return None
        return cls(fields["create_only"], fields["if_match"], fields["conditional_delete"], float(probed_at))


class ProbeTarget(Protocol):
    """Requests sent exactly as given (the If-Match header verbatim): what a probe needs from a store."""

    def describe(self, key: str) -> str: ...

    def head(self, key: str) -> StoredObject | None: ...

    def read(self, key: str) -> tuple[bytes, str]: ...

    def put_as_given(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """PUT with this If-Match header value (verbatim) or If-None-Match: *; the new ETag, unquoted.
        PreconditionFailedError if the store refused the condition."""
        ...

    def delete_as_given(self, key: str, *, if_match: str | None = None) -> None:
        """DELETE with this If-Match header value (verbatim); PreconditionFailedError if refused."""
        ...


def in_form(etag: str, form: str) -> str:
    return f'"{etag}"' if form == QUOTED else etag


def probe_conditions(target: ProbeTarget, *, clock: Clock = SYSTEM_CLOCK) -> StoreConditions:
    """Find out with a few requests on a fresh scratch key what the store honours; the key is removed."""
    key = f"{PROBE_KEY_PREFIX}{uuid.uuid4().hex}"
    try:
        target.put_as_given(key, b"created", if_none_match=True)
        create_only = _refused(lambda: target.put_as_given(key, b"created again", if_none_match=True))
        if_match = None
        for form in IF_MATCH_FORMS:
            current = _etag_of(target, key)
            try:
                target.put_as_given(key, b"replaced", if_match=in_form(current, form))
            except PreconditionFailedError:
                continue  # this form is refused even when it matches
            if _refused(
                functools.partial(target.put_as_given, key, b"x", if_match=in_form(STALE_ETAG, form))
            ):
                if_match = form
            break  # a matching form was accepted: the other form would only be ignored the same way
        stale_delete = functools.partial(
            target.delete_as_given, key, if_match=in_form(STALE_ETAG, if_match or QUOTED)
        )
        refused = _refused(stale_delete)
        conditional_delete = refused and target.head(key) is not None
    finally:
        try:
            target.delete_as_given(key)
        except StoreError as error:
            logger.warning("could not remove the probe object %s: %s", target.describe(key), error)
    return StoreConditions(create_only, if_match, conditional_delete, round(clock.time(), 3))


def _refused(request: Callable[[], object]) -> bool:
    try:
        request()
    except PreconditionFailedError:
        return True
    except StoreError as error:
        # e.g. 501 NotImplemented for a header the server does not know: not honoured either.
        logger.info("conditional request failed rather than being refused: %s", error)
        return False
    return False


def _etag_of(target: ProbeTarget, key: str) -> str:
    found = target.head(key)
    if found is None:
        raise StoreError(f"{target.describe(key)} vanished while probing the store's conditional requests")
    return found.etag


class ConditionalRequests:
    """How one store sends conditions: what the bucket honours is learnt before the first conditional
    request (from the cached object, else by a probe) and the conditions are sent in the form it accepts.

    A store that ignores conditional writes is refused, unless `single_writer` says that no other indexer
    ever writes the channel; then writes go out unconditionally, as that store would treat them anyway.
    """

    def __init__(
        self,
        target: ProbeTarget,
        *,
        single_writer: bool = False,
        known: StoreConditions | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._target = target
        self.single_writer = single_writer
        self._known = known
        self._clock = clock
        self._lock = threading.Lock()

    def conditions(self) -> StoreConditions:
        with self._lock:
            if self._known is None:
                self._known = self._cached() or self._probe()
            return self._known

    def reprobe(self) -> StoreConditions:
        """Probe now whatever is cached, and cache the answer."""
        with self._lock:
            self._known = self._probe()
            return self._known

    def put_conditions(self, key: str, if_match: str | None, if_none_match: bool) -> tuple[str | None, bool]:
        """The If-Match header value and If-None-Match flag to send for a conditional PUT."""
        if if_match is None and not if_none_match:
            return None, False
        conditions = self.conditions()
        if conditions.safe_for_many_writers:
            assert conditions.if_match is not None
            return (in_form(if_match, conditions.if_match) if if_match is not None else None), if_none_match
        if self.single_writer:
            return None, False
        where = self._target.describe("").rstrip("/")
        raise UnsafeStoreError(f"{where} {conditions.limitation()}; refusing to write ({SINGLE_WRITER_HINT})")

    def delete_condition(self, key: str, if_match: str | None) -> str | None:
        """The If-Match header value for a conditional DELETE; ConditionUnsupportedError if the store would
        delete unconditionally (and more than one writer may be about)."""
        if if_match is None:
            return None
        conditions = self.conditions()
        if conditions.conditional_delete:
            return in_form(if_match, conditions.if_match or QUOTED)
        if self.single_writer and not conditions.safe_for_many_writers:
            return None
        raise ConditionUnsupportedError(f"{self._target.describe(key)}: the store ignores If-Match on DELETE")

    def _cached(self) -> StoreConditions | None:
        try:
            data, _ = self._target.read(STORE_CONDITIONS_KEY)
        except NotFoundError:
            return None
        except StoreError as error:
            logger.info("cannot read %s: %s", self._target.describe(STORE_CONDITIONS_KEY), error)
            return None
        cached = StoreConditions.from_bytes(data)
        if cached is None or self._clock.time() - cached.probed_at > REPROBE_AFTER_SECONDS:
            return None
        return cached

    def _probe(self) -> StoreConditions:
        try:
            found = probe_conditions(self._target, clock=self._clock)
        except StoreError as error:
            raise type(error)(f"cannot probe the store's conditional requests: {error}") from None
        logger.info("%s: %s", self._target.describe(""), found.summary())
        try:
            self._target.put_as_given(STORE_CONDITIONS_KEY, found.to_bytes())
        except StoreError as error:
            logger.warning(
                "cannot cache the probe's answer in %s: %s",
                self._target.describe(STORE_CONDITIONS_KEY),
                error,
            )
        return found


class ProbedStore(ABC):
    """A store whose conditional requests go out as its bucket honours them: implementations send
    requests as given (`_put`, `delete_as_given`); writes and deletes through the Store interface are
    adapted by `conditional` on the way."""

    conditional: ConditionalRequests

    def describe(self, key: str) -> str:
        raise NotImplementedError

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
        header, create_only = self.conditional.put_conditions(key, if_match, if_none_match)
        return self._put(key, data, content_type, cache_control, header, create_only)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.delete_as_given(key, if_match=self.conditional.delete_condition(key, if_match))

    def put_as_given(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        return self._put(key, data, "application/json", "no-store", if_match, if_none_match)

    @abstractmethod
    def delete_as_given(self, key: str, *, if_match: str | None = None) -> None:
        """DELETE with this If-Match header value, verbatim; PreconditionFailedError if refused."""

    @abstractmethod
    def _put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        if_match: str | None,
        if_none_match: bool,
    ) -> str:
        """PUT with this If-Match header value (verbatim) or If-None-Match: *; the new ETag, unquoted."""
