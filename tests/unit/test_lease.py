"""The per-subdir lease on a local folder, with a fake clock (no real waiting: sleeps only move its time)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from reindexer.lease import (
    LEASE_FILE,
    MAX_BACKOFF,
    Lease,
    LeaseBody,
    LeaseBusyError,
    LeaseLostError,
    LeaseTerms,
    _holder_of,
    lease_holder,
)
from reindexer.storage.local import LocalStore
from reindexer.store import TransientStoreError
from reindexer.subdir_ref import SubdirRef
from tests.support.clock import FakeClock

CHANNEL = "dev"
SUBDIR = "linux-64"
LIFETIME = 30.0
NO_WAIT = LeaseTerms(lifetime=LIFETIME, wait=0.0)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def lease_path(store: LocalStore) -> Path:
    return store.root / SubdirRef(store, CHANNEL, SUBDIR).key(LEASE_FILE)


def lease_body(store: LocalStore) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(lease_path(store).read_bytes())
    return body


def new_lease(
    store: LocalStore, clock: FakeClock, terms: LeaseTerms = NO_WAIT, subdir: str = SUBDIR
) -> Lease:
    return Lease(SubdirRef(store, CHANNEL, subdir), terms, clock=clock)


def test_acquire_creates_the_lease_file_with_owner_and_expiry(store: LocalStore, clock: FakeClock) -> None:
    lease = new_lease(store, clock)

    lease.acquire()

    assert lease_path(store).is_file()
    assert lease_body(store) == {
        "owner": lease.owner,
        "expires_at": clock.now + LIFETIME,
        "holder": lease.holder,
    }
    lease.check()  # ours, with time to spare
    assert clock.slept == []


def test_second_lease_on_a_held_prefix_is_busy(store: LocalStore, clock: FakeClock) -> None:
    first = new_lease(store, clock)
    first.acquire()
    clock.advance(LIFETIME - 1)

    with pytest.raises(LeaseBusyError) as raised:
        new_lease(store, clock).acquire()

    # Busy is transient: the event is retried later rather than dropped.
    assert isinstance(raised.value, TransientStoreError)
    assert lease_body(store)["owner"] == first.owner
    first.check()
    assert clock.slept == []  # with wait=0 a busy lease is reported at once


def test_leases_on_different_subdirs_do_not_exclude_each_other(store: LocalStore, clock: FakeClock) -> None:
    new_lease(store, clock).acquire()

    other = new_lease(store, clock, subdir="noarch")
    other.acquire()

    other.check()
    assert clock.slept == []


def test_expired_lease_is_taken_over_and_its_first_holder_loses_it(
    store: LocalStore, clock: FakeClock
) -> None:
    first = new_lease(store, clock)
    first.acquire()
    clock.advance(LIFETIME + 1)

    second = new_lease(store, clock)
    second.acquire()

    assert lease_body(store) == {
        "owner": second.owner,
        "expires_at": clock.now + LIFETIME,
        "holder": second.holder,
    }
    with pytest.raises(LeaseLostError):
        first.check()
    second.check()
    assert clock.slept == []


def test_released_expired_lease_does_not_delete_the_new_holders_lease(
    store: LocalStore, clock: FakeClock
) -> None:
    first = new_lease(store, clock)
    first.acquire()
    clock.advance(LIFETIME + 1)
    second = new_lease(store, clock)
    second.acquire()

    first.release()

    assert lease_body(store)["owner"] == second.owner
    with pytest.raises(LeaseBusyError):
        new_lease(store, clock).acquire()
    assert clock.slept == []


def test_renewal_after_a_take_over_marks_the_lease_lost(store: LocalStore) -> None:
    """The first holder's own clock still says it has time; the failed renewal is what tells it."""
    first_clock, second_clock = FakeClock(), FakeClock()
    first = new_lease(store, first_clock)
    first.acquire()
    second_clock.advance(LIFETIME + 1)
    second = new_lease(store, second_clock)
    second.acquire()

    first.renew()

    with pytest.raises(LeaseLostError):
        first.check()
    assert lease_body(store)["owner"] == second.owner  # the failed renewal wrote nothing
    assert first_clock.slept == second_clock.slept == []


def test_renew_extends_the_expiry(store: LocalStore, clock: FakeClock) -> None:
    lease = new_lease(store, clock)
    lease.acquire()
    clock.advance(LIFETIME - 5)

    lease.renew()
    clock.advance(10)  # past the first expiry, within the renewed one

    assert lease_body(store) == {
        "owner": lease.owner,
        "expires_at": clock.now - 10 + LIFETIME,
        "holder": lease.holder,
    }
    lease.check()
    with pytest.raises(LeaseBusyError):
        new_lease(store, clock).acquire()
    assert clock.slept == []


def test_lease_not_renewed_expires_for_its_holder(store: LocalStore, clock: FakeClock) -> None:
    lease = new_lease(store, clock)
    lease.acquire()
    clock.advance(LIFETIME)

    with pytest.raises(LeaseLostError):
        lease.check()
    assert clock.slept == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'"expires_at"',
        b"{}",
        b'{"owner": "x", "expires_at": "tomorrow"}',
        b'{"owner": "x", "expires_at": null}',
    ],
    ids=["empty", "not-json", "not-utf8", "list", "string", "no-expiry", "text-expiry", "null-expiry"],
)
def test_unparseable_lease_file_counts_as_expired(
    store: LocalStore, clock: FakeClock, content: bytes
) -> None:
    path = lease_path(store)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)

    lease = new_lease(store, clock)
    lease.acquire()

    assert lease_body(store)["owner"] == lease.owner
    lease.check()
    assert clock.slept == []  # taken over at once, not waited for


def test_hold_releases_on_exit_even_when_the_block_raises(store: LocalStore, clock: FakeClock) -> None:
    lease = new_lease(store, clock)

    with pytest.raises(RuntimeError, match="boom"), lease.hold():
        assert lease_path(store).is_file()
        raise RuntimeError("boom")

    assert not lease_path(store).exists()
    new_lease(store, clock).acquire()  # free at once for the next writer
    assert clock.slept == []


def test_hold_releases_on_normal_exit(store: LocalStore, clock: FakeClock) -> None:
    with new_lease(store, clock).hold() as held:
        held.check()

    assert not lease_path(store).exists()
    with pytest.raises(LeaseLostError):
        held.check()  # a released lease is no licence to commit
    assert clock.slept == []


def test_hold_on_a_busy_prefix_raises_without_touching_the_holders_lease(
    store: LocalStore, clock: FakeClock
) -> None:
    holder = new_lease(store, clock)
    holder.acquire()
    entered = False

    with pytest.raises(LeaseBusyError), new_lease(store, clock).hold():
        entered = True

    assert not entered
    assert lease_body(store)["owner"] == holder.owner
    assert clock.slept == []


def test_release_of_an_already_deleted_lease_is_quiet(store: LocalStore, clock: FakeClock) -> None:
    lease = new_lease(store, clock)
    lease.acquire()
    lease_path(store).unlink()

    lease.release()
    lease.release()  # twice is fine too

    assert not lease_path(store).exists()
    assert clock.slept == []


class ReleasingClock(FakeClock):
    """A fake clock on which the holder of a lease releases it during the waiter's third backoff."""

    def __init__(self) -> None:
        super().__init__()
        self.holder: Lease | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.slept) == 3 and self.holder is not None:
            self.holder.release()


def test_waiting_for_a_busy_lease_backs_off_and_acquires_once_it_is_released(store: LocalStore) -> None:
    clock = ReleasingClock()
    holder = new_lease(store, clock)
    holder.acquire()
    holder_expiry = lease_body(store)["expires_at"]
    clock.holder = holder

    waiter = new_lease(store, clock, LeaseTerms(lifetime=LIFETIME, wait=3600.0))
    waiter.acquire()

    assert len(clock.slept) == 3
    assert all(0 < seconds <= MAX_BACKOFF for seconds in clock.slept)
    assert clock.now < holder_expiry  # acquired because it was released, not because it expired
    assert lease_body(store)["owner"] == waiter.owner
    waiter.check()


def test_check_before_acquire_raises_lease_lost(store: LocalStore, clock: FakeClock) -> None:
    with pytest.raises(LeaseLostError):
        new_lease(store, clock).check()
    assert clock.slept == []


def test_the_lease_names_its_holder_by_function_or_host_and_process(
    store: LocalStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = new_lease(store, clock)
    lease.acquire()

    holder = lease_body(store)["holder"]
    assert holder == lease_holder() == lease.holder
    name, pid = holder.rsplit(":", 1)
    assert name and pid == str(os.getpid())
    assert LeaseBody.parse(lease_path(store).read_bytes()) == LeaseBody(
        lease.owner, clock.now + LIFETIME, holder
    )

    # In Lambda the function's name stands for the host's.
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "channel-package-events")
    _holder_of.cache_clear()
    try:
        assert lease_holder() == f"channel-package-events:{os.getpid()}"
    finally:
        _holder_of.cache_clear()


def test_a_lease_written_without_a_holder_still_parses_and_excludes(
    store: LocalStore, clock: FakeClock
) -> None:
    path = lease_path(store)
    path.parent.mkdir(parents=True)
    path.write_bytes(json.dumps({"owner": "older-indexer", "expires_at": clock.now + LIFETIME}).encode())

    assert LeaseBody.parse(path.read_bytes()) == LeaseBody("older-indexer", clock.now + LIFETIME, "")
    with pytest.raises(LeaseBusyError):
        new_lease(store, clock).acquire()
    assert LeaseBody.parse(b"not json") is None
    assert LeaseBody.parse(b'{"owner": 1, "expires_at": 2}') is None
