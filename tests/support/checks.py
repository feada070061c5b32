"""What a published index must satisfy: a converged channel checked through the Store interface, a run with
nothing to do that writes nothing, and decoding what the indexer wrote (zstd, msgpack, records, digests)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import zstandard

from reindexer.contract import (
    CHANNELDATA_JSON,
    INDEX_HTML,
    REPODATA_JSON,
    REPODATA_ZST,
    RUN_EXPORTS_JSON,
    SHARD_INDEX,
    STATE_FILE,
    join_key,
)
from reindexer.indexer import index_channel
from reindexer.layout import KNOWN_SUBDIRS, package_extension, parse_package_filename
from reindexer.lease import LEASE_FILE
from reindexer.options import IndexOptions
from reindexer.package_reader import PackageSpool
from reindexer.records import Record, build_record
from reindexer.reports import ChannelReport
from reindexer.shards import shard_path
from reindexer.state import SubdirState
from reindexer.store import FolderListing, Store, StoredObject
from tests.support.stores import StoreWrapper

MUTATIONS = ("write", "delete")
T = TypeVar("T")

# --- Decoding what the indexer wrote --------------------------------------------------------------------


def zstd_decompress(data: bytes) -> bytes:
    """Decompress with a streaming reader, as clients must (a frame need not record its content size)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    output = bytearray()
    while chunk := reader.read(65536):
        output += chunk
    return bytes(output)


def decode_msgpack_zst(data: bytes) -> Any:
    """A shard or the shard index (zstd-compressed msgpack) as Python objects."""
    return msgpack.unpackb(zstd_decompress(data), raw=False)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_repodata(folder: Path) -> dict[str, Any]:
    """The repodata.json in a subdir folder."""
    document: dict[str, Any] = json.loads((folder / REPODATA_JSON).read_bytes())
    return document


def all_records(repodata: Mapping[str, Any]) -> dict[str, Record]:
    """Every record of a repodata document (or a shard), .tar.bz2 and .conda alike, by file name."""
    return {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}


def record_from_bytes(filename: str, data: bytes, subdir: str) -> Record:
    """Build a record the way the indexer does, from an archive's bytes (lowest layer: reader + records)."""
    parsed = parse_package_filename(filename)
    assert parsed is not None, filename
    with PackageSpool() as spool:
        spool.write(data)
        metadata = spool.read_metadata(filename)
        return build_record(parsed, subdir, metadata, spool.digests())


# --- A converged channel: every subdir's outputs and state agree with its folder and with each other -----


def channel_subdirs(store: Store, channel: str) -> list[str]:
    """The subdir folders of a channel, plus noarch (which every channel must publish)."""
    return sorted((set(store.list_folder(channel).folders) & KNOWN_SUBDIRS) | {"noarch"})


def present_packages(store: Store, channel: str) -> dict[str, StoredObject]:
    """Every package file in the channel's subdir folders, by `<subdir>/<filename>`."""
    found: dict[str, StoredObject] = {}
    for subdir in channel_subdirs(store, channel):
        for obj in store.list_folder(join_key(channel, subdir)).objects:
            if package_extension(obj.name) is not None:
                found[f"{subdir}/{obj.name}"] = obj
    return found


def _hex_digests(record: Mapping[str, Any]) -> dict[str, Any]:
    converted = dict(record)
    for name in ("md5", "sha256"):
        if isinstance(converted.get(name), bytes):
            converted[name] = converted[name].hex()
    return converted


def check_subdir(
    store: Store,
    channel: str,
    subdir: str,
    expected_sha256: Mapping[str, str] | None = None,
    *,
    dead_leases: Collection[StoredObject] = (),
) -> None:
    """Assert that one subdir's published outputs and state agree with its folder and with each other
    (checked through the Store interface, so on S3 or a local folder alike).

    repodata.json holds exactly the packages present (each once, in the right section, with the expected
    sha256), repodata.json.zst is the same bytes, the shard index names exactly the package names present
    and every shard it points at exists and holds those records, the hidden state lists the same files and
    records the current ETags of the three outputs, and no live lease is left behind.

    `expected_sha256` maps `<subdir>/<filename>` to the sha256 of the bytes the test last uploaded.
    `dead_leases` are leases a killed writer left behind, which may remain untouched: a later run with
    nothing to do takes no lease, so nothing removes them, and the next writer takes them over on expiry.
    """
    prefix = join_key(channel, subdir)
    listing: FolderListing = store.list_folder(prefix)
    present = {obj.name: obj for obj in listing.objects if package_extension(obj.name) is not None}
    where = store.describe(prefix)

    json_bytes, json_etag = store.read(join_key(prefix, REPODATA_JSON))
    repodata = json.loads(json_bytes)
    assert repodata["info"]["subdir"] == subdir, where
    tar_bz2, conda = repodata["packages"], repodata["packages.conda"]
    assert all(name.endswith(".tar.bz2") for name in tar_bz2), f"{where}: misplaced .conda records"
    assert all(name.endswith(".conda") for name in conda), f"{where}: misplaced .tar.bz2 records"
    assert not set(tar_bz2) & set(conda), where
    records: dict[str, dict[str, Any]] = {**tar_bz2, **conda}
    assert sorted(records) == sorted(present), (
        f"{where}: repodata.json has {sorted(set(records) - set(present))} that are not in the folder "
        f"and lacks {sorted(set(present) - set(records))}"
    )
    for name, record in records.items():
        assert record["size"] == present[name].size, f"{where}/{name}: size"
        assert record["subdir"] == subdir, f"{where}/{name}: subdir"
        if expected_sha256 is not None:
            assert record["sha256"] == expected_sha256[f"{subdir}/{name}"], f"{where}/{name}: stale sha256"

    zst_bytes, zst_etag = store.read(join_key(prefix, REPODATA_ZST))
    assert zstd_decompress(zst_bytes) == json_bytes, f"{where}: .json.zst differs from repodata.json"

    index_bytes, index_etag = store.read(join_key(prefix, SHARD_INDEX))
    index = decode_msgpack_zst(index_bytes)
    assert index["info"]["subdir"] == subdir, where
    by_name: dict[str, set[str]] = {}
    for name in present:
        parsed = parse_package_filename(name)
        assert parsed is not None, name
        by_name.setdefault(parsed.name, set()).add(name)
    shards: dict[str, str] = {name: digest.hex() for name, digest in index["shards"].items()}
    assert sorted(shards) == sorted(by_name), f"{where}: shard index names"
    for package_name, digest in shards.items():
        data, _ = store.read(join_key(prefix, shard_path(digest)))
        assert sha256_hex(data) == digest, f"{where}: shard of {package_name} does not match its address"
        shard = decode_msgpack_zst(data)
        in_shard = {**shard["packages"], **shard["packages.conda"]}
        assert sorted(in_shard) == sorted(by_name[package_name]), f"{where}: shard of {package_name}"
        for filename, record in in_shard.items():
            assert _hex_digests(record) == records[filename], f"{where}: shard record of {filename}"

    state = SubdirState.from_bytes(store.read(join_key(prefix, STATE_FILE))[0])
    assert sorted(state.packages) == sorted(present), f"{where}: state packages"
    for name, package in state.packages.items():
        assert (package.etag, package.size) == (present[name].etag, present[name].size), f"{where}/{name}"
        assert json.loads(package.record) == records[name], f"{where}/{name}: state record"
    assert state.rejected == {}, f"{where}: rejected {state.rejected}"
    published = {REPODATA_JSON: json_etag, REPODATA_ZST: zst_etag, SHARD_INDEX: index_etag}
    for name in (RUN_EXPORTS_JSON,):
        head = store.head(join_key(prefix, name))
        assert head is not None, f"{where}: no {name}"
        published[name] = head.etag
    assert state.outputs == published, f"{where}: the state does not record the current outputs"
    assert state.shards == shards, f"{where}: state shards"
    lease = store.head(join_key(prefix, LEASE_FILE))
    if lease is not None and lease not in dead_leases:
        # A store that ignores If-Match on DELETE gets its leases released by an expired mark instead.
        released = json.loads(store.read(lease.key)[0]).get("expires_at") == 0
        assert released, f"{where}: a live lease was left behind"


def check_channel(
    store: Store,
    channel: str,
    expected_sha256: Mapping[str, str] | None = None,
    *,
    dead_leases: Collection[StoredObject] = (),
) -> None:
    """Assert every subdir is consistent; with `expected_sha256`, the bucket holds exactly those files."""
    if expected_sha256 is not None:
        assert sorted(present_packages(store, channel)) == sorted(expected_sha256)
    for subdir in channel_subdirs(store, channel):
        check_subdir(store, channel, subdir, expected_sha256, dead_leases=dead_leases)


def check_channel_files(store: Store, channel: str) -> None:
    """channeldata.json names exactly the packages the subdirs' repodata.json list (and their subdirs), and
    index.html names every file of them."""
    names: dict[str, set[str]] = {}
    files: list[str] = []
    for subdir in channel_subdirs(store, channel):
        repodata = json.loads(store.read(join_key(channel, subdir, REPODATA_JSON))[0])
        for filename, record in all_records(repodata).items():
            names.setdefault(record["name"], set()).add(subdir)
            files.append(filename)
    document = json.loads(store.read(join_key(channel, CHANNELDATA_JSON))[0])
    where = store.describe(join_key(channel, CHANNELDATA_JSON))
    assert {name: set(entry["subdirs"]) for name, entry in document["packages"].items()} == names, where
    page = store.read(join_key(channel, INDEX_HTML))[0].decode()
    assert all(f">{filename}</a>" in page for filename in files), store.describe(
        join_key(channel, INDEX_HTML)
    )


# --- A run with nothing to do -----------------------------------------------------------------------------


class MutationCounter(StoreWrapper):
    """Counts the writes and deletes sent through it."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.mutations: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _around(self, operation: str, key: str, call: Callable[[], T]) -> T:
        if operation in MUTATIONS:
            with self._lock:
                self.mutations[f"{operation} {key}"] += 1
        return call()


def assert_noop_run(store: Store, channel: str) -> ChannelReport:
    """A full run over a converged channel reads no package and writes nothing at all."""
    counter = MutationCounter(store)
    report = index_channel(counter, channel, IndexOptions())
    assert report.ok, report.to_dict()
    assert not counter.mutations, f"a no-op run wrote {dict(counter.mutations)}"
    assert not any(sub.written or sub.added or sub.updated or sub.removed for sub in report.subdirs.values())
    return report
