"""The repodata patch package (rattler-index's `--repodata-patch NAME`, conda-forge's practice): the newest
build of a noarch package whose payload holds one `<subdir>/patch_instructions.json` per subdir.

Finding it is a comparison of file names; reading it is bounded like every other package, since anyone who may
upload to noarch may upload a file under that name. The instructions come back as raw bytes: parsing them is
the caller's (reindexer.patches).
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .contract import CONDA_SUFFIX, PATCH_INSTRUCTIONS
from .layout import KNOWN_SUBDIRS, parse_package_filename
from .package_reader import BadPackageError, PackageSpool
from .patches import MAX_INSTRUCTIONS_BYTES
from .store import Store, StoredObject, TransientStoreError

if TYPE_CHECKING:
    from rattler import Version

# One subdir's instructions, at most: as for a subdir's own patch_instructions.json.
MAX_PATCH_MEMBER_BYTES = MAX_INSTRUCTIONS_BYTES
# All subdirs' instructions held at once, at most: conda-forge's add up to some tens of MiB; this leaves room
# for several times that and still fits beside the reindex function's other work in its 2 GiB.
MAX_PATCH_TOTAL_BYTES = 512 * 1024 * 1024
# Decompressed bytes walked in the patch package, at most. Unlike package_reader's budgets this is no ratio of
# the compressed size: the payload is JSON repeating the same dependency lists, which zstd and bzip2 shrink
# hundreds to thousands of times (a real patch package looks like a bomb by ratio). One such package is read
# per run, so a flat cap bounds the cost: 1 GiB of output is about a second of zstd, a few seconds of a bzip2
# bomb of repeated blocks (~3 ms/MiB measured); real bzip2 JSON (~17 MiB/s) needs a ~50 MiB package to get
# there, and reading that costs as much anyway. Twice the held-bytes cap: room for the info/ folder and files
# beside the instructions, so a package within the other bounds is never refused by this one.
PATCH_PAYLOAD_DECOMPRESSED_LIMIT = 1024 * 1024 * 1024

# conda's convention: a build string ends with `_<build number>` (or is the number alone, as in `0`).
_BUILD_NUMBER = re.compile(r"(?:.*_)?([0-9]{1,18})")

PackageKey = tuple["Version", int, str, int, str]


def find_patch_package(objects: Iterable[StoredObject], name: str) -> StoredObject | None:
    """The newest package file named `name` in a noarch listing, in conda's order: version (rattler's
    comparison), then build number (the build string's trailing `_<n>`; none ranks below any), then build
    string, then `.conda` over `.tar.bz2` of the same build. Files whose names do not parse, or whose version
    rattler refuses, are passed over. None when there is no such file."""
    # Imported here, as record_schema does, so that importing this module stays cheap.
    from rattler import Version

    best: tuple[PackageKey, StoredObject] | None = None
    for obj in objects:
        filename = parse_package_filename(obj.name)
        if filename is None or filename.name != name:
            continue
        try:
            version = Version(filename.version)
        except Exception:  # rattler raises its own exception types
            continue
        number = _BUILD_NUMBER.fullmatch(filename.build)
        key: PackageKey = (
            version,
            int(number.group(1)) if number else -1,
            filename.build,
            1 if filename.extension == CONDA_SUFFIX else 0,
            obj.key,  # equal versions written differently (1.0, 1.0.0): any fixed choice
        )
        if best is None or key > best[0]:
            best = (key, obj)
    return best[1] if best else None


def read_patch_instructions(store: Store, obj: StoredObject, *, max_size: int) -> dict[str, bytes]:
    """Download the patch package `obj` and return the raw bytes of each `<subdir>/patch_instructions.json`
    of its payload, by subdir (known subdirs only; other files are passed over).

    Everything wrong with the archive is a BadPackageError with a one-line reason: over `max_size`, not a
    package, a bomb, too many members, a patch file over MAX_PATCH_MEMBER_BYTES (or all of them over
    MAX_PATCH_TOTAL_BYTES), one that is a link or a folder or appears twice, a member whose path (or a link
    whose target) leaves the package. The store's errors propagate as they are, and so does the spool's
    ReadResourceError (no temporary disk now); an object that is no longer the one listed (another ETag or
    size) is a TransientStoreError, to be read again from a fresh listing.
    """
    if obj.size > max_size:
        raise BadPackageError(f"the package is {obj.size} bytes, over the limit of {max_size}")
    with PackageSpool(max_size) as spool:

        def expect(current: StoredObject) -> None:
            if (current.etag, current.size) != (obj.etag, obj.size):
                raise TransientStoreError(f"{store.describe(obj.key)} changed since it was listed")
            spool.expect(current.size)

        fetched = store.download(obj.key, spool.write, expect=expect)
        received = spool.digests().size
        if (fetched.etag, fetched.size, received) != (obj.etag, obj.size, obj.size):
            raise TransientStoreError(
                f"{store.describe(obj.key)} changed since it was listed ({received} of {obj.size} bytes read)"
            )
        if received == 0:
            raise BadPackageError("empty file (0 bytes)")
        collector = _Collector()
        spool.walk_payload(obj.name, collector.visit, budget=PATCH_PAYLOAD_DECOMPRESSED_LIMIT)
    return dict(sorted(collector.found.items()))


class _Collector:
    """Keeps the patch files met in a walk of the payload, refusing what a patch package cannot hold."""

    def __init__(self) -> None:
        self.found: dict[str, bytes] = {}
        self._held = 0

    def visit(self, member: tarfile.TarInfo, read: Callable[[], bytes]) -> None:
        parts = _inside(member.name, member.name)
        if member.issym():
            _inside(posixpath.join(posixpath.dirname(member.name), member.linkname), member.name)
        elif member.islnk():
            _inside(member.linkname, member.name)
        if len(parts) != 2 or parts[1] != PATCH_INSTRUCTIONS or parts[0] not in KNOWN_SUBDIRS:
            return
        subdir = parts[0]
        path = f"{subdir}/{PATCH_INSTRUCTIONS}"
        if not member.isfile():
            raise BadPackageError(f"{path} in the package is a {_kind(member)}, not a file")
        if subdir in self.found:
            raise BadPackageError(f"{path} appears more than once in the package")
        if member.size > MAX_PATCH_MEMBER_BYTES:
            raise BadPackageError(
                f"{path} is {member.size} bytes, over the {MAX_PATCH_MEMBER_BYTES} byte limit of one subdir's"
            )
        if self._held + member.size > MAX_PATCH_TOTAL_BYTES:
            raise BadPackageError(
                f"the patch instructions add up to more than {MAX_PATCH_TOTAL_BYTES} bytes (at {path})"
            )
        data = read()
        if len(data) != member.size:
            raise BadPackageError(f"{path} is cut short in the package")
        self.found[subdir] = data
        self._held += len(data)


def _inside(path: str, member: str) -> list[str]:
    """The parts of a path in the package, resolved as an extraction would ('.', '..', repeated '/');
    BadPackageError if it is absolute or climbs out of the package."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if not parts:
                raise BadPackageError(f"the member {_show(member)} points outside the package")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if path.startswith("/"):
        raise BadPackageError(f"the member {_show(member)} points outside the package")
    return parts


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdir():
        return "folder"
    return "special file"


def _show(value: Any, limit: int = 80) -> str:
    """A member name for a reason: repr'd (no line breaks) and shortened (names may be long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
