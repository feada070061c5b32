"""Generated sample channels, built at run time by rattler-build's own packager (no binaries in git).

Every package depends only on packages of its own subdir or noarch with satisfiable specs, so any of them
can be solved and installed. Versions include a '+' local segment, which S3 notifications URL-encode.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rattler_build import ArchiveType, assemble_package

DEFAULT_SUBDIRS = ("noarch", "linux-64", "osx-arm64", "win-64")
BASE_TIMESTAMP = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SamplePackage:
    subdir: str
    name: str
    version: str
    build: str
    archive: str  # ".conda" or ".tar.bz2"
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    license: str = "MIT"
    build_number: int = 0
    timestamp: datetime = BASE_TIMESTAMP
    payload: str = field(default="", compare=False)

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}{self.archive}"

    @property
    def key(self) -> str:
        """Path of the package inside its channel."""
        return f"{self.subdir}/{self.filename}"


def plan_channel(count: int, subdirs: Sequence[str] = DEFAULT_SUBDIRS, seed: int = 0) -> list[SamplePackage]:
    """A deterministic channel of `count` packages spread over `subdirs`, both archive formats."""
    rng = random.Random(seed)
    packages: list[SamplePackage] = []
    names_by_subdir: dict[str, list[str]] = {subdir: [] for subdir in subdirs}
    for number in range(count):
        subdir = subdirs[number % len(subdirs)]
        # About three versions per name, so shards hold several records and solving has choices.
        name = f"sample-{subdir.replace('-', '')}-{number // (3 * len(subdirs)):04d}"
        major = number // len(subdirs) % 3 + 1
        version = f"{major}.{rng.randrange(10)}.{rng.randrange(10)}" + ("+local" if number % 7 == 0 else "")
        candidates = names_by_subdir[subdir] + (names_by_subdir["noarch"] if subdir != "noarch" else [])
        depends = tuple(
            sorted({f"{dependency} >=1" for dependency in rng.sample(candidates, k=min(2, len(candidates)))})
        )
        if name not in names_by_subdir[subdir]:
            names_by_subdir[subdir].append(name)
        packages.append(
            SamplePackage(
                subdir=subdir,
                name=name,
                version=version,
                build=f"h{number:07x}_{number % 3}",
                build_number=number % 3,
                archive=".conda" if number % 2 == 0 else ".tar.bz2",
                depends=tuple(d for d in depends if not d.startswith(f"{name} ")),
                constrains=("sample-never-installed <0.1",) if number % 5 == 0 else (),
                license=rng.choice(["MIT", "BSD-3-Clause", "Apache-2.0"]),
                timestamp=BASE_TIMESTAMP + timedelta(minutes=number),
                payload=f"sample payload {number}\n",
            )
        )
    return packages


def build_packages(packages: Iterable[SamplePackage], channel_dir: Path) -> list[Path]:
    """Write each package under `channel_dir/<subdir>/` exactly as rattler-build would; return the paths."""
    paths = []
    with tempfile.TemporaryDirectory(prefix="sample-files-") as scratch:
        for index, package in enumerate(packages):
            files_dir = Path(scratch) / str(index)
            (files_dir / "share" / package.name).mkdir(parents=True)
            (files_dir / "share" / package.name / "README.txt").write_text(
                package.payload or package.filename
            )
            output_dir = channel_dir / package.subdir
            output_dir.mkdir(parents=True, exist_ok=True)
            output = assemble_package(
                name=package.name,
                version=package.version,
                target_platform=package.subdir,
                build_string=package.build,
                output_dir=str(output_dir),
                files_dir=str(files_dir),
                depends=list(package.depends),
                constrains=list(package.constrains),
                license=package.license,
                build_number=package.build_number,
                noarch="generic" if package.subdir == "noarch" else None,
                archive_type=ArchiveType.Conda if package.archive == ".conda" else ArchiveType.TarBz2,
                timestamp=package.timestamp,
                compression_threads=1,
                detect_prefix=False,
            )
            path = Path(output.path)
            if path.name != package.filename:
                raise RuntimeError(f"rattler-build wrote {path.name}, expected {package.filename}")
            paths.append(path)
    return paths


def package_files(channel_dir: Path) -> list[Path]:
    """Every package archive under a channel folder, sorted."""
    return sorted(
        path
        for path in channel_dir.glob("*/*")
        if path.is_file() and (path.name.endswith(".conda") or path.name.endswith(".tar.bz2"))
    )
