"""Hand-made package archives for tests that need what no real producer writes: bad metadata, odd layouts."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from typing import Any

import zstandard


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


def conda_archive(stem: str, info: dict[str, bytes], payload: dict[str, bytes] | None = None) -> bytes:
    """A .conda: a STORED zip of metadata.json, info-<stem>.tar.zst and pkg-<stem>.tar.zst."""
    compressor = zstandard.ZstdCompressor()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(
            f"pkg-{stem}.tar.zst", compressor.compress(tar_bytes(payload or {"share/a.txt": b"a"}))
        )
        archive.writestr(f"info-{stem}.tar.zst", compressor.compress(tar_bytes(info)))
    return buffer.getvalue()


def tar_bz2_archive(members: dict[str, bytes]) -> bytes:
    """A .tar.bz2 holding `members` in the given order."""
    return bz2.compress(tar_bytes(members))


def package_bytes(
    filename: str, index: dict[str, Any] | bytes | None, extra: dict[str, bytes] | None = None
) -> bytes:
    """A well-formed archive of either format around the given index.json (None: no index.json at all)."""
    info = info_members(index, extra)
    if filename.endswith(".conda"):
        return conda_archive(filename[: -len(".conda")], info)
    return tar_bz2_archive({**info, "share/a.txt": b"a"})
