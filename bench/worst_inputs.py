"""Worst-input benchmark: what reading one package costs on the worst archives the reader's bounds let
through, next to a normal package of the same format.

In a temporary folder: a realistic package built by rattler-build in both formats, and for each bound of
reindexer.package_reader and reindexer.record_schema the archive that reaches it (some also one step
over), plus the old pathological cases, now refused early. Each is read the way the indexer reads one package
(reindexer.package_fetch.read_package on a LocalStore) in a fresh child process, bench.read_child, measured by
bench.children.run_measured (its own CPU time and peak RSS, not this process's), the median of a few runs.
The inputs that scale with the archive's size (the decompression budget is 64 times the compressed size)
are made as large as the normal package of their format. The table is printed and written to
.bench/worst-inputs.json; the exit code stays 0 (this is a report).
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import os
import random
import statistics
import struct
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from bench import read_child
from bench.children import last_json_line, module_command, positive_int, run_measured
from bench.report import add_results_argument, print_table, write_results
from reindexer.contract import DEFAULT_MAX_PACKAGE_MB
from reindexer.package_reader import (
    CONDA_INFO_DECOMPRESSED_LIMIT,
    CONDA_INFO_RATIO_LIMIT,
    MAX_ARCHIVE_MEMBERS,
    MAX_ZIP_ENTRIES,
    METADATA_MEMBER_LIMIT,
    TAR_BZ2_DECOMPRESSED_LIMIT,
    TAR_BZ2_RATIO_LIMIT,
    ZSTD_MAX_WINDOW,
    decompression_budget,
)
from reindexer.record_schema import MAX_SPEC_LENGTH, MAX_SPECS, shorten

RESULTS_NAME = "worst-inputs.json"
SUBDIR = "linux-64"
CONDA, TAR_BZ2 = ".conda", ".tar.bz2"
MAX_SIZE = DEFAULT_MAX_PACKAGE_MB * 1024 * 1024  # the indexer's default --max-package-size
CHILD_TIMEOUT = 600.0
# The normal package: a few hundred files, a couple of MB compressed, as rattler-build writes it.
NORMAL_TEXT_FILES = 240
NORMAL_BINARY_FILES = 120
NORMAL_FILE_COUNT = NORMAL_TEXT_FILES + NORMAL_BINARY_FILES
# Decompressed filler, the slowest bz2 content found that still compresses more than the 64x the budget
# allows: a random 4 KiB unit repeated, with 16 random bytes every 16 KiB, compresses ~77x and decompresses
# at ~37 MB/s (the unit alone: ~85x at ~88 MB/s; zeros ~320 MB/s). The archive is padded up to the size
# that buys the budget. zstd decompresses anything at GB/s.
_FILLER_RANDOM = random.Random(4)
FILLER_UNIT = _FILLER_RANDOM.randbytes(4096)
# ~4 MiB, compressed once and repeated as concatenated bz2 streams
FILLER_CHUNK = b"".join(_FILLER_RANDOM.randbytes(16) + FILLER_UNIT * 4 for _ in range(256))
# Stay this far below a budget: tarfile reads 10 KiB records, and the end of the archive must fit too.
BUDGET_MARGIN = 256 * 1024
TIMESTAMP = datetime(2024, 1, 1, tzinfo=UTC)
TIMESTAMP_MS = int(TIMESTAMP.timestamp() * 1000)
PADDING = random.Random(5)  # incompressible padding, the same every run


@dataclass(frozen=True)
class Case:
    """One archive to read: `key` (subdir/file name) under its own channel folder `root`."""

    label: str
    archive: str  # CONDA or TAR_BZ2
    root: Path
    key: str
    expected: str  # "indexed" or "rejected"
    note: str = ""


@dataclass
class Measured:
    label: str
    archive: str
    size: int
    expected: str
    verdict: str
    reason: str
    cpu_seconds: float
    read_cpu_seconds: float
    peak_rss_mb: float
    read_rss_mb: float
    runs: int
    cpu_ratio: float | None = None
    read_cpu_ratio: float | None = None
    rss_ratio: float | None = None
    note: str = ""


@dataclass
class WorstResults:
    runs: int
    bounds: dict[str, int] = field(default_factory=dict)
    rows: list[Measured] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("worst-input benchmark")
    group.add_argument(
        "--worst-runs",
        type=positive_int,
        default=3,
        help="fresh child processes per input; the median is shown (default 3)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worst_inputs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_results_argument(parser)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    results = WorstResults(
        runs=args.worst_runs,
        bounds={
            "MAX_ARCHIVE_MEMBERS": MAX_ARCHIVE_MEMBERS,
            "METADATA_MEMBER_LIMIT": METADATA_MEMBER_LIMIT,
            "MAX_ZIP_ENTRIES": MAX_ZIP_ENTRIES,
            "ZSTD_MAX_WINDOW": ZSTD_MAX_WINDOW,
            "MAX_SPECS": MAX_SPECS,
            "MAX_SPEC_LENGTH": MAX_SPEC_LENGTH,
            "max_package_size": MAX_SIZE,
        },
    )
    with tempfile.TemporaryDirectory(prefix="worst-inputs-") as scratch_dir:
        scratch = Path(scratch_dir)
        print("generating the normal package (rattler-build) and the worst inputs ...", flush=True)
        cases = generate_cases(scratch)
        env = dict(os.environ)
        for case in cases:
            print(f"reading {case.label} ({case.archive or 'no archive'}) ...", flush=True)
            results.rows.append(measure(case, args.worst_runs, env))
    add_ratios(results.rows)
    print_results(results)
    write_results(args.results_dir / RESULTS_NAME, asdict(results))
    return 0


def measure(case: Case, runs: int, env: dict[str, str]) -> Measured:
    """Read the case `runs` times, each in a fresh child; the median of each figure."""
    size = (case.root / case.key).stat().st_size if case.key else 0
    figures: list[tuple[float, float, float, float]] = []
    verdict, reason = "", ""
    for _ in range(runs):
        command = module_command(read_child.__name__, str(case.root), case.key, str(MAX_SIZE))
        child = run_measured(command, env, timeout=CHILD_TIMEOUT)
        report = last_json_line(child.stdout)
        if child.exit_code != 0 or report is None:
            tail = " | ".join(child.stderr.strip().splitlines()[-2:])
            verdict, reason = "crashed", f"exit code {child.exit_code}: {tail}"
            figures.append((child.cpu_seconds, 0.0, child.peak_rss_mb, 0.0))
            continue
        verdict, reason = str(report["verdict"]), str(report["reason"])
        read_rss = max(0.0, float(report["after_mb"]) - float(report["before_mb"]))
        figures.append((child.cpu_seconds, float(report["read_cpu_seconds"]), child.peak_rss_mb, read_rss))
    cpu, read_cpu, rss, read_rss = (statistics.median(column) for column in zip(*figures, strict=True))
    return Measured(
        label=case.label,
        archive=case.archive,
        size=size,
        expected=case.expected,
        verdict=verdict,
        reason=reason,
        cpu_seconds=round(cpu, 3),
        read_cpu_seconds=round(read_cpu, 3),
        peak_rss_mb=round(rss, 1),
        read_rss_mb=round(read_rss, 1),
        runs=runs,
        note=case.note,
    )


def add_ratios(rows: list[Measured]) -> None:
    """CPU and RSS of each row against the normal package of the same format (the first row of each)."""
    normal: dict[str, Measured] = {}
    for row in rows:
        if not row.archive:
            continue
        if row.archive not in normal:
            normal[row.archive] = row
            continue
        base = normal[row.archive]
        row.cpu_ratio = _ratio(row.cpu_seconds, base.cpu_seconds)
        row.read_cpu_ratio = _ratio(row.read_cpu_seconds, base.read_cpu_seconds)
        row.rss_ratio = _ratio(row.peak_rss_mb, base.peak_rss_mb)


# --- the inputs ---------------------------------------------------------------------------------------


def generate_cases(scratch: Path) -> list[Case]:
    """Every input, the two normal packages first (the yardsticks), each in its own channel folder."""
    made: list[Case] = [Case("interpreter + imports, no read", "", scratch, "", "imports only")]
    normal = build_normal_packages(scratch / "normal-build")
    sizes = {archive: path.stat().st_size for archive, path in normal.items()}

    def add(label: str, archive: str, name: str, data: bytes, expected: str, note: str = "") -> None:
        root = scratch / f"case-{len(made):02d}"
        filename = f"{name}{archive}"
        (root / SUBDIR).mkdir(parents=True)
        (root / SUBDIR / filename).write_bytes(data)
        made.append(Case(label, archive, root, f"{SUBDIR}/{filename}", expected, note))

    for archive in (CONDA, TAR_BZ2):
        path = normal[archive]
        label = f"normal package ({NORMAL_FILE_COUNT} files)"
        add(label, archive, path.name[: -len(archive)], path.read_bytes(), "indexed")
    for archive in (CONDA, TAR_BZ2):
        for label, maker, expected in (
            (f"(a) {MAX_ARCHIVE_MEMBERS:,} tar members, index.json last", members_package, "indexed"),
            (f"(a) {MAX_ARCHIVE_MEMBERS + 1:,} tar members", members_over_package, "rejected"),
            ("(b) decompressed just under the budget", budget_package, "indexed"),
            ("(c) 256 KiB index.json + run_exports.json", metadata_package, "indexed"),
            ("(a+b+c) every bound at once", all_bounds_package, "indexed"),
            ("pax header at the 256 KiB header limit", pax_package, "indexed"),
            ("pax header of the budget's size", pax_budget_package, "rejected"),
        ):
            name = f"worst-{len(made):02d}-1.0-h0_0"
            data, note = maker(name, archive, sizes[archive])
            add(label, archive, name, data, expected, note)
    name = f"worst-{len(made):02d}-1.0-h0_0"
    label = f"(e) {MAX_ZIP_ENTRIES} zip entries, 64 KiB extra fields"
    note = "zipfile decodes each extra field in time quadratic in its length"
    add(label, CONDA, name, zip_entries_package(name), "indexed", note)
    stem = normal[TAR_BZ2].name[: -len(TAR_BZ2)]
    legacy = legacy_layout(normal[TAR_BZ2].read_bytes())
    note = "the normal package with info/ moved after the payload"
    add("(d) legacy layout: info/ after the payload", TAR_BZ2, stem, legacy, "indexed", note)
    # The old pathological cases, refused early now.
    name = f"old-{len(made):02d}-1.0-h0_0"
    add("old: a million empty tar members", TAR_BZ2, name, million_members_package(), "rejected")
    name = f"old-{len(made):02d}-1.0-h0_0"
    add("old: bz2 bomb, 1 GiB of zeros", TAR_BZ2, name, zeros_bomb_package(), "rejected")
    name = f"old-{len(made):02d}-1.0-h0_0"
    add("old: zip listing 100,000 entries", CONDA, name, many_zip_entries_package(), "rejected")
    name = f"old-{len(made):02d}-1.0-h0_0"
    add("old: zstd frame asking a 2 GiB window", CONDA, name, huge_window_package(name), "rejected")
    name = f"old-{len(made):02d}-1.0-h0_0"
    add("old: over the max package size (sparse)", CONDA, name, b"", "rejected", "refused before download")
    os.truncate(made[-1].root / made[-1].key, MAX_SIZE + 1)
    return made


def build_normal_packages(scratch: Path) -> dict[str, Path]:
    """One realistic package in both formats: text and binary files, a few dependencies, licences."""
    from rattler_build import ArchiveType, assemble_package

    rng = random.Random(1)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randrange(2, 10)))
        for _ in range(400)
    ]
    files = scratch / "files"
    for number in range(NORMAL_TEXT_FILES):
        path = files / "lib" / "python3.12" / "site-packages" / "normalpkg" / f"module_{number:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"def {rng.choice(words)}_{line}({rng.choice(words)}, {rng.choice(words)}):\n"
            f"    return {' + '.join(rng.choices(words, k=rng.randrange(2, 8)))}\n"
            for line in range(rng.randrange(60, 180))
        ]
        path.write_text("".join(lines))
    for number in range(NORMAL_BINARY_FILES):
        path = files / "lib" / f"libnormal_{number:02d}.so"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Half incompressible, half repetitive: machine code and tables.
        path.write_bytes(rng.randbytes(16_000) + bytes(rng.randrange(8)) * 16_000)
    outputs: dict[str, Path] = {}
    for archive, archive_type in ((CONDA, ArchiveType.Conda), (TAR_BZ2, ArchiveType.TarBz2)):
        output = assemble_package(
            name="normal-pkg",
            version="1.4.2",
            target_platform=SUBDIR,
            build_string="h1a2b3c4_0",
            output_dir=str(scratch / archive.strip(".")),
            files_dir=str(files),
            depends=["libgcc >=13", "python >=3.12,<3.13.0a0", "zlib >=1.3.1,<2.0a0", "numpy >=1.26"],
            license="BSD-3-Clause",
            archive_type=archive_type,
            timestamp=TIMESTAMP,
            compression_threads=1,
            detect_prefix=False,
        )
        outputs[archive] = Path(output.path)
    return outputs


def index_json(name: str, **fields: object) -> bytes:
    package, version, build = name.rsplit("-", 2)
    document = {
        "name": package,
        "version": version,
        "build": build,
        "build_number": 0,
        "subdir": SUBDIR,
        "depends": [],
        "license": "MIT",
        "timestamp": TIMESTAMP_MS,
        **fields,
    }
    return json.dumps(document).encode()


def tar_member(path: str, data: bytes = b"", pax: dict[str, str] | None = None) -> bytes:
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mtime = int(TIMESTAMP.timestamp())
    info.mode = 0o644
    info.pax_headers = pax or {}
    header = info.tobuf(tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    return header + data + bytes(-len(data) % tarfile.BLOCKSIZE)


TAR_END = bytes(2 * tarfile.BLOCKSIZE)


@dataclass(frozen=True)
class Repeat:
    """`data` written `times` times in a row: compressed once, its compressed form repeated."""

    data: bytes
    times: int


Pieces = Iterable[bytes | Repeat]


def bz2_stream(pieces: Pieces) -> bytes:
    """Concatenated bz2 streams (BZ2File reads them as one) holding the pieces in order."""
    out: list[bytes] = []
    pending: list[bytes] = []
    for piece in pieces:
        if isinstance(piece, Repeat):
            if pending:
                out.append(bz2.compress(b"".join(pending), 9))
                pending = []
            out.append(bz2.compress(piece.data, 9) * piece.times)
        else:
            pending.append(piece)
    if pending:
        out.append(bz2.compress(b"".join(pending), 9))
    return b"".join(out)


def zstd_frame(pieces: Pieces, window_log: int = 24) -> bytes:
    """One zstd frame (a .conda component is read as one) of unknown content size, so the frame header
    declares the window: 2**24 = ZSTD_MAX_WINDOW, the most the reader lets a decoder allocate."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    out: list[bytes] = []
    for piece in pieces:
        for data in [piece.data] * piece.times if isinstance(piece, Repeat) else [piece]:
            out.append(compressor.compress(data))
    out.append(compressor.flush())
    return b"".join(out)


def skippable_frame(size: int) -> bytes:
    """A zstd skippable frame of `size` bytes in all: counted in the component's size, never decoded."""
    return struct.pack("<II", 0x184D2A50, size - 8) + PADDING.randbytes(size - 8)


def pieces_size(pieces: Pieces) -> int:
    return sum(len(p.data) * p.times if isinstance(p, Repeat) else len(p) for p in pieces)


def conda_archive(name: str, info: bytes, extra_entries: Sequence[zipfile.ZipInfo] = ()) -> bytes:
    """A .conda as conda-package-handling writes it (STORED zip), around a ready info component."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(
            f"pkg-{name}.tar.zst",
            zstandard.ZstdCompressor().compress(tar_member("share/a.txt", b"a") + TAR_END),
        )
        archive.writestr(f"info-{name}.tar.zst", info)
        for entry in extra_entries:
            archive.writestr(entry, b"")
    return buffer.getvalue()


def archive_of(name: str, archive: str, pieces: list[bytes | Repeat], target_size: int = 0) -> bytes:
    """The pieces (an uncompressed tar stream) as a package of either format, padded so that the
    compressed size that sets the decompression budget is at least `target_size`."""
    if archive == CONDA:
        component = zstd_frame(pieces)
        if len(component) + 16 < target_size:
            component += skippable_frame(target_size - len(component))
        return conda_archive(name, component)
    data = bz2_stream(pieces)
    if len(data) < target_size:
        # A last bz2 stream of random bytes, after the tar's end: it buys budget and is never decoded.
        data += bz2.compress(PADDING.randbytes(target_size - len(data)), 9)
    return data


def budget_for(archive: str, size: int) -> int:
    if archive == CONDA:
        return decompression_budget(size, CONDA_INFO_RATIO_LIMIT, CONDA_INFO_DECOMPRESSED_LIMIT)
    return decompression_budget(size, TAR_BZ2_RATIO_LIMIT, TAR_BZ2_DECOMPRESSED_LIMIT)


def members_package(
    name: str, archive: str, normal_size: int, members: int = MAX_ARCHIVE_MEMBERS
) -> tuple[bytes, str]:
    """`members` tar members in all: empty info/ files, then index.json last, so every one is walked."""
    del normal_size
    fillers = b"".join(tar_member(f"info/empty/{number:05d}") for number in range(members - 1))
    pieces: list[bytes | Repeat] = [fillers, tar_member("info/index.json", index_json(name)), TAR_END]
    return archive_of(name, archive, pieces), f"{pieces_size(pieces) / 2**20:.1f} MiB of tar"


def members_over_package(name: str, archive: str, normal_size: int) -> tuple[bytes, str]:
    return members_package(name, archive, normal_size, MAX_ARCHIVE_MEMBERS + 1)


def budget_package(name: str, archive: str, normal_size: int) -> tuple[bytes, str]:
    """One filler member decompressing to just under the budget of an archive the normal package's size,
    index.json after it (a .conda's info component is walked to its end; a .tar.bz2 with info/ last too)."""
    budget = budget_for(archive, normal_size)
    filler_size = budget - BUDGET_MARGIN
    chunks, rest = divmod(filler_size, len(FILLER_CHUNK))
    path = "info/licenses/filler.txt" if archive == CONDA else "share/filler.bin"
    header = tarfile.TarInfo(path)
    header.size = filler_size
    pieces: list[bytes | Repeat] = [
        header.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"),
        Repeat(FILLER_CHUNK, chunks),
        FILLER_CHUNK[:rest] + bytes(-filler_size % tarfile.BLOCKSIZE),
        tar_member("info/index.json", index_json(name)),
        TAR_END,
    ]
    data = archive_of(name, archive, pieces, target_size=normal_size)
    return data, f"{pieces_size(pieces) / 2**20:.0f} MiB decompressed of a {budget / 2**20:.0f} MiB budget"


def long_specs(count: int, room: int, prefix: str) -> list[str]:
    """`count` distinct match specs of one length that fill `room` bytes of a JSON list: a name padded to
    that length, then a chain of version ranges ('|' of ',' pairs), each of which rattler parses."""
    length = min(MAX_SPEC_LENGTH, room // count - 4)  # each spec costs its length and '"", '
    specs = []
    for number in range(count):
        ranges: list[str] = []
        while True:
            step = f">={number % 97}.{len(ranges)}.0,<{number % 97}.{len(ranges)}.1a0"
            if len(prefix) + 8 + len("|".join([*ranges, step])) > length:
                break
            ranges.append(step)
        versions = "|".join(ranges)
        name = f"{prefix}{number:04d}".ljust(length - len(versions) - 1, "x")
        specs.append(f"{name} {versions}")
    return specs


def metadata_members(name: str) -> list[bytes]:
    """index.json with MAX_SPECS long depends and run_exports.json with MAX_SPECS weak run exports, each
    just under METADATA_MEMBER_LIMIT: every spec is parsed by rattler, and each list once more as a whole."""
    base = len(index_json(name, depends=[]))
    depends = long_specs(MAX_SPECS, METADATA_MEMBER_LIMIT - base - 64, "dep")
    index = index_json(name, depends=depends)
    run_exports = json.dumps({"weak": long_specs(MAX_SPECS, METADATA_MEMBER_LIMIT - 64, "exp")}).encode()
    assert len(index) <= METADATA_MEMBER_LIMIT and len(run_exports) <= METADATA_MEMBER_LIMIT
    return [tar_member("info/run_exports.json", run_exports), tar_member("info/index.json", index)]


def metadata_package(name: str, archive: str, normal_size: int) -> tuple[bytes, str]:
    del normal_size
    members = metadata_members(name)
    pieces: list[bytes | Repeat] = [*members, TAR_END]
    sizes = " and ".join(f"{(len(member) - tarfile.BLOCKSIZE) // 1024} KiB" for member in members)
    spec = len(long_specs(MAX_SPECS, METADATA_MEMBER_LIMIT - 64, "exp")[0])
    return archive_of(name, archive, pieces), f"{MAX_SPECS} specs of {spec} characters in each, {sizes}"


def all_bounds_package(name: str, archive: str, normal_size: int) -> tuple[bytes, str]:
    """MAX_ARCHIVE_MEMBERS members sharing just under the budget, then (c)'s two metadata files."""
    budget = budget_for(archive, normal_size)
    fillers = MAX_ARCHIVE_MEMBERS - 2
    per_chunk = 64  # members per repeated chunk (their names repeat; tar does not mind)
    metadata = metadata_members(name)
    room = budget - BUDGET_MARGIN - sum(map(len, metadata))
    member_data = (room // fillers - tarfile.BLOCKSIZE) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
    data = (FILLER_CHUNK * (member_data // len(FILLER_CHUNK) + 1))[:member_data]
    prefix = "info/licenses" if archive == CONDA else "share/data"
    chunk = b"".join(tar_member(f"{prefix}/{number:02d}.txt", data) for number in range(per_chunk))
    chunks, rest = divmod(fillers, per_chunk)
    pieces: list[bytes | Repeat] = [
        Repeat(chunk, chunks),
        chunk[: rest * (tarfile.BLOCKSIZE + member_data)],
        *metadata,
        TAR_END,
    ]
    size = pieces_size(pieces)
    assert size <= budget, (size, budget)
    note = f"{fillers + 2:,} members, {size / 2**20:.0f} MiB of a {budget / 2**20:.0f} MiB budget"
    return archive_of(name, archive, pieces, target_size=normal_size), note


def pax_package(name: str, archive: str, normal_size: int) -> tuple[bytes, str]:
    """index.json behind the largest pax extended header the reader accepts (tarfile reads one whole)."""
    return _pax_package(name, archive, normal_size, METADATA_MEMBER_LIMIT - 1024)


def pax_budget_package(name: str, archive: str, normal_size: int) -> tuple[bytes, str]:
    """index.json behind a pax extended header as large as the decompression budget: refused by its size
    before tarfile reads it (it used to cost ~3x its size in memory)."""
    return _pax_package(name, archive, normal_size, budget_for(archive, normal_size) - BUDGET_MARGIN)


def _pax_package(name: str, archive: str, normal_size: int, header_size: int) -> tuple[bytes, str]:
    budget = budget_for(archive, normal_size)
    comment = "x" * header_size
    pieces: list[bytes | Repeat] = [
        tar_member("info/index.json", index_json(name), {"comment": comment}),
        TAR_END,
    ]
    data = archive_of(name, archive, pieces, target_size=normal_size)
    return data, f"{len(comment) / 2**10:,.0f} KiB header, budget {budget / 2**20:.0f} MiB"


def zip_entries_package(name: str) -> bytes:
    """A valid .conda of MAX_ZIP_ENTRIES entries, the 13 extras with the largest extra field (64 KiB of
    empty 4-byte records: zipfile decodes them by slicing, quadratic in the field's length)."""
    extras = []
    for number in range(MAX_ZIP_ENTRIES - 3):
        entry = zipfile.ZipInfo(f"extra-{number:02d}.txt", date_time=(2024, 1, 1, 0, 0, 0))
        entry.extra = b"\xfe\xca\x00\x00" * (0xFFFF // 4)
        extras.append(entry)
    info = zstd_frame([tar_member("info/index.json", index_json(name)), TAR_END])
    return conda_archive(name, info, extras)


def legacy_layout(normal: bytes) -> bytes:
    """The normal .tar.bz2 rewritten as conda-build wrote it before conda-package-handling: payload first,
    info/ last, so the reader must decompress the whole payload to reach index.json."""
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(normal), mode="r:bz2") as source,
        tarfile.open(fileobj=buffer, mode="w:bz2", compresslevel=9) as target,
    ):
        members = source.getmembers()
        ordered = [m for m in members if not m.name.startswith("info/")] + [
            m for m in members if m.name.startswith("info/")
        ]
        for member in ordered:
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return buffer.getvalue()


def million_members_package() -> bytes:
    """A ~50 KB .tar.bz2 listing a million empty members (the same header, repeated)."""
    header = tar_member("info/x")
    per_chunk = 4096
    return bz2_stream([Repeat(header * per_chunk, 1_000_000 // per_chunk), TAR_END])


def zeros_bomb_package() -> bytes:
    header = tarfile.TarInfo("share/zeros")
    header.size = 2**30
    zeros = bytes(64 * 2**20)
    return bz2_stream([header.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"), Repeat(zeros, 16)])


def many_zip_entries_package() -> bytes:
    """A zip of 100,000 empty entries: a zip64 end record, refused from its entry count alone."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for number in range(100_000):
            archive.writestr(f"{number}", b"")
    return buffer.getvalue()


def huge_window_package(name: str) -> bytes:
    info = zstd_frame([tar_member("info/index.json", index_json(name)), TAR_END], window_log=31)
    return conda_archive(name, info)


# --- the report ---------------------------------------------------------------------------------------


def print_results(results: WorstResults) -> None:
    print()
    print(
        f"worst inputs within the package reader's bounds: {results.runs} fresh child processes per input, "
        "medians; each read by read_package on a LocalStore"
    )
    headers = [
        *("input", "format", "size", "CPU s", "CPU x", "read CPU s", "read x"),
        *("RSS MB", "RSS x", "read +MB", "verdict"),
    ]
    rows = []
    for row in results.rows:
        verdict = row.verdict + (f": {row.reason}" if row.reason else "")
        if row.expected != row.verdict:
            verdict = f"UNEXPECTED (expected {row.expected}) {verdict}"
        rows.append(
            [
                row.label,
                row.archive,
                _size(row.size) if row.archive else "",
                f"{row.cpu_seconds:.2f}",
                _times(row.cpu_ratio),
                f"{row.read_cpu_seconds:.3f}",
                _times(row.read_cpu_ratio),
                f"{row.peak_rss_mb:.0f}",
                _times(row.rss_ratio),
                f"{row.read_rss_mb:.0f}",
                shorten(verdict, 90),
            ]
        )
    print_table(headers, rows, left={0, 1, len(headers) - 1})
    print(
        "(CPU s, RSS MB: the child process's user+system time and peak RSS, interpreter and imports\n"
        " included; read CPU s, read +MB: the read_package call alone, its CPU time and how far it raised\n"
        " the RSS high-water mark; x: ratio to the normal package of the same format)"
    )
    notes = [row for row in results.rows if row.note]
    if notes:
        print()
        for row in notes:
            print(f"  {row.label} [{row.archive}]: {row.note}")
    unexpected = [row for row in results.rows if row.expected != row.verdict]
    worst = max(
        (row for row in results.rows if row.cpu_ratio is not None), key=lambda row: row.cpu_ratio or 0.0
    )
    heaviest = max(
        (row for row in results.rows if row.rss_ratio is not None), key=lambda row: row.rss_ratio or 0.0
    )
    print()
    print(f"highest CPU ratio: {worst.label} [{worst.archive}] {_times(worst.cpu_ratio)}")
    print(f"highest RSS ratio: {heaviest.label} [{heaviest.archive}] {_times(heaviest.rss_ratio)}")
    if unexpected:
        print(f"{len(unexpected)} input(s) got another verdict than expected (see UNEXPECTED above)")


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 2) if base > 0 else None


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.1f}"


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


if __name__ == "__main__":
    sys.exit(main())
