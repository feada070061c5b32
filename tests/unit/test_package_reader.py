"""Reading archives: digests over the whole file, info/ metadata, and every way an archive can be bad."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import zipfile

import pytest
import zstandard

from reindexer import package_reader
from reindexer.package_reader import BadPackageError, PackageSpool, read_metadata
from tests.support.archives import (
    conda_archive,
    index_json,
    package_bytes,
    tar_bytes,
    tar_bz2_archive,
)
from tests.support.checks import record_from_bytes

CONDA = "pkg-1.0-h0_0.conda"
TAR_BZ2 = "pkg-1.0-h0_0.tar.bz2"
BOTH_FORMATS = pytest.mark.parametrize("filename", [CONDA, TAR_BZ2])
BIG = b"\0" * (1024 * 1024)
SMALL_LIMIT = 64 * 1024


def read(filename: str, data: bytes) -> package_reader.PackageMetadata:
    return read_metadata(filename, io.BytesIO(data))


def assert_one_line(error: pytest.ExceptionInfo[BadPackageError]) -> None:
    message = str(error.value)
    assert message.strip(), "the reason must not be empty"
    assert "\n" not in message


def real_package(small_channel, extension: str):
    folder, packages = small_channel
    package = next(p for p in packages if p.archive == extension)
    return package, (folder / package.key).read_bytes()


# --- bad archives -------------------------------------------------------------------------------------


@BOTH_FORMATS
def test_random_bytes_are_a_bad_package(filename):
    garbage = random.Random(0).randbytes(4096)

    with pytest.raises(BadPackageError) as error:
        read(filename, garbage)
    assert_one_line(error)


@pytest.mark.parametrize("extension", [".conda", ".tar.bz2"])
def test_real_archive_cut_in_half_is_a_bad_package(small_channel, extension):
    package, data = real_package(small_channel, extension)

    with pytest.raises(BadPackageError) as error:
        read(package.filename, data[: len(data) // 2])
    assert_one_line(error)


@BOTH_FORMATS
def test_empty_file_is_a_bad_package(filename):
    with pytest.raises(BadPackageError) as error:
        read(filename, b"")
    assert_one_line(error)


def test_conda_without_info_component_is_a_bad_package():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr("pkg-pkg-1.0-h0_0.tar.zst", zstandard.ZstdCompressor().compress(tar_bytes({})))

    with pytest.raises(BadPackageError, match=r"exactly one info-\*\.tar\.zst component, found 0") as error:
        read(CONDA, buffer.getvalue())
    assert_one_line(error)


def test_conda_with_corrupt_info_component_is_a_bad_package():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("info-pkg-1.0-h0_0.tar.zst", b"this is not zstd")

    with pytest.raises(BadPackageError, match="corrupt info component") as error:
        read(CONDA, buffer.getvalue())
    assert_one_line(error)


@BOTH_FORMATS
def test_archive_without_index_json_is_a_bad_package(filename):
    with pytest.raises(BadPackageError, match=re.escape("no info/index.json")) as error:
        read(filename, package_bytes(filename, None, {"info/about.json": b"{}"}))
    assert_one_line(error)


@BOTH_FORMATS
@pytest.mark.parametrize("raw", [b"{not json", b'{"name": "pkg",', b"\xc3\x28"])
def test_index_json_that_is_not_json_is_a_bad_package(filename, raw):
    with pytest.raises(BadPackageError, match=re.escape("info/index.json is not valid JSON")) as error:
        read(filename, package_bytes(filename, raw))
    assert_one_line(error)


@BOTH_FORMATS
@pytest.mark.parametrize(("raw", "kind"), [(b"[1, 2]", "list"), (b'"pkg"', "str"), (b"null", "NoneType")])
def test_index_json_that_is_not_an_object_is_a_bad_package(filename, raw, kind):
    with pytest.raises(BadPackageError, match=f"must hold a JSON object, not {kind}") as error:
        read(filename, package_bytes(filename, raw))
    assert_one_line(error)


@BOTH_FORMATS
@pytest.mark.parametrize("raw", [b"{", b"[]"])
def test_invalid_run_exports_json_is_a_bad_package(filename, raw):
    data = package_bytes(filename, index_json(), {"info/run_exports.json": raw})

    with pytest.raises(BadPackageError, match=re.escape("info/run_exports.json")) as error:
        read(filename, data)
    assert_one_line(error)


@BOTH_FORMATS
def test_oversized_index_json_is_a_bad_package(filename, monkeypatch):
    monkeypatch.setattr(package_reader, "METADATA_MEMBER_LIMIT", 32)
    data = package_bytes(filename, index_json(license="x" * 100))

    with pytest.raises(BadPackageError, match="over the 32 byte limit") as error:
        read(filename, data)
    assert_one_line(error)


def conda_bomb() -> bytes:
    return conda_archive(
        "pkg-1.0-h0_0", {"info/aaa-filler": BIG, "info/index.json": json.dumps(index_json()).encode()}
    )


def tar_bz2_bomb() -> bytes:
    return tar_bz2_archive({"share/filler": BIG, "info/index.json": json.dumps(index_json()).encode()})


def test_conda_decompression_bomb_stops_at_the_limit(monkeypatch):
    assert read(CONDA, conda_bomb()).index["name"] == "pkg"  # readable under the real limit

    monkeypatch.setattr(package_reader, "CONDA_INFO_DECOMPRESSED_LIMIT", SMALL_LIMIT)
    with pytest.raises(BadPackageError, match="decompression bomb") as error:
        read(CONDA, conda_bomb())
    assert_one_line(error)


def test_tar_bz2_decompression_bomb_stops_at_the_limit(monkeypatch):
    assert read(TAR_BZ2, tar_bz2_bomb()).index["name"] == "pkg"  # readable under the real limit

    monkeypatch.setattr(package_reader, "TAR_BZ2_DECOMPRESSED_LIMIT", SMALL_LIMIT)
    with pytest.raises(BadPackageError, match="decompression bomb") as error:
        read(TAR_BZ2, tar_bz2_bomb())
    assert_one_line(error)


def test_unknown_extension_is_a_bad_package():
    with pytest.raises(BadPackageError, match="not a conda package"):
        read("pkg-1.0-h0_0.zip", package_bytes(TAR_BZ2, index_json()))


# --- good archives ------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [".conda", ".tar.bz2"])
def test_real_package_record_digests_cover_the_whole_file(small_channel, extension):
    package, data = real_package(small_channel, extension)

    record = record_from_bytes(package.filename, data, package.subdir)

    assert record["md5"] == hashlib.md5(data).hexdigest()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["size"] == len(data)
    assert (record["name"], record["version"], record["build"]) == (
        package.name,
        package.version,
        package.build,
    )
    assert record["subdir"] == package.subdir
    assert record["depends"] == list(package.depends)
    assert record["build_number"] == package.build_number


@pytest.mark.parametrize("extension", [".conda", ".tar.bz2"])
def test_spool_digests_do_not_depend_on_chunking(small_channel, extension):
    package, data = real_package(small_channel, extension)

    with PackageSpool(memory_limit=100) as spool:  # spills to disk
        for start in range(0, len(data), 7):
            spool.write(data[start : start + 7])
        digests = spool.digests()
        metadata = spool.read_metadata(package.filename)

    assert (digests.md5, digests.sha256, digests.size) == (
        hashlib.md5(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
        len(data),
    )
    assert metadata.index["name"] == package.name


@BOTH_FORMATS
def test_run_exports_are_carried_into_the_record(filename):
    run_exports = {"weak": ["pkg >=1.0,<2"], "strong": ["libpkg >=1.0"]}
    data = package_bytes(filename, index_json(), {"info/run_exports.json": json.dumps(run_exports).encode()})

    record = record_from_bytes(filename, data, "linux-64")

    assert record["run_exports"] == run_exports


@BOTH_FORMATS
def test_record_without_run_exports_has_no_run_exports_key(filename):
    record = record_from_bytes(filename, package_bytes(filename, index_json()), "linux-64")

    assert "run_exports" not in record


def test_tar_bz2_with_info_first_is_read_without_decompressing_the_payload(monkeypatch):
    monkeypatch.setattr(package_reader, "TAR_BZ2_DECOMPRESSED_LIMIT", SMALL_LIMIT)
    data = tar_bz2_archive(
        {
            "info/index.json": json.dumps(index_json()).encode(),
            "info/about.json": b"{}",
            "share/huge": BIG * 4,
        }
    )

    assert read(TAR_BZ2, data).index == index_json()


def test_tar_bz2_run_exports_after_index_json_is_still_found(monkeypatch):
    monkeypatch.setattr(package_reader, "TAR_BZ2_DECOMPRESSED_LIMIT", SMALL_LIMIT)
    data = tar_bz2_archive(
        {
            "info/index.json": json.dumps(index_json()).encode(),
            "info/paths.json": b"{}",
            "info/run_exports.json": b'{"weak": ["pkg"]}',
            "share/huge": BIG * 4,
        }
    )

    assert read(TAR_BZ2, data).run_exports == {"weak": ["pkg"]}


def test_tar_bz2_members_with_dot_slash_prefix_are_found():
    data = tar_bz2_archive({"./info/index.json": json.dumps(index_json()).encode(), "./share/a": b"a"})

    assert read(TAR_BZ2, data).index["name"] == "pkg"


@BOTH_FORMATS
def test_depends_is_always_present_in_the_record(filename):
    index = index_json()
    del index["depends"]

    record = record_from_bytes(filename, package_bytes(filename, index), "linux-64")

    assert record["depends"] == []


@pytest.mark.parametrize("extension", [".conda", ".tar.bz2"])
def test_record_keys_are_sorted(small_channel, extension):
    package, data = real_package(small_channel, extension)

    record = record_from_bytes(package.filename, data, package.subdir)

    assert list(record) == sorted(record)
