"""Fuzzing the package reader: whatever bytes a package file holds, reading it the way the indexer reads one
package (reindexer.package_fetch.read_package on a LocalStore) gives a record or a one-line rejection from
BadPackageError, never another exception, and within bounded time (hypothesis' deadline).

Three sources of inputs: arbitrary bytes (some behind a valid magic number), byte-level mutations of valid
small archives of both formats (rattler-build's and hand-made ones with run_exports), and mutations of the
uncompressed tar inside a valid archive (or of its index.json / run_exports.json), packed again, so that
the mutations reach tarfile, the JSON parser and the record schema rather than stop at a checksum.

The suite runs a short, derandomized pass (the same examples in every run). `make fuzz` runs the same
properties much longer with fresh randomness: REINDEXER_FUZZ=long, REINDEXER_FUZZ_EXAMPLES per property
(default 20,000).
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import io
import json
import os
import re
import tarfile
import tempfile
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from devtools.sample_channel import SamplePackage, build_packages
from reindexer.contract import DEFAULT_MAX_PACKAGE_MB
from reindexer.layout import parse_package_filename
from reindexer.package_fetch import Outcome, read_package
from reindexer.package_reader import METADATA_MEMBER_LIMIT, BadPackageError, PackageSpool, read_metadata
from reindexer.records import build_record, encode_record
from reindexer.shards import check_shardable
from reindexer.state import IndexedPackage, RejectedFile
from reindexer.storage.local import LocalStore
from reindexer.store import StoredObject
from tests.support.archives import index_json, tar_bytes

LONG = os.environ.get("REINDEXER_FUZZ", "").strip().lower() == "long"
LONG_EXAMPLES = int(os.environ.get("REINDEXER_FUZZ_EXAMPLES", "20000"))
# Each read must finish in this time: the inputs are small, so even the 8 MiB decompression floor is far.
DEADLINE = timedelta(seconds=2)


def fuzz_settings(suite_examples: int) -> settings:
    """Short and deterministic in the suite; long and freshly random under `make fuzz`."""
    return settings(
        max_examples=LONG_EXAMPLES if LONG else suite_examples,
        derandomize=not LONG,
        deadline=DEADLINE,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


SUBDIR = "linux-64"
MAX_SIZE = DEFAULT_MAX_PACKAGE_MB * 1024 * 1024
STEM = "pkg-1.0-h0_0"
CONDA = f"{STEM}.conda"
TAR_BZ2 = f"{STEM}.tar.bz2"
# The fallback reason read_package gives to an exception it did not expect from the content.
UNEXPECTED = "could not be read: unexpected"


# --- the seeds ----------------------------------------------------------------------------------------

INDEX = json.dumps(index_json(subdir=SUBDIR, depends=["python >=3.11,<3.12.0a0", "zlib"])).encode()
RUN_EXPORTS = json.dumps({"weak": ["pkg >=1.0,<2.0a0"], "strong_constrains": ["other <2"]}).encode()
# info/ members of the hand-made seeds, in archive order.
INFO = {
    "info/index.json": INDEX,
    "info/about.json": b'{"summary": "a package"}',
    "info/run_exports.json": RUN_EXPORTS,
    "info/paths.json": b'{"paths": [], "paths_version": 1}',
}
PAYLOAD = {"share/pkg/a.txt": b"a" * 300, "lib/libpkg.so": bytes(range(256)) * 4}
INNER_TARGETS = ("tar", "info/index.json", "info/run_exports.json")


def pack(filename: str, tar: bytes) -> bytes:
    """An uncompressed tar stream as a package: the info component of a .conda (a STORED zip with fixed
    dates, so the seeds are the same bytes in every run), or the whole .tar.bz2."""
    if not filename.endswith(".conda"):
        return bz2.compress(tar)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in (
            ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
            (f"pkg-{STEM}.tar.zst", zstandard.ZstdCompressor().compress(tar_bytes(PAYLOAD))),
            (f"info-{STEM}.tar.zst", zstandard.ZstdCompressor().compress(tar)),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def inner_tar(filename: str, info: dict[str, bytes]) -> bytes:
    return tar_bytes(info if filename.endswith(".conda") else {**info, **PAYLOAD})


# Hand-made seeds, each a valid package with run_exports; then one of each format as rattler-build writes
# them (built once, on first use).
HAND_MADE = [(CONDA, pack(CONDA, inner_tar(CONDA, INFO))), (TAR_BZ2, pack(TAR_BZ2, inner_tar(TAR_BZ2, INFO)))]
REAL = [
    SamplePackage(SUBDIR, "real", "1.0", "h0_0", extension, depends=("python >=3.11",), payload="real\n")
    for extension in (".conda", ".tar.bz2")
]
SEED_COUNT = len(HAND_MADE) + len(REAL)
# Where the info component of the hand-made .conda (seed 0) is described in its zip's central directory.
INFO_ENTRY = HAND_MADE[0][1].rfind(b"PK\x01\x02")


@functools.cache
def seeds() -> list[tuple[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="fuzz-seeds-") as folder:
        real = [(path.name, path.read_bytes()) for path in build_packages(REAL, Path(folder))]
    return HAND_MADE + real


@pytest.fixture(scope="session")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reader-fuzz")


# --- mutations ----------------------------------------------------------------------------------------

FLIP, SET, INSERT, DELETE, TRUNCATE = range(5)
# (kind, position, value): the position is taken modulo the length, so a mutation fits any seed.
mutation = st.tuples(
    st.integers(FLIP, TRUNCATE),
    st.integers(0, 1 << 20),
    st.binary(min_size=1, max_size=16),
)
mutations = st.lists(mutation, min_size=1, max_size=8)


def mutate(data: bytes, changes: list[tuple[int, int, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in changes:
        at = position % (len(buffer) + 1)
        if kind == FLIP and at < len(buffer):
            buffer[at] ^= 1 << (value[0] % 8)
        elif kind == SET and at < len(buffer):
            buffer[at] = value[0]
        elif kind == INSERT:
            buffer[at:at] = value
        elif kind == DELETE:
            del buffer[at : at + len(value)]
        elif kind == TRUNCATE:
            del buffer[at:]
    return bytes(buffer)


# --- the property -------------------------------------------------------------------------------------


def read_like_the_indexer(folder: Path, filename: str, data: bytes) -> Outcome:
    """One package file in a local channel folder, read by the indexer's own read_package."""
    key = f"{SUBDIR}/{filename}"
    path = folder / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        return read_package(
            LocalStore(folder), SUBDIR, StoredObject(key, "fuzz", len(data)), max_size=MAX_SIZE
        )
    finally:
        path.unlink()


def assert_record_or_rejection(folder: Path, filename: str, data: bytes) -> None:
    """An indexed record, or a one-line rejection that is a BadPackageError's verdict, never the
    catch-all for an exception nobody expected."""
    outcome = read_like_the_indexer(folder, filename, data)
    if isinstance(outcome, IndexedPackage):
        event("indexed")
        record = json.loads(outcome.record)
        assert isinstance(record, dict)
        assert record["size"] == len(data)
        return
    assert isinstance(outcome, RejectedFile), f"neither a record nor a rejection: {outcome!r}"
    assert outcome.reason.strip()
    assert "\n" not in outcome.reason
    event(f"rejected: {verdict_kind(outcome.reason)}")  # counted by --hypothesis-show-statistics
    if outcome.reason.startswith(UNEXPECTED):
        raise_unexpected(filename, data)
        pytest.fail(f"read_package refused the file for an unexpected exception: {outcome.reason}")


def verdict_kind(reason: str) -> str:
    """A rejection reason without the values it quotes: what kind of rejection it is."""
    return " ".join(re.split(r"['\"]|\b[0-9]", reason, maxsplit=1)[0].split()[:6])


def raise_unexpected(filename: str, data: bytes) -> None:
    """The read_package steps once more, without its catch-all, so a failure shows the real traceback."""
    parsed = parse_package_filename(filename)
    assert parsed is not None
    with PackageSpool(MAX_SIZE) as spool:
        spool.expect(len(data))
        spool.write(data)
        try:
            record = build_record(parsed, SUBDIR, spool.read_metadata(filename), spool.digests())
            encode_record(record)
            check_shardable(record)
        except BadPackageError:
            pass


# --- (i) arbitrary bytes ------------------------------------------------------------------------------

MAGIC = [b"", b"BZh9", b"BZh91AY&SY", b"PK\x03\x04", b"PK\x05\x06", b"\x28\xb5\x2f\xfd"]


@fuzz_settings(suite_examples=40)
@given(
    filename=st.sampled_from([CONDA, TAR_BZ2]),
    magic=st.sampled_from(MAGIC),
    data=st.binary(max_size=4096),
)
@example(filename=CONDA, magic=b"", data=b"")
@example(filename=TAR_BZ2, magic=b"BZh9", data=b"")
def test_arbitrary_bytes_are_a_record_or_a_rejection(fuzz_folder, filename, magic, data):
    assert_record_or_rejection(fuzz_folder, filename, magic + data)


# --- (ii) mutations of valid archives -----------------------------------------------------------------


@fuzz_settings(suite_examples=80)
@given(seed=st.integers(0, SEED_COUNT - 1), changes=mutations)
# Found by this fuzzer: zipfile raises NotImplementedError or RuntimeError, which the reader does not turn
# into a BadPackageError, for a central directory entry that asks for a newer zip version than 6.3, for an
# unknown compression method, and for the encrypted / compressed-patched / strong-encryption flag bits.
@example(seed=0, changes=[(SET, INFO_ENTRY + 6, b"\x54")])  # version needed to extract: 8.4
@example(seed=0, changes=[(SET, INFO_ENTRY + 10, b"\x63")])  # compression method 99
@example(seed=0, changes=[(SET, INFO_ENTRY + 8, b"\x01")])  # flag bit 0: encrypted
@example(seed=0, changes=[(SET, INFO_ENTRY + 8, b"\x20")])  # flag bit 5: compressed patched data
@example(seed=0, changes=[(SET, INFO_ENTRY + 8, b"\x40")])  # flag bit 6: strong encryption
def test_mutated_archives_are_a_record_or_a_rejection(fuzz_folder, seed, changes):
    filename, data = seeds()[seed]
    assert_record_or_rejection(fuzz_folder, filename, mutate(data, changes))


# --- (iii) mutations inside valid archives ------------------------------------------------------------


@fuzz_settings(suite_examples=80)
@given(
    filename=st.sampled_from([CONDA, TAR_BZ2]),
    target=st.sampled_from(INNER_TARGETS),
    changes=mutations,
)
def test_mutated_tar_and_metadata_are_a_record_or_a_rejection(fuzz_folder, filename, target, changes):
    if target == "tar":
        tar = mutate(inner_tar(filename, INFO), changes)
    else:
        tar = inner_tar(filename, {**INFO, target: mutate(INFO[target], changes)})
    assert_record_or_rejection(fuzz_folder, filename, pack(filename, tar))


def test_the_seeds_are_indexed(fuzz_folder):
    """The mutations start from packages the indexer accepts."""
    for filename, data in seeds():
        outcome = read_like_the_indexer(fuzz_folder, filename, data)
        assert isinstance(outcome, IndexedPackage), (filename, outcome)


# --- memory: headers tarfile reads whole --------------------------------------------------------------


def tar_with_long_header(kind: str, length: int) -> bytes:
    """index.json behind a header of `length` bytes that tarfile reads into memory in one piece."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        index = tarfile.TarInfo("info/index.json")
        index.size = len(INDEX)
        if kind == "pax":
            index.pax_headers = {"comment": "x" * length}
            tar.format = tarfile.PAX_FORMAT
        else:
            long_entry = tarfile.TarInfo("info/" + "x" * length if kind == "gnu long name" else "info/link")
            if kind == "gnu long link":
                long_entry.type = tarfile.SYMTYPE
                long_entry.linkname = "x" * length
            tar.addfile(long_entry)
        tar.addfile(index, io.BytesIO(INDEX))
    return buffer.getvalue()


def traced_peak(filename: str, data: bytes) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(BadPackageError):
            read_metadata(filename, io.BytesIO(data))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Found by bench/worst_inputs.py: tarfile reads a pax or GNU long name/link header whole (about 3x its
# size), so before the reader refused large ones its memory grew with the decompression budget.
@pytest.mark.parametrize("kind", ["pax", "gnu long name", "gnu long link"])
@pytest.mark.parametrize("filename", [CONDA, TAR_BZ2])
def test_a_long_member_header_costs_no_more_memory_than_a_metadata_member(filename, kind):
    """A 7 MiB header (within the 8 MiB decompression floor) costs what a short one does, give or take
    METADATA_MEMBER_LIMIT, and is refused by name."""
    short = pack(filename, tar_with_long_header(kind, 16))
    long = pack(filename, tar_with_long_header(kind, 7 * 1024 * 1024))

    assert traced_peak(filename, long) <= traced_peak(filename, short) + 2 * METADATA_MEMBER_LIMIT
    with pytest.raises(BadPackageError, match=r"a tar header record of .* over the 262144 byte limit"):
        read_metadata(filename, io.BytesIO(long))
