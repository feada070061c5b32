"""Reading conda packages: whole-archive digests in one pass, then `info/` metadata, in bounded memory.

Both archive formats are read from a seekable spool that holds small packages in memory and spills larger
ones to a temporary file. Decompressed bytes are capped so a decompression bomb costs bounded time.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from typing import IO, Any

import zstandard
from conda_package_streaming.package_streaming import tar_generator

from .layout import CONDA_EXTENSION, TAR_BZ2_EXTENSION

SPOOL_MEMORY_LIMIT = 16 * 1024 * 1024
METADATA_MEMBER_LIMIT = 8 * 1024 * 1024
# The info tarball of a .conda holds only metadata; a .tar.bz2 may have to be scanned past package files
# until its info/ members turn up, so it gets a larger budget.
CONDA_INFO_DECOMPRESSED_LIMIT = 512 * 1024 * 1024
TAR_BZ2_DECOMPRESSED_LIMIT = 2 * 1024 * 1024 * 1024

INDEX_JSON = "info/index.json"
RUN_EXPORTS_JSON = "info/run_exports.json"


class BadPackageError(Exception):
    """The archive cannot be indexed; the message is a one-line reason for the user."""


@dataclass(frozen=True)
class ArchiveDigests:
    md5: str
    sha256: str
    size: int


@dataclass(frozen=True)
class PackageMetadata:
    index: dict[str, Any]
    run_exports: dict[str, Any] | None


class PackageSpool:
    """Receives an archive chunk by chunk, hashing it while it is written, then reads back its metadata."""

    def __init__(self, memory_limit: int = SPOOL_MEMORY_LIMIT) -> None:
        # Closed by __exit__: the spool lives as long as the `with` block that owns it.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=memory_limit)  # noqa: SIM115
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._size = 0

    def __enter__(self) -> PackageSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()

    def write(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self._sha256.update(chunk)
        self._file.write(chunk)
        self._size += len(chunk)

    def digests(self) -> ArchiveDigests:
        return ArchiveDigests(self._md5.hexdigest(), self._sha256.hexdigest(), self._size)

    def read_metadata(self, filename: str) -> PackageMetadata:
        self._file.seek(0)
        return read_metadata(filename, self._file)


def read_metadata(filename: str, archive: IO[bytes]) -> PackageMetadata:
    """Extract info/index.json and the optional info/run_exports.json from a seekable archive."""
    if filename.endswith(CONDA_EXTENSION):
        members = _read_conda_info(archive)
    elif filename.endswith(TAR_BZ2_EXTENSION):
        members = _read_tar_bz2_info(archive)
    else:
        raise BadPackageError("not a conda package (expected .conda or .tar.bz2)")
    if INDEX_JSON not in members:
        raise BadPackageError(f"no {INDEX_JSON} in the archive")
    index = _parse_json_object(members[INDEX_JSON], INDEX_JSON)
    run_exports = None
    if RUN_EXPORTS_JSON in members:
        run_exports = _parse_json_object(members[RUN_EXPORTS_JSON], RUN_EXPORTS_JSON)
    return PackageMetadata(index=index, run_exports=run_exports)


def _read_conda_info(archive: IO[bytes]) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(archive) as outer:
            # Look the component up by its prefix rather than by our file name: a package renamed after it
            # was built still has its original info-<stem>.tar.zst, and the name check happens later.
            components = [
                entry
                for entry in outer.infolist()
                if entry.filename.startswith("info-") and entry.filename.endswith(".tar.zst")
            ]
            if len(components) != 1:
                raise BadPackageError(
                    f"a .conda must hold exactly one info-*.tar.zst component, found {len(components)}"
                )
            with outer.open(components[0]) as compressed:
                reader = zstandard.ZstdDecompressor().stream_reader(compressed, closefd=False)
                limited = _LimitedReader(reader, CONDA_INFO_DECOMPRESSED_LIMIT)
                return _collect_members(limited, stop_after_info=False)
    except BadPackageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise BadPackageError(f"not a valid .conda (zip) archive: {error}") from None
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BadPackageError(f"corrupt info component in .conda archive: {_describe(error)}") from None


def _read_tar_bz2_info(archive: IO[bytes]) -> dict[str, bytes]:
    try:
        limited = _LimitedReader(bz2.BZ2File(archive), TAR_BZ2_DECOMPRESSED_LIMIT)
        return _collect_members(limited, stop_after_info=True)
    except BadPackageError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BadPackageError(f"not a valid .tar.bz2 archive: {_describe(error)}") from None


def _collect_members(stream: io.RawIOBase, *, stop_after_info: bool) -> dict[str, bytes]:
    """Read the wanted metadata members from an uncompressed tar stream, in one forward pass.

    With stop_after_info, the walk ends at the first non-info member once index.json was seen: conda-build
    and rattler-build write info/ first, so the package payload is never decompressed.
    """
    wanted = {INDEX_JSON, RUN_EXPORTS_JSON}
    found: dict[str, bytes] = {}
    for tar, member in tar_generator(stream):
        path = member.name.removeprefix("./")
        if path in wanted and member.isfile():
            if member.size > METADATA_MEMBER_LIMIT:
                raise BadPackageError(
                    f"{path} is {member.size} bytes, over the {METADATA_MEMBER_LIMIT} byte limit for metadata"
                )
            extracted = tar.extractfile(member)
            if extracted is None:
                raise BadPackageError(f"{path} cannot be read from the archive")
            found[path] = extracted.read()
            if wanted <= found.keys():
                break
        elif stop_after_info and INDEX_JSON in found and not path.startswith("info/"):
            break
    return found


def _parse_json_object(raw: bytes, path: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadPackageError(f"{path} is not valid JSON: {_describe(error)}") from None
    if not isinstance(value, dict):
        raise BadPackageError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text and text[0] else type(error).__name__


class _LimitedReader(io.RawIOBase):
    """A read-only stream that fails once more than `limit` bytes were read through it."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._remaining = limit
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        data = self._inner.read(len(view))
        self._remaining -= len(data)
        if self._remaining < 0:
            raise BadPackageError(
                f"metadata not found within {self._limit} decompressed bytes (decompression bomb?)"
            )
        view[: len(data)] = data
        return len(data)
