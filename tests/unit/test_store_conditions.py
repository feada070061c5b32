"""What a store honours is probed once per bucket and cached in it; writes adapt to the answer."""

from __future__ import annotations

import json

import pytest

from reindexer.contract import STORE_CONDITIONS_KEY
from reindexer.storage.memory import CEPH_LIKE, MemoryStore
from reindexer.store import FatalStoreError, UnsafeStoreError
from reindexer.store_conditions import (
    REPROBE_AFTER_SECONDS,
    UNQUOTED,
    ConditionalRequests,
    StoreConditions,
)
from tests.support.clock import FakeClock

TYPE = "application/json"
FIELDS = {"create_only": True, "if_match": "quoted", "conditional_delete": True, "probed_at": 0}


def conditional_writes(store: MemoryStore, key: str = "ch/noarch/.reindexer/lease.json") -> None:
    etag = store.write(key, b"1", content_type=TYPE, if_none_match=True)
    store.write(key, b"2", content_type=TYPE, if_match=etag)


def test_the_first_conditional_write_probes_and_later_ones_reuse_the_answer() -> None:
    store = MemoryStore()
    store.write("ch/noarch/repodata.json", b"{}", content_type=TYPE)
    assert store.requests["PutObject"] == 1, "an unconditional write needs no probe"
    conditional_writes(store)
    probe_puts = store.requests["PutObject"] - 3
    assert probe_puts >= 3
    conditional_writes(store, "ch/linux-64/.reindexer/lease.json")
    assert store.requests["PutObject"] - 5 == probe_puts, "probed once per store"


def test_a_new_store_on_the_same_bucket_reads_the_cached_answer_instead_of_probing() -> None:
    first = MemoryStore(quirks=CEPH_LIKE)
    conditional_writes(first)
    second = MemoryStore(quirks=CEPH_LIKE)
    second.objects = first.objects
    conditional_writes(second, "ch/linux-64/.reindexer/lease.json")
    assert second.requests["GetObject"] == 1
    assert second.requests["PutObject"] == 2, "no probe: only the two writes"
    assert second.requests["DeleteObject"] == 0
    assert second.conditional.conditions().if_match == UNQUOTED


@pytest.mark.parametrize(
    "cached",
    [
        b"not json",
        b'{"create_only": true}',
        json.dumps({**FIELDS, "create_only": 1}).encode(),
        json.dumps({**FIELDS, "if_match": "both"}).encode(),
    ],
    ids=["not-json", "fields-missing", "flag-not-bool", "unknown-form"],
)
def test_a_malformed_cached_answer_is_probed_again_and_replaced(cached: bytes) -> None:
    store = MemoryStore(quirks=CEPH_LIKE)
    store.put_as_given(STORE_CONDITIONS_KEY, cached)
    conditional_writes(store)
    assert store.conditional.conditions().if_match == UNQUOTED
    assert StoreConditions.from_bytes(store.read(STORE_CONDITIONS_KEY)[0]) is not None


def test_an_old_cached_answer_is_probed_again() -> None:
    store = MemoryStore(quirks=CEPH_LIKE)
    wrong = StoreConditions(True, "quoted", True, probed_at=1000.0)
    store.put_as_given(STORE_CONDITIONS_KEY, wrong.to_bytes())
    fresh = ConditionalRequests(store, clock=FakeClock(1000.0 + REPROBE_AFTER_SECONDS / 2))
    assert fresh.conditions() == wrong, "within its lifetime the cached answer is trusted"
    old = ConditionalRequests(store, clock=FakeClock(1000.0 + REPROBE_AFTER_SECONDS + 1))
    assert old.conditions().if_match == UNQUOTED


def test_a_probe_that_cannot_write_says_so_and_what_stopped_it() -> None:
    store = MemoryStore()
    store.fail("PutObject", ".reindexer/probe-*", FatalStoreError("access denied to x (403)"))
    with pytest.raises(FatalStoreError) as caught:
        conditional_writes(store)
    assert str(caught.value) == "cannot probe the store's conditional requests: access denied to x (403)"


def test_an_answer_that_cannot_be_cached_still_lets_the_run_go_on() -> None:
    store = MemoryStore()
    store.fail("PutObject", STORE_CONDITIONS_KEY, FatalStoreError("access denied (403)"))
    conditional_writes(store)
    assert STORE_CONDITIONS_KEY not in store.objects


def test_the_refusal_names_what_the_store_ignores_and_the_way_out() -> None:
    refusal = StoreConditions(create_only=False, if_match=None, conditional_delete=False).limitation()
    assert refusal == (
        "ignores If-None-Match: * (create only) and If-Match (replace only the version read) on PUT, "
        "so two indexers could overwrite each other's index"
    )
    store = MemoryStore(conditions=StoreConditions(create_only=True, if_match=None, conditional_delete=True))
    with pytest.raises(UnsafeStoreError, match=r"ignores If-Match .* --single-writer"):
        conditional_writes(store)
