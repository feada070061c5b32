"""Reading conda packages: whole-archive digests in one pass, then `info/` metadata, in bounded memory.

Both archive formats are read from a seekable spool that holds small packages in memory and spills larger
ones to a temporary file. Decompressed bytes are capped so a decompression bomb costs bounded time.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import shutil
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import zstandard
from conda_package_streaming.package_streaming import TarfileNoSameOwner, tar_generator

from .contract import CONDA_SUFFIX, DEFAULT_MAX_PACKAGE_MB, TAR_BZ2_SUFFIX
from .strict_json import StrictJsonError, load_strict_json

# Every bound below is what one archive may cost us; each is named in the rejection it causes.
# Small packages are hashed in memory, larger ones spill to a temporary file.
SPOOL_MEMORY_LIMIT = 8 * 1024 * 1024
# info/index.json, info/run_exports.json, info/about.json: real ones are a few KiB (conda-build's about.json
# lists the build environment's packages: tens of KiB).
METADATA_MEMBER_LIMIT = 256 * 1024
# Tar members walked per archive before the metadata is found: real info/ folders hold tens to a few
# thousand files (vendored licences); a flood of empty members costs ~20 µs each.
MAX_ARCHIVE_MEMBERS = 10_000
# A .conda is a zip of metadata.json, info-*.tar.zst and pkg-*.tar.zst; allow a few extras.
MAX_ZIP_ENTRIES = 16
# Decompressed bytes walked per archive: at most a ratio times the compressed size (real tarballs compress
# 3-8x, info/ folders' JSON up to ~30x; bombs 1000x and more), never less than the floor, never more than
# the cap. A .tar.bz2 written before conda-package-handling put info/ first may have to be walked to its
# end; bzip2 output can cost ~40 ms/MiB to produce, zstd's ~1 ms, hence the lower bzip2 ratio.
CONDA_INFO_RATIO_LIMIT = 64
TAR_BZ2_RATIO_LIMIT = 8
DECOMPRESSED_FLOOR = 8 * 1024 * 1024
CONDA_INFO_DECOMPRESSED_LIMIT = 512 * 1024 * 1024
TAR_BZ2_DECOMPRESSED_LIMIT = 2 * 1024 * 1024 * 1024
# Temporary disk left free beside the spools (the runtime's own files).
TEMP_DISK_HEADROOM = 64 * 1024 * 1024
# zstd frames may ask for a window of up to 2 GiB; an info tarball never needs more than this.
ZSTD_MAX_WINDOW = 16 * 1024 * 1024

INDEX_JSON = "info/index.json"
RUN_EXPORTS_JSON = "info/run_exports.json"
# Descriptive only (summary, home, ...): read under the same bounds, but never a reason to refuse a package.
ABOUT_JSON = "info/about.json"


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
    # info/about.json when it is there, within METADATA_MEMBER_LIMIT and a JSON object; None otherwise.
    about: dict[str, Any] | None = None


class ReadResourceError(Exception):
    """The package could not be read here and now (temporary disk); not a verdict on it, so retried."""


class TempDiskBudget:
    """Temporary disk the spools of parallel reads may fill at once: a read waits for room rather than
    fail half-way with a full disk, and a package that could never fit is reported before its download."""

    def __init__(self, capacity: int | None = None) -> None:
        self._capacity = capacity
        self._reserved = 0
        self._room = threading.Condition()

    @property
    def capacity(self) -> int:
        if self._capacity is None:
            # Measured on first use: Lambda's /tmp is what the function was given (EphemeralStorage).
            free = shutil.disk_usage(tempfile.gettempdir()).free
            self._capacity = max(0, free - TEMP_DISK_HEADROOM)
        return self._capacity

    def reserve(self, size: int) -> None:
        if size > self.capacity:
            raise ReadResourceError(
                f"not enough temporary disk: the package is {size} bytes, {self.capacity} bytes are free"
            )
        with self._room:
            self._room.wait_for(lambda: self._reserved + size <= self.capacity)
            self._reserved += size

    def release(self, size: int) -> None:
        with self._room:
            self._reserved -= size
            self._room.notify_all()


TEMP_DISK = TempDiskBudget()


class PackageSpool:
    """Receives an archive chunk by chunk, hashing it while it is written, then reads back its metadata.

    `expect` is shown the archive's size before its first byte: a package over `max_size` is refused
    before it is downloaded, and one that will spill to disk waits for room in the disk budget.
    """

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_PACKAGE_MB * 1024 * 1024,
        *,
        memory_limit: int = SPOOL_MEMORY_LIMIT,
        disk: TempDiskBudget = TEMP_DISK,
    ) -> None:
        # Closed by __exit__: the spool lives as long as the `with` block that owns it.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=memory_limit)  # noqa: SIM115
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._max_size = max_size
        self._memory_limit = memory_limit
        self._disk = disk
        self._reserved = 0
        self._announced: int | None = None

    def __enter__(self) -> PackageSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()
        if self._reserved:
            self._disk.release(self._reserved)
            self._reserved = 0

    def expect(self, size: int) -> None:
        """Called once, before the first byte, with the size the store announces."""
        self._refuse_over_limit(size)
        self._announced = size
        if size > self._memory_limit and not self._reserved:
            self._disk.reserve(size)
            self._reserved = size

    def write(self, chunk: bytes) -> None:
        # The size announced is a claim too: never hold more than the limit or the room reserved.
        self._refuse_over_limit(self._size + len(chunk))
        if self._announced is not None and self._size + len(chunk) > self._announced:
            raise ReadResourceError("the package grew past the size announced before its download")
        self._md5.update(chunk)
        self._sha256.update(chunk)
        try:
            self._file.write(chunk)
        except OSError as error:
            raise ReadResourceError(f"temporary file: {error.strerror or error}") from None
        self._size += len(chunk)

    def digests(self) -> ArchiveDigests:
        return ArchiveDigests(self._md5.hexdigest(), self._sha256.hexdigest(), self._size)

    def read_metadata(self, filename: str) -> PackageMetadata:
        self._file.seek(0)
        return read_metadata(filename, self._file, self._size)

    def walk_payload(self, filename: str, visit: PayloadVisitor, *, budget: int) -> None:
        """Show `visit` the payload of the archive received (see walk_payload)."""
        walk_payload(filename, self._file, self._size, visit, budget=budget)

    def _refuse_over_limit(self, size: int) -> None:
        if size > self._max_size:
            raise BadPackageError(
                f"the package is {size} bytes, over the indexer's limit of {self._max_size} bytes"
            )


def read_metadata(filename: str, archive: IO[bytes], size: int | None = None) -> PackageMetadata:
    """Extract info/index.json and the optional info/run_exports.json and info/about.json from a seekable
    archive. A missing, oversized or malformed about.json is left out (None), never a rejection."""
    if size is None:
        size = archive.seek(0, io.SEEK_END)
        archive.seek(0)
    if filename.endswith(CONDA_SUFFIX):
        members = _read_conda_info(archive, size)
    elif filename.endswith(TAR_BZ2_SUFFIX):
        members = _read_tar_bz2_info(archive, size)
    else:
        raise BadPackageError("not a conda package (expected .conda or .tar.bz2)")
    if INDEX_JSON not in members:
        raise BadPackageError(f"no {INDEX_JSON} in the archive")
    index = _parse_json_object(members[INDEX_JSON], INDEX_JSON)
    run_exports = None
    if RUN_EXPORTS_JSON in members:
        run_exports = _parse_json_object(members[RUN_EXPORTS_JSON], RUN_EXPORTS_JSON)
    about = None
    if ABOUT_JSON in members:
        try:
            about = _parse_json_object(members[ABOUT_JSON], ABOUT_JSON)
        except BadPackageError:
            about = None
    return PackageMetadata(index=index, run_exports=run_exports, about=about)


def decompression_budget(compressed_size: int, ratio: int, cap: int) -> int:
    """How many decompressed bytes an archive of `compressed_size` bytes may make us walk."""
    return min(cap, max(DECOMPRESSED_FLOOR, ratio * compressed_size))


def _read_conda_info(archive: IO[bytes], size: int) -> dict[str, bytes]:
    try:
        _check_zip_entry_count(archive, size)
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
            budget = decompression_budget(
                components[0].compress_size, CONDA_INFO_RATIO_LIMIT, CONDA_INFO_DECOMPRESSED_LIMIT
            )
            with outer.open(components[0]) as compressed:
                decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
                reader = decompressor.stream_reader(compressed, closefd=False)
                return _collect_members(_LimitedReader(reader, budget), stop_after_info=False)
    except BadPackageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError) as error:
        # zipfile raises RuntimeError / NotImplementedError for encrypted entries, unknown compression
        # methods and zip versions it does not support: a .conda has none of them.
        raise BadPackageError(f"not a valid .conda (zip) archive: {_describe(error)}") from None
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BadPackageError(f"corrupt info component in .conda archive: {_describe(error)}") from None


def _read_tar_bz2_info(archive: IO[bytes], size: int) -> dict[str, bytes]:
    try:
        budget = decompression_budget(size, TAR_BZ2_RATIO_LIMIT, TAR_BZ2_DECOMPRESSED_LIMIT)
        return _collect_members(_LimitedReader(bz2.BZ2File(archive), budget), stop_after_info=True)
    except BadPackageError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BadPackageError(f"not a valid .tar.bz2 archive: {_describe(error)}") from None


# --- A package's payload, member by member (the repodata patch package's files) ---------------------------

# A .conda's pkg-*.tar.zst may be compressed at zstd's highest levels, whose frames ask for up to 128 MiB of
# window: zstd's default decoder limit, which conda and rattler keep too (a larger one installs nowhere).
PAYLOAD_ZSTD_MAX_WINDOW = 128 * 1024 * 1024

# Shown each payload member with a function that reads its bytes (only during the call).
PayloadVisitor = Callable[[tarfile.TarInfo, Callable[[], bytes]], None]


def walk_payload(filename: str, archive: IO[bytes], size: int, visit: PayloadVisitor, *, budget: int) -> None:
    """Show `visit` every member of a package's payload, in archive order: a .conda's pkg-*.tar.zst, or a
    .tar.bz2's whole tarball (where info/ sits beside the payload; the caller tells them apart by path).

    Bounded as the metadata is read: the zip's entries are counted before it is parsed, at most
    MAX_ARCHIVE_MEMBERS members are walked, pax and GNU header records are capped, and the walk ends after
    `budget` decompressed bytes. Whatever is wrong with the archive is a BadPackageError with a one-line
    reason, as is whatever `visit` raises as one.
    """
    bomb = f"more than {budget} decompressed bytes in the package (decompression bomb?)"
    if filename.endswith(CONDA_SUFFIX):
        _walk_conda_payload(archive, size, visit, budget, bomb)
    elif filename.endswith(TAR_BZ2_SUFFIX):
        archive.seek(0)
        try:
            _walk_members(_LimitedReader(bz2.BZ2File(archive), budget, bomb), visit)
        except BadPackageError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as error:
            raise BadPackageError(f"not a valid .tar.bz2 archive: {_describe(error)}") from None
    else:
        raise BadPackageError("not a conda package (expected .conda or .tar.bz2)")


def _walk_conda_payload(archive: IO[bytes], size: int, visit: PayloadVisitor, budget: int, bomb: str) -> None:
    try:
        _check_zip_entry_count(archive, size)
        with zipfile.ZipFile(archive) as outer:
            components = [
                entry
                for entry in outer.infolist()
                if entry.filename.startswith("pkg-") and entry.filename.endswith(".tar.zst")
            ]
            if len(components) != 1:
                raise BadPackageError(
                    f"a .conda must hold exactly one pkg-*.tar.zst component, found {len(components)}"
                )
            # Components are stored, not compressed again by the zip, so one fits in the archive; a deflated
            # one claiming more could feed the zstd reader without end (skippable frames yield no bytes).
            if components[0].file_size > size:
                raise BadPackageError(
                    f"the pkg component claims {components[0].file_size} bytes in a {size} byte archive"
                )
            with outer.open(components[0]) as compressed:
                decompressor = zstandard.ZstdDecompressor(max_window_size=PAYLOAD_ZSTD_MAX_WINDOW)
                reader = decompressor.stream_reader(compressed, closefd=False)
                _walk_members(_LimitedReader(reader, budget, bomb), visit)
    except BadPackageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError) as error:
        raise BadPackageError(f"not a valid .conda (zip) archive: {_describe(error)}") from None
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BadPackageError(f"corrupt pkg component in .conda archive: {_describe(error)}") from None


def _walk_members(stream: io.RawIOBase, visit: PayloadVisitor) -> None:
    members = tar_generator(stream, tarfile_open=_open_bounded_tar)
    for count, (tar, member) in enumerate(members, start=1):
        tar.members.clear()  # as in _collect_members: a stream never looks back
        if count > MAX_ARCHIVE_MEMBERS:
            raise BadPackageError(f"the archive holds more than {MAX_ARCHIVE_MEMBERS} members")

        def read(tar: tarfile.TarFile = tar, member: tarfile.TarInfo = member) -> bytes:
            extracted = tar.extractfile(member)
            if extracted is None:
                raise BadPackageError("an archive member that is no file cannot be read")
            return extracted.read()

        visit(member, read)


_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


def _check_zip_entry_count(archive: IO[bytes], size: int) -> None:
    """Refuse a zip whose central directory lists more entries than a .conda has, before zipfile parses
    them all (a few bytes per entry cost it hundreds: a flood of entries is a memory bomb)."""
    tail_size = min(size, _EOCD_SIZE + 0xFFFF)
    archive.seek(size - tail_size)
    tail = archive.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or at + _EOCD_SIZE > len(tail):
        raise BadPackageError("not a valid .conda (zip) archive: File is not a zip file")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    locator = at - 20
    if entries == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        record_offset = int.from_bytes(tail[locator + 8 : locator + 16], "little")
        archive.seek(record_offset)
        record = archive.read(56)
        if record[:4] != _ZIP64_EOCD or len(record) < 56:
            raise BadPackageError("not a valid .conda (zip) archive: bad zip64 end of central directory")
        entries = int.from_bytes(record[32:40], "little")
    if entries > MAX_ZIP_ENTRIES:
        raise BadPackageError(
            f"the zip holds {entries} entries, over the limit of {MAX_ZIP_ENTRIES} for a .conda"
        )
    archive.seek(0)


def _collect_members(stream: io.RawIOBase, *, stop_after_info: bool) -> dict[str, bytes]:
    """Read the wanted metadata members from an uncompressed tar stream, in one forward pass.

    With stop_after_info, the walk ends at the first non-info member once index.json was seen: conda-build
    and rattler-build write info/ first, so the package payload is never decompressed.
    """
    wanted = {INDEX_JSON, RUN_EXPORTS_JSON, ABOUT_JSON}
    found: dict[str, bytes] = {}
    members = tar_generator(stream, tarfile_open=_open_bounded_tar)
    for count, (tar, member) in enumerate(members, start=1):
        # tarfile keeps every member it has walked; a stream never looks back, so keep none.
        tar.members.clear()
        if count > MAX_ARCHIVE_MEMBERS:
            raise BadPackageError(
                f"{INDEX_JSON} not found within the first {MAX_ARCHIVE_MEMBERS} archive members"
            )
        path = member.name.removeprefix("./")
        if path == ABOUT_JSON and member.isfile() and member.size > METADATA_MEMBER_LIMIT:
            # Descriptive only: an oversized about.json is passed over, not a reason to refuse the package.
            wanted.discard(ABOUT_JSON)
        elif path in wanted and member.isfile():
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


# Header members tarfile reads into memory whole (at about three times their size) to name the next one.
_HEADER_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses pax and GNU long-name records larger than metadata may be."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # tarfile's extension point
        if self.type in _HEADER_TYPES and self.size > METADATA_MEMBER_LIMIT:
            raise BadPackageError(
                f"a tar header record of {self.size} bytes, over the {METADATA_MEMBER_LIMIT} byte limit"
            )
        member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return member


def _open_bounded_tar(**options: Any) -> tarfile.TarFile:
    return TarfileNoSameOwner.open(tarinfo=_BoundedTarInfo, **options)


def _parse_json_object(raw: bytes, path: str) -> dict[str, Any]:
    try:
        value = load_strict_json(raw)
    except StrictJsonError as error:
        raise BadPackageError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadPackageError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text and text[0] else type(error).__name__


class _LimitedReader(io.RawIOBase):
    """A read-only stream that fails once more than `limit` bytes were read through it."""

    def __init__(self, inner: IO[bytes], limit: int, reason: str | None = None) -> None:
        self._inner = inner
        self._remaining = limit
        self._reason = reason or f"metadata not found within {limit} decompressed bytes (decompression bomb?)"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        data = self._inner.read(len(view))
        self._remaining -= len(data)
        if self._remaining < 0:
            raise BadPackageError(self._reason)
        view[: len(data)] = data
        return len(data)
