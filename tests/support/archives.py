"""Packages to index, made by hand: well-formed archives around any index.json, and hostile ones (raw JSON no
producer writes, member and zip-entry floods, decompression bombs built cheaply from repeated blocks)."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard
from rattler_build import ArchiveType, assemble_package

TAR_BLOCK = 512
TAR_END = b"\0" * (2 * TAR_BLOCK)
ZEROS_CHUNK = 16 * 1024 * 1024

# --- Well-formed archives ------------------------------------------------------------------------------


def index_json(name: str = "pkg", version: str = "1.0", build: str = "h0_0", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "license": "MIT",
        "timestamp": 1704067200000,
    }
    document.update(fields)
    return document


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def info_members(
    index: dict[str, Any] | bytes | None, extra: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    if index is not None:
        members["info/index.json"] = index if isinstance(index, bytes) else json.dumps(index).encode()
    members.update(extra or {})
    return members


def _conda_zip(stem: str, info_tar_zst: bytes, pkg_tar_zst: bytes, extra_entries: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"pkg-{stem}.tar.zst", pkg_tar_zst)
        archive.writestr(f"info-{stem}.tar.zst", info_tar_zst)
        for number in range(extra_entries):
            archive.writestr(f"junk/{number:06d}", b"")
    return buffer.getvalue()


def conda_archive(stem: str, info: dict[str, bytes], payload: dict[str, bytes] | None = None) -> bytes:
    """A .conda: a STORED zip of metadata.json, info-<stem>.tar.zst and pkg-<stem>.tar.zst."""
    compressor = zstandard.ZstdCompressor()
    payload_tar = tar_bytes(payload or {"share/a.txt": b"a"})
    return _conda_zip(stem, compressor.compress(tar_bytes(info)), compressor.compress(payload_tar))


def tar_bz2_archive(members: dict[str, bytes]) -> bytes:
    """A .tar.bz2 holding `members` in the given order."""
    return bz2.compress(tar_bytes(members))


def package_bytes(
    filename: str, index: dict[str, Any] | bytes | None, extra: dict[str, bytes] | None = None
) -> bytes:
    """A well-formed archive of either format (by `filename`) around the given index.json body (None: no
    index.json at all)."""
    info = info_members(index, extra)
    if filename.endswith(".conda"):
        return conda_archive(filename[: -len(".conda")], info)
    return tar_bz2_archive({**info, "share/a.txt": b"a"})


# --- Hostile archives: every builder is cheap (bombs are repeated compressed blocks, or zeros that zstd ----
# --- compresses at gigabytes per second, never gigabytes held in memory) ----------------------------------


def raw_index(
    raw: list[tuple[str, str | bytes]],
    name: str = "good",
    version: str = "2.0",
    build: str = "h0_0",
    **fields: Any,
) -> bytes:
    """An info/index.json body with `raw` members written verbatim as `"key": <raw value>` before the usual
    fields (which lose any key named in `raw`): NaN, 1e999, duplicate keys, invalid UTF-8 and the like,
    none of which json.dumps would write."""
    document = index_json(name, version, build, **fields)
    for key, _ in raw:
        document.pop(key, None)
    members = b"".join(
        json.dumps(key).encode() + b": " + (value.encode() if isinstance(value, str) else value) + b", "
        for key, value in raw
    )
    return b"{" + members + json.dumps(document).encode()[1:]


def _tar_header(path: str, size: int) -> bytes:
    info = tarfile.TarInfo(path)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % TAR_BLOCK)


def _tar_file(path: str, data: bytes) -> bytes:
    return _tar_header(path, len(data)) + data + _padding(len(data))


def member_flood_tar(count: int, index: dict[str, Any]) -> bytes:
    """An uncompressed tar of `count` empty members under info/, then info/index.json."""
    empty = b"".join(_tar_header(f"info/empty/{number:06d}", 0) for number in range(count))
    return empty + _tar_file("info/index.json", json.dumps(index).encode()) + TAR_END


def tar_bz2_from_tar(tar: bytes) -> bytes:
    return bz2.compress(tar, compresslevel=1)


def conda_from_info_tar(stem: str, info_tar_zst: bytes, *, extra_entries: int = 0) -> bytes:
    """A .conda around an already compressed info tarball, with `extra_entries` junk entries added."""
    payload = zstandard.ZstdCompressor().compress(tar_bytes({"a": b"a"}))
    return _conda_zip(stem, info_tar_zst, payload, extra_entries)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(data)


def zstd_bomb_info(zero_bytes: int, index: dict[str, Any]) -> bytes:
    """An info-*.tar.zst whose first member is `zero_bytes` of zeros, index.json after it (one frame)."""
    output = io.BytesIO()
    compressor = zstandard.ZstdCompressor(level=1)
    with compressor.stream_writer(output, closefd=False) as writer:
        writer.write(_tar_header("info/zeros", zero_bytes))
        for chunk in _zeros(zero_bytes):
            writer.write(chunk)
        writer.write(_padding(zero_bytes))
        writer.write(_tar_file("info/index.json", json.dumps(index).encode()))
        writer.write(TAR_END)
    return output.getvalue()


def zstd_huge_window_info(index: dict[str, Any]) -> bytes:
    """A valid info tarball in one zstd frame that asks decoders for a 1 GiB window (window_log 30)."""
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=30)
    output = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(output, closefd=False) as writer:
        writer.write(_tar_file("info/index.json", json.dumps(index).encode()) + TAR_END)
    return output.getvalue()


def bz2_bomb(zero_bytes: int, index: dict[str, Any]) -> bytes:
    """A multi-stream .tar.bz2 (as pbzip2 writes) whose first member is `zero_bytes` of zeros, then
    index.json: the zeros are one compressed 16 MiB block repeated, so building it costs one block."""
    assert zero_bytes % ZEROS_CHUNK == 0
    block = bz2.compress(b"\0" * ZEROS_CHUNK, compresslevel=9)
    head = bz2.compress(_tar_header("info/zeros", zero_bytes))
    tail = bz2.compress(_tar_file("info/index.json", json.dumps(index).encode()) + TAR_END)
    return head + block * (zero_bytes // ZEROS_CHUNK) + tail


def _zeros(total: int) -> Iterator[bytes]:
    chunk = b"\0" * ZEROS_CHUNK
    while total > 0:
        yield chunk[: min(total, ZEROS_CHUNK)]
        total -= ZEROS_CHUNK


# A repodata patch package (rattler-index --repodata-patch, conda-forge practice) for the tests that need one.
PATCH_PACKAGE_NAME = "demo-repodata-patches"


def build_patch_package(
    folder: Path,
    files: dict[str, bytes],
    *,
    extension: str = ".conda",
    version: str = "1.0",
    build: str = "h0_0",
) -> tuple[str, bytes]:
    """A noarch package built by rattler-build holding `files` in its payload: (file name, bytes)."""
    files_dir = folder / f"files-{version}-{build}{extension}"
    for relative, data in files.items():
        (files_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (files_dir / relative).write_bytes(data)
    files_dir.mkdir(parents=True, exist_ok=True)
    output = assemble_package(
        name=PATCH_PACKAGE_NAME,
        version=version,
        target_platform="noarch",
        build_string=build,
        output_dir=str(folder / "out"),
        files_dir=str(files_dir),
        build_number=int(build.rsplit("_", 1)[-1]),
        noarch="generic",
        license="MIT",
        archive_type=ArchiveType.Conda if extension == ".conda" else ArchiveType.TarBz2,
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
        compression_threads=1,
        detect_prefix=False,
    )
    path = Path(output.path)
    assert path.name == f"{PATCH_PACKAGE_NAME}-{version}-{build}{extension}"
    return path.name, path.read_bytes()
