"""Fetching one package: what the content does becomes a rejection of that file, what the environment does
(the store, the temporary disk) a failure retried later; sizes are checked before any byte is read."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from obstore import exceptions as obstore_errors

import reindexer.package_fetch
from reindexer.contract import STATE_FILE
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.package_fetch import Failed, read_package, recheck_records
from reindexer.package_reader import PackageSpool, ReadResourceError, TempDiskBudget
from reindexer.records import encode_record
from reindexer.reports import MAX_REASON_LENGTH
from reindexer.state import IndexedPackage, RejectedFile, SubdirState
from reindexer.storage.local import LocalStore
from reindexer.storage.s3 import S3Endpoint, S3Store
from reindexer.store import FatalStoreError, StoredObject, UnreadableObjectError
from tests.support.archives import index_json, package_bytes
from tests.support.checks import all_records, read_repodata

GOOD = "good-1.0-h0_0.conda"
MiB = 1024 * 1024


def put(folder: Path, subdir: str, filename: str, data: bytes) -> StoredObject:
    (folder / subdir).mkdir(parents=True, exist_ok=True)
    (folder / subdir / filename).write_bytes(data)
    obj = LocalStore(folder).head(f"{subdir}/{filename}")
    assert obj is not None
    return obj


class CountingStore(LocalStore):
    """Counts the package bytes handed to the sink."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bytes_read = 0

    def download(
        self, key: str, sink: Callable[[bytes], None], *, expect: Callable[[StoredObject], None] | None = None
    ) -> StoredObject:
        def counting(chunk: bytes) -> None:
            self.bytes_read += len(chunk)
            sink(chunk)

        return super().download(key, counting, expect=expect)


def test_a_package_over_the_size_limit_is_rejected_before_any_byte_is_read(tmp_path):
    data = package_bytes("big-1.0-h0_0.tar.bz2", index_json("big"), {"share/blob": b"x" * 4096})
    listed = put(tmp_path, "noarch", "big-1.0-h0_0.tar.bz2", data)
    store = CountingStore(tmp_path)
    # The event path does not know the size: the store announces it before the body.
    unknown_size = StoredObject(listed.key, "", 0)

    outcome = read_package(store, "noarch", unknown_size, max_size=len(data) - 1)

    assert isinstance(outcome, RejectedFile)
    assert f"the package is {len(data)} bytes, over the indexer's limit of {len(data) - 1}" in outcome.reason
    assert (outcome.etag, outcome.size) == (listed.etag, listed.size)
    assert store.bytes_read == 0


def test_a_listed_size_over_the_limit_is_rejected_without_a_request(tmp_path):
    store = CountingStore(tmp_path)
    obj = StoredObject("noarch/huge-1.0-h0_0.conda", "etag", 10 * MiB)

    outcome = read_package(store, "noarch", obj, max_size=MiB)

    assert outcome == RejectedFile(
        "etag", 10 * MiB, f"the package is {10 * MiB} bytes, over the limit of {MiB}"
    )
    assert store.requests["read"] == 0


def test_a_temporary_file_error_is_a_failed_read_with_its_reason(tmp_path, monkeypatch):
    obj = put(tmp_path, "noarch", GOOD, package_bytes(GOOD, index_json("good")))

    def full_disk(self: Any, chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reindexer.package_reader.tempfile.SpooledTemporaryFile, "write", full_disk)
    outcome = read_package(LocalStore(tmp_path), "noarch", obj, max_size=MiB)

    assert outcome == Failed("temporary file: No space left on device")


def test_an_unforeseen_error_while_building_the_record_rejects_only_that_file(tmp_path, monkeypatch):
    put(tmp_path, "noarch", GOOD, package_bytes(GOOD, index_json("good")))
    bad = "crash-1.0-h0_0.conda"
    put(tmp_path, "noarch", bad, package_bytes(bad, index_json("crash")))
    original = reindexer.package_fetch.build_record

    def crash_on_one(filename: Any, *args: Any) -> Any:
        if filename.name == "crash":
            raise OverflowError("x" * 10_000)
        return original(filename, *args)

    monkeypatch.setattr(reindexer.package_fetch, "build_record", crash_on_one)
    report = index_channel(LocalStore(tmp_path), "", IndexOptions())

    noarch = report.subdirs["noarch"]
    assert noarch.added == [GOOD]
    [rejection] = noarch.rejected
    assert rejection.file == bad
    assert rejection.reason.startswith("could not be read: unexpected OverflowError: xxx")
    assert len(rejection.reason) <= MAX_REASON_LENGTH
    assert sorted(all_records(read_repodata(tmp_path / "noarch"))) == [GOOD]


def test_an_unforeseen_error_while_fetching_is_a_failure_retried_later(tmp_path):
    obj = put(tmp_path, "noarch", GOOD, package_bytes(GOOD, index_json("good")))

    class BrokenStore(LocalStore):
        def download(self, key: str, sink: Any, *, expect: Any = None) -> StoredObject:
            raise KeyError("a bug in a store")

    outcome = read_package(BrokenStore(tmp_path), "noarch", obj, max_size=MiB)

    assert outcome == Failed("unexpected KeyError: 'a bug in a store'")


def test_an_archived_or_customer_encrypted_object_is_rejected_with_that_reason(tmp_path):
    obj = StoredObject("noarch/cold-1.0-h0_0.conda", "etag", 100)

    class ArchivedStore(LocalStore):
        def download(self, key: str, sink: Any, *, expect: Any = None) -> StoredObject:
            raise UnreadableObjectError(f"s3://b/{key} is archived (GLACIER)")

    outcome = read_package(ArchivedStore(tmp_path), "noarch", obj, max_size=MiB)

    assert outcome == RejectedFile("etag", 100, "s3://b/noarch/cold-1.0-h0_0.conda is archived (GLACIER)")


def obstore_message(status: str, body: str) -> str:
    """The text obstore gives a failed request (its first line; the rest is a debug dump)."""
    return (
        "Error performing GET http://127.0.0.1:9/b/ch/noarch/p-1-0.conda in 1ms - Server returned non-2xx "
        f"status code: {status}: {body}\n\nDebug source:\n..."
    )


@pytest.mark.parametrize(
    ("error", "phrase"),
    [
        (
            obstore_errors.PermissionDeniedError(
                obstore_message("403 Forbidden", "<Error><Code>InvalidObjectState</Code></Error>")
            ),
            "archived",
        ),
        (
            obstore_errors.GenericError(
                obstore_message(
                    "400 Bad Request",
                    "<Error><Code>InvalidRequest</Code><Message>The object was stored using a form of "
                    "Server Side Encryption. The correct parameters must be provided to retrieve the "
                    "object.</Message>",
                )
            ),
            "customer-provided key (SSE-C)",
        ),
        (obstore_errors.GenericError(obstore_message("400 Bad Request", "")), "customer-provided key"),
    ],
    ids=["archived", "sse-c", "sse-c-head"],
)
def test_s3_errors_of_unreadable_objects_are_told_apart_from_access_denied(error, phrase):
    store = S3Store("b", S3Endpoint(url="http://127.0.0.1:9", region="us-east-1", path_style=True))

    mapped = store._object_store_error(error, "ch/noarch/p-1-0.conda")

    assert isinstance(mapped, UnreadableObjectError)
    assert phrase in str(mapped)
    assert "\n" not in str(mapped)


def test_plain_access_denied_is_fatal_and_names_the_object():
    store = S3Store("b", S3Endpoint(url="http://127.0.0.1:9", region="us-east-1", path_style=True))
    error = obstore_errors.PermissionDeniedError(
        obstore_message("403 Forbidden", "<Error><Code>AccessDenied</Code></Error>")
    )

    mapped = store._object_store_error(error, "ch/noarch/p-1-0.conda")

    assert isinstance(mapped, FatalStoreError)
    assert str(mapped).startswith("access denied to s3://b/ch/noarch/p-1-0.conda")
    assert "\n" not in str(mapped)


# --- the temporary disk --------------------------------------------------------------------------------


def test_a_package_larger_than_the_whole_disk_fails_before_its_download():
    spool = PackageSpool(max_size=10 * MiB, memory_limit=MiB, disk=TempDiskBudget(capacity=2 * MiB))

    with spool, pytest.raises(ReadResourceError, match="not enough temporary disk"):
        spool.expect(3 * MiB)


def test_spools_wait_for_room_on_the_disk_and_give_it_back():
    disk = TempDiskBudget(capacity=3 * MiB)
    first = PackageSpool(max_size=10 * MiB, memory_limit=MiB, disk=disk)
    first.__enter__()
    first.expect(2 * MiB)
    started = threading.Event()
    reserved = threading.Event()

    def second_read() -> None:
        with PackageSpool(max_size=10 * MiB, memory_limit=MiB, disk=disk) as second:
            started.set()
            second.expect(2 * MiB)  # 2 + 2 > 3: waits for the first spool
            reserved.set()

    thread = threading.Thread(target=second_read)
    thread.start()
    started.wait(5)
    time.sleep(0.05)
    assert not reserved.is_set()

    first.__exit__(None, None, None)
    thread.join(5)
    assert reserved.is_set()


def test_small_packages_stay_in_memory_and_reserve_no_disk():
    disk = TempDiskBudget(capacity=0)
    with PackageSpool(max_size=MiB, memory_limit=MiB, disk=disk) as spool:
        spool.expect(1000)
        spool.write(b"x" * 1000)


def test_a_body_longer_than_announced_is_not_spooled():
    with PackageSpool(max_size=MiB) as spool:
        spool.expect(10)
        with pytest.raises(ReadResourceError, match="grew past the size announced"):
            spool.write(b"x" * 11)


# --- records kept from runs under older rules ----------------------------------------------------------


def stored(record: dict[str, Any]) -> IndexedPackage:
    return IndexedPackage("e", 1, encode_record(record))


def valid(name: str = "good", **fields: Any) -> dict[str, Any]:
    record = {
        "name": name,
        "version": "1.0",
        "build": "h0_0",
        "build_number": 0,
        "depends": [],
        "subdir": "noarch",
        "md5": "0" * 32,
        "sha256": "1" * 64,
        "size": 1,
    }
    return {**record, **fields}


def test_recheck_cleans_refuses_or_keeps_each_stored_record():
    packages = {
        GOOD: stored(valid()),
        "dirty-1.0-h0_0.conda": stored(valid("dirty", url="https://evil.example/x.conda")),
        "poison-1.0-h0_0.conda": stored(valid("poison", noarch="x")),
        "notjson-1.0-h0_0.conda": IndexedPackage("e", 1, "{not json"),
    }

    outcomes = {obj.name: outcome for obj, outcome in recheck_records(packages, "noarch", schema=0)}

    assert GOOD not in outcomes
    cleaned = outcomes["dirty-1.0-h0_0.conda"]
    assert isinstance(cleaned, IndexedPackage) and "url" not in cleaned.record
    assert isinstance(outcomes["poison-1.0-h0_0.conda"], RejectedFile)
    assert "refused by the indexer's current rules" in outcomes["poison-1.0-h0_0.conda"].reason
    assert isinstance(outcomes["notjson-1.0-h0_0.conda"], RejectedFile)


def test_a_state_written_under_older_rules_is_checked_again_and_republished(tmp_path):
    # given a channel indexed today, whose state is then rewritten as an older version left it: schema 0
    # and a record today's rules refuse (which would break rattler for every record named "poison")
    put(tmp_path, "noarch", GOOD, package_bytes(GOOD, index_json("good")))
    poison = "poison-1.0-h0_0.conda"
    put(tmp_path, "noarch", poison, package_bytes(poison, index_json("poison")))
    store = LocalStore(tmp_path)
    index_channel(store, "", IndexOptions())
    state_key = f"noarch/{STATE_FILE}"
    state = SubdirState.from_bytes(store.read(state_key)[0])
    bad = {**json.loads(state.packages[poison].record), "noarch": "x"}
    state.packages[poison] = IndexedPackage(
        state.packages[poison].etag, state.packages[poison].size, encode_record(bad)
    )
    state.schema = 0
    store.write(state_key, state.to_bytes(), content_type="application/zstd")

    # when the next run finds nothing new to read
    report = index_channel(store, "", IndexOptions())

    # then the stored records were checked again: the refused one left the index, with its reason
    noarch = report.subdirs["noarch"]
    assert noarch.removed == [poison]
    assert [r.file for r in noarch.rejected] == [poison]
    assert sorted(all_records(read_repodata(tmp_path / "noarch"))) == [GOOD]
    assert SubdirState.from_bytes(store.read(state_key)[0]).schema > 0
    assert index_channel(LocalStore(tmp_path), "", IndexOptions()).subdirs["noarch"].written is False
