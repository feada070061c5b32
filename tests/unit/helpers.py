"""Small helpers shared by the unit tests: reading what the indexer wrote and running it on a folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import msgpack

from devtools.sample_channel import SamplePackage, build_packages
from reindexer.indexer import index_channel
from reindexer.layout import parse_package_filename
from reindexer.options import IndexOptions
from reindexer.package_reader import PackageSpool
from reindexer.records import Record, build_record
from reindexer.reports import ChannelReport
from reindexer.storage.local import LocalStore
from tests.common import zstd_decompress


def read_msgpack_zst(path: Path) -> Any:
    return msgpack.unpackb(zstd_decompress(path.read_bytes()), raw=False)


def read_repodata(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "repodata.json").read_bytes())
    return document


def all_records(repodata: dict[str, Any]) -> dict[str, Record]:
    return {**repodata["packages"], **repodata["packages.conda"]}


def record_from_bytes(filename: str, data: bytes, subdir: str) -> Record:
    """Build a record the way the indexer does, from an archive's bytes (lowest layer: reader + records)."""
    parsed = parse_package_filename(filename)
    assert parsed is not None, filename
    with PackageSpool() as spool:
        spool.write(data)
        metadata = spool.read_metadata(filename)
        return build_record(parsed, subdir, metadata, spool.digests())


def run_index(folder: Path, **options: Any) -> tuple[ChannelReport, LocalStore]:
    """Index a local channel folder with a fresh store (so its request counters start at zero)."""
    store = LocalStore(folder)
    report = index_channel(store, "", IndexOptions(**options))
    return report, store


def copy_channel(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def channel_files(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its content, to prove that nothing was written."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rebuild_package(package: SamplePackage, scratch: Path) -> Path:
    """Build `package` (e.g. with another payload) in a scratch folder and return its path."""
    scratch.mkdir(parents=True, exist_ok=True)
    (path,) = build_packages([package], scratch)
    return path


def upload(source: Path, destination: Path) -> None:
    """Put a file in place the way an uploader does: a new object replaces the old one atomically."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.parent / f"upload-{destination.name}.partial"
    shutil.copyfile(source, temporary)
    os.replace(temporary, destination)
