"""The repodata patch package: the newest build is found by conda's order, its
`<subdir>/patch_instructions.json` files are read from real packages of both formats, and hostile packages are
refused in one line, in bounded time and memory."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import reindexer
from reindexer import patch_package
from reindexer.package_reader import MAX_ARCHIVE_MEMBERS, MAX_ZIP_ENTRIES, BadPackageError
from reindexer.patch_package import (
    MAX_PATCH_MEMBER_BYTES,
    PATCH_PAYLOAD_DECOMPRESSED_LIMIT,
    find_patch_package,
    read_patch_instructions,
)
from reindexer.storage.memory import MemoryStore
from reindexer.store import NotFoundError, StoredObject, TransientStoreError
from tests.support.archives import (
    PATCH_PACKAGE_NAME as NAME,
)
from tests.support.archives import (
    ZEROS_CHUNK,
    build_patch_package,
    bz2_bomb,
    index_json,
    info_members,
    member_flood_tar,
    tar_bytes,
    tar_bz2_from_tar,
    zstd,
    zstd_bomb_info,
)

MAX_SIZE = 1024 * 1024 * 1024
FORMATS = pytest.mark.parametrize("extension", [".conda", ".tar.bz2"])
LINUX = "linux-64/patch_instructions.json"
# A bomb's zeros: just past the budget, so the walk must stop at the budget, not at the end of the member.
BOMB_ZEROS = PATCH_PAYLOAD_DECOMPRESSED_LIMIT + ZEROS_CHUNK
# What refusing a bomb may cost, at most (measured: 0.3 s for zstd, 3.5 s for bzip2; about three times that
# under tracemalloc).
BOMB_SECONDS = 30.0
# Python memory a refused bomb may hold at once (its bytes stream through in small reads).
BOMB_PEAK_BYTES = 32 * 1024 * 1024


def instructions(subdir: str, count: int = 3) -> bytes:
    packages = {
        f"pkg{number}-1.0-h0_{number}.conda": {"depends": ["python >=3.10,<3.11.0a0", f"lib{subdir} >=1"]}
        for number in range(count)
    }
    document = {"patch_instructions_version": 1, "packages": {}, "packages.conda": packages, "remove": []}
    return json.dumps(document, indent=1).encode()


def stored(store: MemoryStore, filename: str, data: bytes) -> StoredObject:
    store.write(f"noarch/{filename}", data, content_type="application/octet-stream")
    (found,) = [obj for obj in store.list_folder("noarch").objects if obj.name == filename]
    return found


def read(filename: str, data: bytes, max_size: int = MAX_SIZE) -> dict[str, bytes]:
    store = MemoryStore()
    return read_patch_instructions(store, stored(store, filename, data), max_size=max_size)


def assert_one_line(error: pytest.ExceptionInfo[BaseException]) -> None:
    message = str(error.value)
    assert message.strip(), "the reason must not be empty"
    assert "\n" not in message
    assert len(message) <= 300


def refused(filename: str, data: bytes, phrase: str) -> None:
    with pytest.raises(BadPackageError, match=phrase) as error:
        read(filename, data)
    assert_one_line(error)


# --- archives built by hand (the hostile ones) --------------------------------------------------------------


def file_member(path: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.size = len(data)
    return info, data


def link_member(path: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type = kind
    info.linkname = target
    return info, b""


def folder_member(path: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE
    return info, b""


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def conda_of(
    payload_tar_zst: bytes, *, info: dict[str, bytes] | None = None, extra_entries: int = 0
) -> bytes:
    """A .conda (STORED zip) around an already compressed payload tarball."""
    stem = f"{NAME}-1.0-h0_0"
    info_tar = tar_bytes(info or info_members(index_json(NAME)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"pkg-{stem}.tar.zst", payload_tar_zst)
        archive.writestr(f"info-{stem}.tar.zst", zstd(info_tar))
        for number in range(extra_entries):
            archive.writestr(f"junk/{number:06d}", b"")
    return buffer.getvalue()


def package_of(extension: str, payload_tar: bytes) -> tuple[str, bytes]:
    """A package of either format whose payload is the given uncompressed tarball (a .tar.bz2 gets it
    whole, with no info/ folder: the walk does not need one)."""
    filename = f"{NAME}-1.0-h0_0{extension}"
    if extension == ".conda":
        return filename, conda_of(zstd(payload_tar))
    return filename, tar_bz2_from_tar(payload_tar)


# --- reading real packages ----------------------------------------------------------------------------------


@FORMATS
def test_reads_each_subdirs_instructions_from_a_real_package(tmp_path, extension):
    files = {
        LINUX: instructions("linux-64"),
        "noarch/patch_instructions.json": instructions("noarch"),
        # Passed over: not a known subdir, not at a subdir's top, not the instructions file.
        "not-a-subdir/patch_instructions.json": b"{}",
        "linux-64/old/patch_instructions.json": b"{}",
        "linux-64/patch_instructions.json.bak": b"{}",
        "share/README.txt": b"patches",
    }
    filename, data = build_patch_package(tmp_path, files, extension=extension)
    store = MemoryStore()
    stored(store, filename, data)
    store.write("noarch/repodata.json", b"{}", content_type="application/json")

    found = find_patch_package(store.list_folder("noarch").objects, NAME)
    assert found is not None and found.name == filename
    result = read_patch_instructions(store, found, max_size=MAX_SIZE)

    assert result == {"linux-64": files[LINUX], "noarch": files["noarch/patch_instructions.json"]}


@FORMATS
def test_a_package_without_instructions_gives_none(tmp_path, extension):
    filename, data = build_patch_package(tmp_path, {"share/README.txt": b"none"}, extension=extension)

    assert read(filename, data) == {}


@FORMATS
def test_instructions_that_compress_hundreds_of_times_are_read(tmp_path, extension):
    # Far past the ratios package_reader allows (64x, 8x): a patch package is judged by a flat budget.
    document = json.loads(instructions("linux-64", count=1000))
    document["revoke"] = [f"pkg-1.0-h0_{number % 10}.conda" for number in range(400_000)]
    big = json.dumps(document, indent=1).encode()
    filename, data = build_patch_package(tmp_path, {LINUX: big}, extension=extension)
    assert len(big) > 8 * 1024 * 1024 and len(big) > 200 * len(data)

    assert read(filename, data) == {"linux-64": big}


def test_instructions_in_the_info_folder_are_not_the_payloads(tmp_path):
    conda = conda_of(
        zstd(tar_bytes({"share/a": b"a"})), info={**info_members(index_json(NAME)), LINUX: b"{}"}
    )
    assert read(f"{NAME}-1.0-h0_0.conda", conda) == {}
    tar_bz2 = tar_bz2_from_tar(tar_of([file_member(f"info/{LINUX}", b"{}"), file_member("share/a", b"a")]))
    assert read(f"{NAME}-1.0-h0_0.tar.bz2", tar_bz2) == {}


@FORMATS
def test_dotted_member_paths_are_read_as_extraction_would(extension):
    payload = tar_of(
        [
            file_member("./linux-64/patch_instructions.json", b"1"),
            file_member("noarch/./x/../patch_instructions.json", b"2"),
        ]
    )

    assert read(*package_of(extension, payload)) == {"linux-64": b"1", "noarch": b"2"}


# --- the newest build ---------------------------------------------------------------------------------------


def listing(*names: str) -> list[StoredObject]:
    objects = [StoredObject(f"noarch/{name}", f"etag-{name}", 1000) for name in names]
    random.Random(len(names)).shuffle(objects)  # the listing's order never matters
    return objects


def newest(*names: str) -> str | None:
    found = find_patch_package(listing(*names), NAME)
    return None if found is None else found.name


def test_versions_compare_as_versions_not_text():
    assert newest(f"{NAME}-1.9-h0_0.conda", f"{NAME}-1.10-h0_0.conda", f"{NAME}-1.2-h0_0.conda") == (
        f"{NAME}-1.10-h0_0.conda"
    )
    dated = [f"{NAME}-2024.12.31.23.59.59-h0_0.conda", f"{NAME}-2025.01.01.00.00.00-h0_0.tar.bz2"]
    assert newest(*dated) == dated[1]


def test_a_higher_build_number_wins_within_a_version():
    names = [f"{NAME}-1.0-hffff_1.conda", f"{NAME}-1.0-h0000_2.conda", f"{NAME}-1.0-hzzzz.conda"]
    assert newest(*names) == f"{NAME}-1.0-h0000_2.conda"
    # A newer version wins whatever its build number.
    assert newest(f"{NAME}-1.0-h0_9.conda", f"{NAME}-1.1-h0_0.conda") == f"{NAME}-1.1-h0_0.conda"
    # A build string that is the number alone (defaults' '0', '1').
    assert newest(f"{NAME}-1.0-1.tar.bz2", f"{NAME}-1.0-0.tar.bz2") == f"{NAME}-1.0-1.tar.bz2"


def test_the_conda_format_is_preferred_for_the_same_build():
    assert newest(f"{NAME}-1.0-h0_0.tar.bz2", f"{NAME}-1.0-h0_0.conda") == f"{NAME}-1.0-h0_0.conda"
    # But not over a newer build.
    assert newest(f"{NAME}-1.0-h0_1.tar.bz2", f"{NAME}-1.0-h0_0.conda") == f"{NAME}-1.0-h0_1.tar.bz2"


def test_other_files_and_names_that_do_not_parse_are_passed_over():
    names = [
        f"{NAME}-1.0-h0_0.conda",
        f"{NAME}-9..0-h0_0.conda",  # rattler refuses the version
        f"{NAME}-9.0$-h0_0.conda",
        f"{NAME}-9.0.conda",  # no build string
        f"{NAME}-9.0-h0_0.zip",
        f"other-{NAME}-9.0-h0_0.conda",
        f"{NAME}-extra-9.0-h0_0.conda",
        "repodata.json",
        "patch_instructions.json",
    ]
    assert newest(*names) == f"{NAME}-1.0-h0_0.conda"
    assert newest(*names[1:]) is None
    assert newest() is None


def test_versions_equal_but_written_differently_give_a_fixed_choice():
    names = [f"{NAME}-1.0-h0_0.conda", f"{NAME}-1.0.0-h0_0.conda"]
    choices = {find_patch_package(listing(*order), NAME) for order in (names, names[::-1])}
    assert len(choices) == 1


def test_importing_the_module_does_not_load_rattler():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(reindexer.__file__).parent.parent)])}
    arguments = ["--import", "reindexer.patch_package", "--top-level", "rattler"]
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.loaded_modules", *arguments],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# --- the store --------------------------------------------------------------------------------------------


def test_store_failures_propagate_as_the_stores_errors(tmp_path):
    filename, data = build_patch_package(tmp_path, {LINUX: b"{}"})
    store = MemoryStore()
    obj = stored(store, filename, data)

    store.fail("GetObject", "noarch/*", TransientStoreError("slow down (503)"))
    with pytest.raises(TransientStoreError, match="slow down"):
        read_patch_instructions(store, obj, max_size=MAX_SIZE)

    store.delete_as_given(obj.key)
    with pytest.raises(NotFoundError):
        read_patch_instructions(store, obj, max_size=MAX_SIZE)


def test_an_object_replaced_since_it_was_listed_is_not_read(tmp_path):
    filename, data = build_patch_package(tmp_path, {LINUX: b"{}"})
    store = MemoryStore()
    obj = stored(store, filename, data)
    stored(store, filename, data + b"\0")

    with pytest.raises(TransientStoreError, match="changed since it was listed") as error:
        read_patch_instructions(store, obj, max_size=MAX_SIZE)
    assert_one_line(error)


class ShortReads(MemoryStore):
    """Streams each object without its last byte, as a dropped connection the client missed would."""

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        return super().download(key, lambda chunk: sink(chunk[:-1]), expect=expect)


def test_an_object_cut_short_while_read_is_no_verdict_on_the_package(tmp_path):
    filename, data = build_patch_package(tmp_path, {LINUX: b"{}"})
    store = ShortReads()
    obj = stored(store, filename, data)

    with pytest.raises(TransientStoreError, match=f"{len(data) - 1} of {len(data)} bytes read") as error:
        read_patch_instructions(store, obj, max_size=MAX_SIZE)
    assert_one_line(error)


def test_a_package_over_the_size_limit_is_refused_before_its_download(tmp_path):
    filename, data = build_patch_package(tmp_path, {LINUX: b"{}"})
    store = MemoryStore()
    obj = stored(store, filename, data)

    with pytest.raises(BadPackageError, match="over the limit") as error:
        read_patch_instructions(store, obj, max_size=len(data) - 1)
    assert_one_line(error)
    assert store.requests["GetObject"] == 0


# --- hostile packages ---------------------------------------------------------------------------------------


@FORMATS
@pytest.mark.parametrize("data", [b"", random.Random(0).randbytes(4096)], ids=["empty", "garbage"])
def test_what_is_no_package_is_refused(extension, data):
    with pytest.raises(BadPackageError) as error:
        read(f"{NAME}-1.0-h0_0{extension}", data)
    assert_one_line(error)


@FORMATS
def test_a_real_package_cut_short_is_refused(tmp_path, extension):
    filename, data = build_patch_package(
        tmp_path, {LINUX: random.Random(1).randbytes(256 * 1024).hex().encode()}, extension=extension
    )

    refused(filename, data[: len(data) // 2], ".")


def test_a_file_of_another_kind_is_refused():
    refused(f"{NAME}-1.0-h0_0.zip", b"PK", "not a conda package")


def test_a_conda_without_exactly_one_payload_component_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("pkg-a.tar.zst", zstd(tar_bytes({LINUX: b"{}"})))
        archive.writestr("pkg-b.tar.zst", zstd(tar_bytes({LINUX: b"{}"})))
    refused(f"{NAME}-1.0-h0_0.conda", buffer.getvalue(), "exactly one pkg-")


@FORMATS
def test_a_member_over_the_bound_is_refused_before_it_is_read(extension):
    # The header claims one byte past the bound and no data follows: only the header can be looked at.
    header = tarfile.TarInfo(LINUX)
    header.size = MAX_PATCH_MEMBER_BYTES + 1
    payload = header.tobuf(format=tarfile.GNU_FORMAT)

    refused(*package_of(extension, payload), f"{LINUX} is {MAX_PATCH_MEMBER_BYTES + 1} bytes, over the")


@FORMATS
def test_a_member_at_the_bound_is_read_and_one_byte_more_is_not(monkeypatch, extension):
    monkeypatch.setattr(patch_package, "MAX_PATCH_MEMBER_BYTES", 1000)

    assert read(*package_of(extension, tar_of([file_member(LINUX, b"x" * 1000)]))) == {
        "linux-64": b"x" * 1000
    }
    refused(*package_of(extension, tar_of([file_member(LINUX, b"x" * 1001)])), "over the 1000 byte limit")


@FORMATS
def test_all_instructions_together_are_bounded(monkeypatch, extension):
    monkeypatch.setattr(patch_package, "MAX_PATCH_TOTAL_BYTES", 1500)
    payload = tar_of(
        [file_member(LINUX, b"x" * 1000), file_member("noarch/patch_instructions.json", b"y" * 1000)]
    )

    refused(*package_of(extension, payload), "add up to more than 1500 bytes")


@FORMATS
@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (link_member(LINUX, "../noarch/patch_instructions.json"), "symbolic link"),
        (link_member(LINUX, "/etc/passwd"), "points outside"),
        (link_member(LINUX, "share/instructions.json", tarfile.LNKTYPE), "hard link"),
        (folder_member(LINUX), "folder"),
    ],
    ids=["symlink", "symlink-outside", "hardlink", "folder"],
)
def test_an_instructions_file_that_is_no_file_is_refused(extension, member, kind):
    payload = tar_of(
        [
            file_member("share/instructions.json", b"{}"),
            file_member("noarch/patch_instructions.json", b"{}"),
            member,
        ]
    )

    refused(*package_of(extension, payload), kind)


@FORMATS
@pytest.mark.parametrize(
    "member",
    [
        file_member(f"../{LINUX}", b"{}"),
        file_member(f"/{LINUX}", b"{}"),
        file_member("share/../../elsewhere", b"{}"),
        link_member("share/link", "../../etc/passwd"),
        link_member("share/link", "/etc/passwd"),
        link_member("share/link", "../elsewhere", tarfile.LNKTYPE),
    ],
    ids=["parent", "absolute", "climbing", "symlink-up", "symlink-absolute", "hardlink-up"],
)
def test_a_member_or_link_leaving_the_package_is_refused(extension, member):
    payload = tar_of([file_member(LINUX, b"{}"), member])

    refused(*package_of(extension, payload), "points outside the package")


@FORMATS
def test_an_instructions_file_given_twice_is_refused(extension):
    payload = tar_of([file_member(LINUX, b"{}"), file_member(f"./{LINUX}", b"{}")])

    refused(*package_of(extension, payload), "appears more than once")


@FORMATS
def test_a_member_flood_is_refused(extension):
    flood = member_flood_tar(MAX_ARCHIVE_MEMBERS + 1, index_json(NAME))
    started = time.monotonic()

    refused(*package_of(extension, flood), f"more than {MAX_ARCHIVE_MEMBERS} members")
    assert time.monotonic() - started < BOMB_SECONDS


def test_a_zip_entry_flood_is_refused():
    conda = conda_of(zstd(tar_bytes({LINUX: b"{}"})), extra_entries=5000)

    refused(f"{NAME}-1.0-h0_0.conda", conda, f"over the limit of {MAX_ZIP_ENTRIES}")


def test_a_zip_component_claiming_more_than_the_archive_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr(f"pkg-{NAME}-1.0-h0_0.tar.zst", b"\0" * (1024 * 1024))

    refused(f"{NAME}-1.0-h0_0.conda", buffer.getvalue(), "the pkg component claims")


def bomb(extension: str) -> tuple[str, bytes]:
    filename = f"{NAME}-1.0-h0_0{extension}"
    if extension == ".conda":
        return filename, conda_of(zstd_bomb_info(BOMB_ZEROS, index_json(NAME)))
    return filename, bz2_bomb(BOMB_ZEROS, index_json(NAME))


@FORMATS
def test_a_decompression_bomb_stops_at_the_budget_in_bounded_time_and_memory(extension):
    filename, data = bomb(extension)
    assert len(data) < 64 * 1024 * 1024
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(BadPackageError, match="decompression bomb") as error:
            read(filename, data)
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert_one_line(error)
    assert f"more than {PATCH_PAYLOAD_DECOMPRESSED_LIMIT} decompressed bytes" in str(error.value)
    assert seconds < BOMB_SECONDS
    # The package's own bytes (read from the store into the spool) plus a little.
    assert peak < len(data) * 3 + BOMB_PEAK_BYTES
