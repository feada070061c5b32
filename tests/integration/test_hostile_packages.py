"""Hostile packages beside good ones: each kind is refused with a short one-line reason or cleaned, the good
neighbours stay indexed, and the real client (py-rattler) still reads every subdir through all three
repodata routes (shards, repodata.json.zst, repodata.json) without a trace of a refused file.

Each kind gets its own local channel: four good packages built by rattler-build (good-1.0-h0_0 and
neighbour-1.0-h0_0 in linux-64 and noarch, both archive formats) plus the kind's hostile file(s). Most
hostile files are builds of `good` itself, so every kind is also a "poisoned name" attempt: a bad upload
under a good package's name must never take the good package down with it. The channel is indexed with
index_channel on a LocalStore and served over HTTP on 127.0.0.1 for rattler's Gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rattler.exceptions import SolverError

from devtools.sample_channel import SamplePackage, build_packages
from reindexer.contract import REPODATA_JSON, SHARD_INDEX
from reindexer.indexer import index_channel
from reindexer.layout import parse_package_filename
from reindexer.options import IndexOptions
from reindexer.package_reader import MAX_ARCHIVE_MEMBERS, METADATA_MEMBER_LIMIT
from reindexer.reports import MAX_REASON_LENGTH, ChannelReport
from reindexer.storage.local import LocalStore
from reindexer.store import StoredObject
from tests.support.archives import (
    bz2_bomb,
    conda_archive,
    conda_from_info_tar,
    index_json,
    info_members,
    member_flood_tar,
    package_bytes,
    raw_index,
    tar_bz2_from_tar,
    zstd,
    zstd_bomb_info,
    zstd_huge_window_info,
)
from tests.support.clients import ROUTES, ChannelServer, ClientView, load_all_routes, parse_repodata_json
from tests.support.clients import solve_and_install as rattler_solve_and_install

# A hostile file refused "cheaply" is refused within this many seconds of the whole index run.
CHEAP_SECONDS = 5.0
MAX_SIZE_LIMIT = 64 * 1024

NEIGHBOURS = (
    SamplePackage("linux-64", "good", "1.0", "h0_0", ".conda", payload="good linux-64\n"),
    SamplePackage("linux-64", "neighbour", "1.0", "h0_0", ".tar.bz2", payload="neighbour linux-64\n"),
    SamplePackage("noarch", "good", "1.0", "h0_0", ".tar.bz2", payload="good noarch\n"),
    SamplePackage("noarch", "neighbour", "1.0", "h0_0", ".conda", payload="neighbour noarch\n"),
)


@dataclass(frozen=True)
class Rejected:
    """Refused: the reason holds `phrase`."""

    phrase: str


@dataclass(frozen=True)
class Cleaned:
    """Published, with `absent` fields dropped and `fields` holding exactly the given values."""

    absent: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)


Verdict = Rejected | Cleaned


@dataclass(frozen=True)
class Neighbours:
    folder: Path
    # channel-relative key -> bytes
    files: dict[str, bytes]


Files = dict[str, tuple[bytes, Verdict]]


@dataclass(frozen=True)
class Kind:
    build: Callable[[Neighbours], Files]
    options: Mapping[str, Any] = field(default_factory=dict)
    # Refused within CHEAP_SECONDS.
    cheap: bool = False
    # Refused without a single byte of it read.
    unread: bool = False


KINDS: dict[str, Kind] = {}


def kind(
    kind_id: str, *, cheap: bool = False, unread: bool = False, **options: Any
) -> Callable[[Callable[[Neighbours], Files]], Callable[[Neighbours], Files]]:
    def register(build: Callable[[Neighbours], Files]) -> Callable[[Neighbours], Files]:
        assert kind_id not in KINDS, kind_id
        KINDS[kind_id] = Kind(build, options, cheap, unread)
        return build

    return register


def single(kind_id: str, build: Callable[[str, str], tuple[bytes, Verdict]], **flags: Any) -> None:
    """A kind of one hostile file `good-2.0-<kind_id as build string>` in linux-64 (.conda) or noarch
    (.tar.bz2, when the id ends in -tar-bz2); `build(filename, build_string)` makes it."""
    archive = ".tar.bz2" if kind_id.endswith("-tar-bz2") else ".conda"
    subdir = "noarch" if archive == ".tar.bz2" else "linux-64"
    build_string = kind_id.replace("-", "_") + "_0"
    filename = f"good-2.0-{build_string}{archive}"
    kind(kind_id, **flags)(lambda _: {f"{subdir}/{filename}": build(filename, build_string)})


def raw_json_kind(kind_id: str, raw: list[tuple[str, str | bytes]], verdict: Verdict, **fields: Any) -> None:
    """One hostile file whose info/index.json holds `raw` members verbatim (raw_index)."""
    single(
        kind_id,
        lambda filename, build: (package_bytes(filename, raw_index(raw, build=build, **fields)), verdict),
    )


def index_kind(kind_id: str, verdict: Verdict, **fields: Any) -> None:
    """One hostile file whose info/index.json is the usual good-2.0 document (raw_index) with `fields`."""
    raw_json_kind(kind_id, [], verdict, **fields)


def run_exports_kind(kind_id: str, run_exports: bytes, verdict: Verdict) -> None:
    single(
        kind_id,
        lambda filename, build: (
            package_bytes(filename, raw_index([], build=build), {"info/run_exports.json": run_exports}),
            verdict,
        ),
    )


# --- Today's bad inputs (tests/integration/test_bad_inputs_s3.py), again, so this matrix stands alone ---

single("corrupt-conda", lambda f, b: (os.urandom(2048), Rejected("not a valid .conda")))
single("corrupt-tar-bz2", lambda f, b: (os.urandom(2048), Rejected("not a valid .tar.bz2")))
single("empty-conda", lambda f, b: (b"", Rejected("empty file")))
single("empty-tar-bz2", lambda f, b: (b"", Rejected("empty file")))
single("no-index-conda", lambda f, b: (package_bytes(f, None), Rejected("no info/index.json")))
single("no-index-tar-bz2", lambda f, b: (package_bytes(f, None), Rejected("no info/index.json")))
single(
    "invalid-json-conda",
    lambda f, b: (package_bytes(f, b'{"name": "good", "version": '), Rejected("not valid JSON")),
)
single(
    "invalid-json-tar-bz2",
    lambda f, b: (package_bytes(f, b'{"name": "good",, }'), Rejected("not valid JSON")),
)
single(
    "index-not-an-object",
    lambda f, b: (package_bytes(f, b'["good", "2.0"]'), Rejected("must hold a JSON object, not list")),
)
single(
    "renamed",
    lambda f, b: (
        package_bytes(f, raw_index([], name="original", build=b)),
        Rejected(f"file name says good-2.0-{b} but info/index.json says original-2.0-{b}"),
    ),
)
index_kind("wrong-subdir", Rejected("says subdir 'osx-64' but the file is in 'linux-64'"), subdir="osx-64")
kind("unknown-subdir-folder")(
    lambda _: {
        "linux-65/good-2.0-h0_0.conda": (
            package_bytes("good-2.0-h0_0.conda", raw_index([])),
            Rejected("'linux-65' is not a known conda subdir"),
        )
    }
)
kind("non-package-file")(lambda _: {"linux-64/README.txt": (b"read me\n", Rejected("not a conda package"))})
kind("unparseable-file-name")(
    lambda _: {
        "linux-64/good.conda": (package_bytes("good.conda", raw_index([])), Rejected("file name is not"))
    }
)
index_kind(
    "oversized-index-json",
    Rejected("byte limit for metadata"),
    description="x" * (METADATA_MEMBER_LIMIT + 1024),
)


def _truncated(source_key: str, verdict: Verdict) -> Callable[[Neighbours], Files]:
    def build(neighbours: Neighbours) -> Files:
        data = neighbours.files[source_key]
        extension = ".conda" if source_key.endswith(".conda") else ".tar.bz2"
        subdir = source_key.split("/", maxsplit=1)[0]
        return {f"{subdir}/good-2.0-truncated_0{extension}": (data[: len(data) // 2], verdict)}

    return build


kind("truncated-conda")(_truncated("linux-64/good-1.0-h0_0.conda", Rejected("not a valid .conda")))
kind("truncated-tar-bz2")(_truncated("noarch/good-1.0-h0_0.tar.bz2", Rejected("not a valid .tar.bz2")))

# --- JSON clients refuse --------------------------------------------------------------------------------

raw_json_kind("nan", [("build_number", "NaN")], Rejected("NaN is not a JSON number"))
raw_json_kind("infinity", [("timestamp", "Infinity")], Rejected("Infinity is not a JSON number"))
raw_json_kind("exponent-overflow", [("timestamp", "1e999")], Rejected("number 1e999 is out of range"))
raw_json_kind("int-beyond-int64", [("build_number", str(2**64))], Rejected("out of the signed 64-bit range"))
raw_json_kind("lone-surrogate", [("license", '"MIT \\ud800"')], Rejected("lone UTF-16 surrogate"))
raw_json_kind("invalid-utf8", [("license", b'"MIT \xff\xfe"')], Rejected("not UTF-8"))
raw_json_kind(
    "duplicate-keys", [("version", '"2.0"'), ("version", '"9.9"')], Rejected("key 'version' appears twice")
)
raw_json_kind(
    "deep-nesting-unknown-field",
    [("x_unknown", "[" * 100 + "]" * 100)],
    Rejected("nested deeper than 32 levels"),
)
raw_json_kind(
    "deep-nesting-10000",
    [("x_unknown", '{"a":' * 10_000 + "1" + "}" * 10_000)],
    Rejected("nested deeper than 32 levels"),
)

# --- Field values clients refuse, and fields that are cleaned -------------------------------------------

index_kind("noarch-x", Rejected('noarch must be "python" or "generic", not \'x\''), noarch="x")
index_kind("features-list", Rejected("features must be a string, not list"), features=["a", "b"])
index_kind(
    "legacy-bz2-fields",
    Cleaned(absent=("legacy_bz2_md5", "legacy_bz2_size")),
    legacy_bz2_md5="zz",
    legacy_bz2_size="big",
)
index_kind(
    "unknown-fields",
    Cleaned(absent=("x_custom", "requires_dist", "nested")),
    x_custom="?",
    requires_dist=[1, 2],
    nested={"a": {"b": [None, True]}},
)
index_kind(
    "fn-url-channel",
    Cleaned(
        # arch is kept (a legacy word clients ignore); a platform conda's enum does not know is dropped
        absent=("fn", "url", "channel", "platform", "date", "package_type", "preferred_env"),
        fields={"subdir": "linux-64", "arch": "x86_64"},
    ),
    fn="evil-9.9-h0_0.conda",
    url="https://evil.example/evil-9.9-h0_0.conda",
    channel="https://evil.example",
    md5="0" * 32,
    sha256="zz",
    size=-1,
    arch="x86_64",
    platform="plan9",
    date="yesterday",
    package_type="virtual",
    preferred_env="base",
)
index_kind("purls-not-a-list", Rejected("purls must be a list"), purls="pkg:pypi/good@2.0")
index_kind(
    "purls-unparseable",
    Rejected("info/index.json is refused by rattler: URL scheme must be pkg"),
    purls=["not a purl"],
)
index_kind("purls-not-strings", Rejected("purls must be a string, not int"), purls=[1])
run_exports_kind("run-exports-wrong-shape", b'{"weak": "a"}', Rejected("run_exports.weak must be a list"))
run_exports_kind(
    "run-exports-bad-spec",
    b'{"strong": ["numpy 1!!2"]}',
    Rejected("run_exports.strong spec 'numpy 1!!2' does not parse"),
)
run_exports_kind("run-exports-not-object", b'["a"]', Rejected("run_exports.json must hold a JSON object"))
run_exports_kind("run-exports-nan-tar-bz2", b'{"weak": NaN}', Rejected("NaN is not a JSON number"))


def _bad_version(version: str) -> Callable[[Neighbours], Files]:
    def build(_: Neighbours) -> Files:
        filename = f"good-{version}-h0_0.conda"
        return {
            f"linux-64/{filename}": (
                package_bytes(filename, raw_index([], version=version)),
                Rejected(f"version {version!r} does not parse"),
            )
        }

    return build


kind("version-double-bang")(_bad_version("1!!2"))
kind("version-double-dot")(_bad_version("1..0"))
index_kind(
    "depends-unparseable",
    Rejected("depends spec 'numpy 1!!2' does not parse"),
    depends=["python >=3.8", "numpy 1!!2"],
)
index_kind("depends-glob-name", Rejected("depends spec 'foo*' does not parse"), depends=["foo*"])
index_kind("depends-not-a-list", Rejected("depends must be a list of match specs, not str"), depends="numpy")
index_kind("depends-not-strings", Rejected("depends holds 3, not a match spec"), depends=[3])
index_kind(
    "constrains-unparseable",
    Rejected("constrains spec 'numpy >=1,<' does not parse"),
    constrains=["numpy >=1,<"],
)
index_kind(
    "spec-control-character",
    Rejected("holds control characters"),
    depends=["numpy\x1b[2J >=1"],
)
index_kind("build-number-negative", Rejected("build_number must be a whole number"), build_number=-1)
index_kind("build-number-bool", Rejected("build_number must be a whole number"), build_number=True)
index_kind("timestamp-out-of-range", Rejected("timestamp must be a whole number from 0 to"), timestamp=2**62)
index_kind("timestamp-negative", Rejected("timestamp must be a whole number from 0 to"), timestamp=-1)
index_kind(
    "license-escape", Rejected("license 'MIT\\x1b[31m' holds control characters"), license="MIT\x1b[31m"
)
index_kind(
    "license-newline",
    Cleaned(fields={"license": "MIT or Apache-2.0", "license_family": "MIT"}),
    license="MIT\nor\r\nApache-2.0",
    license_family="\tMIT\n",
)


@kind("uppercase-name")
def _uppercase_name(_: Neighbours) -> Files:
    return {
        "linux-64/Upper-1.0-h0_0.conda": (
            package_bytes("Upper-1.0-h0_0.conda", raw_index([], name="Upper", version="1.0")),
            Rejected("name 'Upper' is not a conda package name (CEP-26"),
        )
    }


LONG_NAME = "long" + "n" * 196  # the file name stays within the 255 bytes a file system allows


@kind("long-name-in-file-name")
def _long_name(_: Neighbours) -> Files:
    filename = f"{LONG_NAME}-1.0-h0_0.tar.bz2"
    return {
        f"noarch/{filename}": (
            package_bytes(filename, raw_index([], name=LONG_NAME, version="1.0")),
            Rejected("info/index.json name is 200 characters long, over the limit of 128"),
        )
    }


index_kind(
    "huge-name-in-index",
    Rejected("info/index.json name is 102400 characters long, over the limit of 128"),
    name="x" * 102_400,
)
index_kind(
    "huge-depends-list",
    Rejected("depends has 3000 entries, over the limit of 2048"),
    depends=["numpy"] * 3000,
)

# --- Archives built to cost the reader: floods and bombs ------------------------------------------------


@kind("member-flood-tar-bz2", cheap=True)
def _member_flood_tar_bz2(_: Neighbours) -> Files:
    tar = member_flood_tar(MAX_ARCHIVE_MEMBERS + 1, index_json("good", "2.0", build="flood_0"))
    return {
        "noarch/good-2.0-flood_0.tar.bz2": (
            tar_bz2_from_tar(tar),
            Rejected(f"not found within the first {MAX_ARCHIVE_MEMBERS} archive members"),
        )
    }


@kind("member-flood-conda", cheap=True)
def _member_flood_conda(_: Neighbours) -> Files:
    tar = member_flood_tar(MAX_ARCHIVE_MEMBERS + 1, index_json("good", "2.0", build="flood_0"))
    return {
        "linux-64/good-2.0-flood_0.conda": (
            conda_from_info_tar("good-2.0-flood_0", zstd(tar)),
            Rejected(f"not found within the first {MAX_ARCHIVE_MEMBERS} archive members"),
        )
    }


@kind("zip-entry-flood", cheap=True)
def _zip_entry_flood(_: Neighbours) -> Files:
    info = zstd(member_flood_tar(0, index_json("good", "2.0", build="zip_0")))
    return {
        "linux-64/good-2.0-zip_0.conda": (
            conda_from_info_tar("good-2.0-zip_0", info, extra_entries=5000),
            Rejected("the zip holds 5003 entries, over the limit of 16"),
        )
    }


@kind("zstd-bomb", cheap=True)
def _zstd_bomb(_: Neighbours) -> Files:
    info = zstd_bomb_info(1 << 30, index_json("good", "2.0", build="bomb_0"))
    return {
        "linux-64/good-2.0-bomb_0.conda": (
            conda_from_info_tar("good-2.0-bomb_0", info),
            Rejected("decompression bomb"),
        )
    }


@kind("zstd-huge-window", cheap=True)
def _zstd_huge_window(_: Neighbours) -> Files:
    info = zstd_huge_window_info(index_json("good", "2.0", build="window_0"))
    return {
        "linux-64/good-2.0-window_0.conda": (
            conda_from_info_tar("good-2.0-window_0", info),
            Rejected("corrupt info component in .conda archive"),
        )
    }


@kind("bz2-bomb", cheap=True)
def _bz2_bomb(_: Neighbours) -> Files:
    return {
        "noarch/good-2.0-bomb_0.tar.bz2": (
            bz2_bomb(1 << 30, index_json("good", "2.0", build="bomb_0")),
            Rejected("decompression bomb"),
        )
    }


@kind("over-max-size", unread=True, max_package_bytes=MAX_SIZE_LIMIT)
def _over_max_size(_: Neighbours) -> Files:
    filename = "good-2.0-big_0.conda"
    payload = {"share/noise.bin": os.urandom(MAX_SIZE_LIMIT + 1024)}
    info = info_members(index_json("good", "2.0", build="big_0"))
    data = conda_archive("good-2.0-big_0", info, payload)
    assert len(data) > MAX_SIZE_LIMIT
    return {f"linux-64/{filename}": (data, Rejected(f"over the limit of {MAX_SIZE_LIMIT}"))}


# --- The poisoned name: several hostile builds of good, none may take good-1.0 down ---------------------


@kind("poisoned-name")
def _poisoned_name(_: Neighbours) -> Files:
    def conda(filename: str, index: bytes, extra: dict[str, bytes] | None = None) -> bytes:
        return package_bytes(filename, index, extra)

    return {
        "linux-64/good-2.0-h0_0.conda": (
            conda("good-2.0-h0_0.conda", raw_index([], noarch="x")),
            Rejected("noarch must be"),
        ),
        "linux-64/good-2.0-h1_0.conda": (
            conda("good-2.0-h1_0.conda", raw_index([], build="h1_0", depends=["numpy 1!!2"])),
            Rejected("depends spec 'numpy 1!!2' does not parse"),
        ),
        # The same stem as the good .conda beside it, in the other format.
        "linux-64/good-1.0-h0_0.tar.bz2": (
            conda("good-1.0-h0_0.tar.bz2", raw_index([("build_number", "NaN")], version="1.0")),
            Rejected("NaN is not a JSON number"),
        ),
        "noarch/good-3.0-h0_0.tar.bz2": (
            conda(
                "good-3.0-h0_0.tar.bz2",
                raw_index([], version="3.0"),
                {"info/run_exports.json": b'{"weak": "good"}'},
            ),
            Rejected("run_exports.weak must be a list"),
        ),
        "noarch/good-1.0-h1_0.conda": (
            conda("good-1.0-h1_0.conda", raw_index([], version="1.0", build="h1_0", timestamp=2**62)),
            Rejected("timestamp must be a whole number"),
        ),
        "noarch/good-1.5-h0_0.conda": (
            conda("good-1.5-h0_0.conda", raw_index([], version="1.5", license="MIT\x00")),
            Rejected("holds control characters"),
        ),
    }


# --- Running one kind ------------------------------------------------------------------------------------


class CountingStore(LocalStore):
    """A LocalStore that counts the package bytes each download hands to the reader."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read_bytes: Counter[str] = Counter()

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        def counting(chunk: bytes) -> None:
            self.read_bytes[key] += len(chunk)
            sink(chunk)

        return super().download(key, counting, expect=expect)


@dataclass
class KindRun:
    kind_id: str
    channel: str
    folder: Path
    files: Files
    report: ChannelReport
    seconds: float
    read_bytes: Counter[str]
    # A second run over the unchanged channel, and the package bytes it read.
    again: ChannelReport
    read_again: Counter[str]
    # subdir -> file names that must be published there
    expected: dict[str, set[str]]
    views: dict[str, ClientView]

    def rejected(self, report: ChannelReport | None = None) -> dict[str, str]:
        report = report or self.report
        reasons = {
            f"{subdir}/{r.file}": r.reason for subdir, sub in report.subdirs.items() for r in sub.rejected
        }
        reasons.update({r.file: r.reason for r in report.rejected})
        return reasons


@pytest.fixture(scope="module")
def neighbours(tmp_path_factory: pytest.TempPathFactory) -> Neighbours:
    folder = tmp_path_factory.mktemp("neighbours")
    build_packages(NEIGHBOURS, folder)
    files = {p.key: (folder / p.key).read_bytes() for p in NEIGHBOURS}
    return Neighbours(folder, files)


@pytest.fixture(scope="module")
def channel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChannelServer]:
    with ChannelServer(tmp_path_factory.mktemp("served")) as server:
        yield server


def run_kind(
    kind_id: str, neighbours: Neighbours, server: ChannelServer, scratch: Path, channel: str | None = None
) -> KindRun:
    """Build the kind's channel beside the neighbours, index it, and load it with rattler by every route."""
    spec = KINDS[kind_id]
    channel = channel or kind_id
    folder = server.root / channel
    shutil.copytree(neighbours.folder, folder)
    files = spec.build(neighbours)
    for key, (data, _) in files.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    store = CountingStore(folder)
    started = time.monotonic()
    report = index_channel(store, "", IndexOptions(**spec.options))
    seconds = time.monotonic() - started
    read_bytes = Counter(store.read_bytes)
    store.read_bytes.clear()
    again = index_channel(store, "", IndexOptions(**spec.options))
    expected: dict[str, set[str]] = {}
    for key in neighbours.files:
        subdir, name = key.split("/")
        expected.setdefault(subdir, set()).add(name)
    for key, (_, verdict) in files.items():
        if isinstance(verdict, Cleaned):
            subdir, name = key.split("/")
            expected.setdefault(subdir, set()).add(name)
    views = load_all_routes(server, channel, sorted(expected), scratch)
    return KindRun(
        kind_id, channel, folder, files, report, seconds, read_bytes, again, store.read_bytes, expected, views
    )


def _check_one_line(reason: str) -> None:
    assert reason and len(reason) <= MAX_REASON_LENGTH, (len(reason), reason[:400])
    assert reason.isprintable() and reason == " ".join(reason.split()), repr(reason)


def check_verdicts(run: KindRun) -> None:
    spec = KINDS[run.kind_id]
    report = run.report
    assert report.ok, report.to_dict()
    for subdir, sub in report.subdirs.items():
        assert (sub.failed, sub.deferred, sub.error) == ([], [], None), (subdir, sub.to_dict())
    rejected = run.rejected()
    must_reject = {key for key, (_, verdict) in run.files.items() if isinstance(verdict, Rejected)}
    assert set(rejected) == must_reject, {"rejected": rejected, "expected": sorted(must_reject)}
    for key, (data, verdict) in run.files.items():
        if isinstance(verdict, Rejected):
            reason = rejected[key]
            assert verdict.phrase in reason, (key, reason)
            _check_one_line(reason)
            if spec.unread:
                assert run.read_bytes[key] == 0, (key, run.read_bytes[key], len(data))
    if spec.cheap:
        assert run.seconds < CHEAP_SECONDS, run.seconds
    # The verdicts are remembered: a second run reads no package again and reports the same rejections.
    assert run.again.ok, run.again.to_dict()
    assert run.read_again == Counter(), run.read_again
    assert run.rejected(run.again) == rejected


def check_published(run: KindRun) -> None:
    assert sorted(run.report.subdirs) == sorted(run.expected)
    for subdir, expected in run.expected.items():
        path = run.folder / subdir / REPODATA_JSON
        repodata = json.loads(path.read_bytes())
        records = {**repodata["packages"], **repodata["packages.conda"]}
        assert set(records) == expected, (subdir, sorted(records))
        # rattler's own repodata.json readers (eager and lazy) read the whole file.
        assert parse_repodata_json(path, subdir) == expected, subdir
        assert sorted(run.report.subdirs[subdir].added) == sorted(expected)
    for key, (data, verdict) in run.files.items():
        if not isinstance(verdict, Cleaned):
            continue
        subdir, filename = key.split("/")
        repodata = json.loads((run.folder / subdir / REPODATA_JSON).read_bytes())
        record = {**repodata["packages"], **repodata["packages.conda"]}[filename]
        for name in verdict.absent:
            assert name not in record, (key, name, record)
        for name, value in verdict.fields.items():
            assert record.get(name) == value, (key, name, record.get(name))
        parsed = parse_package_filename(filename)
        assert parsed is not None
        assert (record["name"], record["version"], record["build"]) == (
            parsed.name,
            parsed.version,
            parsed.build,
        )
        # Digests and size are always ours, whatever index.json claimed.
        assert record["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size"] == len(data)


def check_client(run: KindRun, server: ChannelServer) -> None:
    good_names = {package.name for package in NEIGHBOURS}
    expected_names = {
        parsed.name
        for files in run.expected.values()
        for filename in files
        if (parsed := parse_package_filename(filename)) is not None
    }
    assert good_names <= expected_names
    for route_name, view in run.views.items():
        assert view.error is None, (route_name, view.error)
        assert view.names == expected_names, (route_name, sorted(view.names))
        for subdir, expected in run.expected.items():
            assert view.files(subdir) == expected, (route_name, subdir, sorted(view.files(subdir)))
            for filename, record in view.records[subdir].items():
                assert record.url == f"{server.url(route_name, run.channel)}/{subdir}/{filename}"
        for key, (_, verdict) in run.files.items():
            if isinstance(verdict, Cleaned):
                subdir, filename = key.split("/")
                record = view.records[subdir][filename]
                for name, value in verdict.fields.items():
                    if name in ("license", "license_family"):
                        assert getattr(record, name) == value, (route_name, key, name)
        # The route really was the one asked for: its index file was read in every subdir, and answered.
        requested = dict(server.requested(route_name, run.channel))
        served = ROUTES[route_name].served
        for subdir in run.expected:
            assert requested.get(f"{subdir}/{served}") == 200, (route_name, subdir, requested)
        if served == SHARD_INDEX:
            assert any(path.split("/")[1] == "shards" for path in requested if "/" in path), requested


def test_the_matrix_is_large_enough() -> None:
    assert len(KINDS) >= 30


@pytest.mark.parametrize("kind_id", list(KINDS))
def test_hostile_kind(
    kind_id: str, neighbours: Neighbours, channel_server: ChannelServer, tmp_path: Path
) -> None:
    run = run_kind(kind_id, neighbours, channel_server, tmp_path)
    check_verdicts(run)
    check_published(run)
    check_client(run, channel_server)


@pytest.mark.parametrize("route_name", list(ROUTES))
def test_poisoned_name_leaves_good_installable(
    route_name: str, neighbours: Neighbours, channel_server: ChannelServer, tmp_path: Path
) -> None:
    """Hostile builds of `good` (bad noarch, bad depends, NaN under good-1.0's own stem, ...) are refused;
    pixi's library still solves `good` to good-1.0 and installs it, through every route."""
    run = run_kind("poisoned-name", neighbours, channel_server, tmp_path, f"poisoned-{route_name}")
    check_verdicts(run)
    records = rattler_solve_and_install(
        channel_server, route_name, run.channel, ["good", "neighbour"], ["linux-64", "noarch"], tmp_path
    )
    chosen = {record.name.normalized: record for record in records}
    assert set(chosen) == {"good", "neighbour"}
    assert str(chosen["good"].version) == "1.0"
    assert f"{chosen['good'].subdir}/{chosen['good'].file_name}" in neighbours.files
    installed = (tmp_path / "env" / "share" / "good" / "README.txt").read_text()
    assert installed in {"good linux-64\n", "good noarch\n"}
    # None of the refused builds is a candidate: no good above 1.0 exists for the solver.
    with pytest.raises(SolverError):
        rattler_solve_and_install(
            channel_server, route_name, run.channel, ["good >1.0"], ["linux-64", "noarch"], tmp_path / "b"
        )
