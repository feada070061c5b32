"""A patch package (rattler-index's --repodata-patch, conda-forge practice) in full runs: its instructions for
each subdir apply before the subdir's own file, a newer build replaces them, a bad build keeps the last good
ones and says why, and a no-op run reads no package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reindexer.contract import CHANNEL_STATE_FILE, PATCH_INSTRUCTIONS, REPODATA_JSON, join_key
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.storage.memory import MemoryStore
from tests.support.archives import PATCH_PACKAGE_NAME as NAME
from tests.support.archives import build_patch_package, index_json, package_bytes
from tests.support.checks import MutationCounter, all_records

CHANNEL = "ch"
A1, A2, B1 = "a-1.0-h0_0.conda", "a-2.0-h0_0.conda", "b-1.0-h0_0.tar.bz2"
ARCHIVES = {
    A1: package_bytes(A1, index_json("a", "1.0", depends=["b"])),
    A2: package_bytes(A2, index_json("a", "2.0", depends=["b"])),
    B1: package_bytes(B1, index_json("b", "1.0")),
}


def instructions(**fields: Any) -> bytes:
    return json.dumps({"patch_instructions_version": 1, **fields}).encode()


def channel(tmp_path: Path, package_files: dict[str, bytes], *, version: str = "1.0") -> MemoryStore:
    store = MemoryStore()
    for filename, data in ARCHIVES.items():
        store.write(join_key(CHANNEL, "linux-64", filename), data, content_type="application/octet-stream")
    add_patch_package(store, tmp_path, package_files, version=version)
    return store


def add_patch_package(store: MemoryStore, folder: Path, files: dict[str, bytes], *, version: str) -> str:
    filename, data = build_patch_package(folder / version, files, version=version)
    store.write(join_key(CHANNEL, "noarch", filename), data, content_type="application/octet-stream")
    return filename


def index(store: MemoryStore) -> Any:
    report = index_channel(store, CHANNEL, IndexOptions(repodata_patch=NAME))
    assert report.ok, report.to_dict()
    return report


def published(store: MemoryStore) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(store.read(join_key(CHANNEL, "linux-64", REPODATA_JSON))[0])
    return document


def test_the_packages_instructions_apply_and_the_subdirs_file_applies_after_them(tmp_path: Path):
    store = channel(
        tmp_path,
        {
            "linux-64/patch_instructions.json": instructions(
                remove=[A2], **{"packages.conda": {A1: {"depends": ["b >=1"]}}}
            )
        },
    )
    store.write(
        join_key(CHANNEL, "linux-64", PATCH_INSTRUCTIONS),
        instructions(**{"packages.conda": {A1: {"depends": ["b >=2"]}}}),
        content_type="application/json",
    )

    index(store)

    records = all_records(published(store))
    assert A2 not in records and published(store)["removed"] == [A2]
    assert records[A1]["depends"] == ["b >=2"], "the subdir's own file wins over the package"


def test_a_newer_build_replaces_the_instructions_and_a_no_op_run_reads_no_package(tmp_path: Path):
    store = channel(tmp_path, {"linux-64/patch_instructions.json": instructions(remove=[A2])})
    index(store)
    assert published(store)["removed"] == [A2]

    counter = MutationCounter(store)
    read: list[str] = []
    store.on("GetObject", "*", lambda operation, key: read.append(key))
    index_channel(counter, CHANNEL, IndexOptions(repodata_patch=NAME))
    assert sum(counter.mutations.values()) == 0
    # The subdirs' states, and the channel files' state (they are current: nothing else is read).
    assert all(key.endswith(("state.json.zst", CHANNEL_STATE_FILE)) for key in read), (
        f"no package is read: {read}"
    )

    add_patch_package(
        store, tmp_path, {"linux-64/patch_instructions.json": instructions(remove=[B1])}, version="2.0"
    )
    index(store)

    assert published(store)["removed"] == [B1]
    assert A2 in all_records(published(store))


def test_a_build_that_does_not_parse_keeps_the_last_good_instructions_and_says_why(tmp_path: Path):
    store = channel(tmp_path, {"linux-64/patch_instructions.json": instructions(remove=[A2])})
    index(store)

    add_patch_package(store, tmp_path, {"linux-64/patch_instructions.json": b"{not json"}, version="2.0")
    report = index(store)

    (problem,) = report.subdirs["linux-64"].patch_problems
    assert "patch package" in problem and "2.0" in problem and "\n" not in problem
    assert published(store)["removed"] == [A2], "the last good instructions stay in force"


def test_without_the_setting_the_package_is_an_ordinary_package(tmp_path: Path):
    store = channel(tmp_path, {"linux-64/patch_instructions.json": instructions(remove=[A2])})

    index_channel(store, CHANNEL, IndexOptions())

    assert published(store)["removed"] == []
