"""A conda channel's subdirs and package file names; the keys the indexer writes are in the contract."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .contract import PACKAGE_SUFFIXES

KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "linux-64",
        "linux-aarch64",
        "linux-ppc64le",
        "linux-s390x",
        "linux-armv6l",
        "linux-armv7l",
        "linux-32",
        "linux-riscv64",
        "osx-64",
        "osx-arm64",
        "win-64",
        "win-32",
        "win-arm64",
        "emscripten-wasm32",
        "wasi-wasm32",
        "freebsd-64",
        "zos-z",
    }
)

# Files other indexers (conda-index, rattler-index, older tools) keep beside the packages; they are
# neither packages nor mistakes, so they are passed over silently.
FOREIGN_INDEX_FILES = frozenset(
    {
        "repodata.json.bz2",
        "repodata.json.gz",
        "repodata.jlap",
        "repodata_from_packages.json",
        "repodata_from_packages.json.bz2",
        "repodata_from_packages.json.zst",
        "current_repodata.json",
        "current_repodata.json.bz2",
        "current_repodata.json.zst",
        "patch_instructions.json",
        "run_exports.json",
        "run_exports.json.zst",
        "index.html",
        ".index.json",
        ".DS_Store",
    }
)

# conda's file name grammar: name-version-build, where neither version nor build contains a dash.
_FILENAME_PART = re.compile(r"^[^\s/\\-][^\s/\\]*$")


@dataclass(frozen=True)
class PackageFilename:
    """A package file name split into its name, version, build string and archive extension."""

    name: str
    version: str
    build: str
    extension: str

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


def package_extension(filename: str) -> str | None:
    """Return the archive extension of a package file name, or None for any other file."""
    for extension in PACKAGE_SUFFIXES:
        if filename.endswith(extension) and len(filename) > len(extension):
            return extension
    return None


def parse_package_filename(filename: str) -> PackageFilename | None:
    """Split `name-version-build.ext`; None when the name does not follow conda's grammar."""
    extension = package_extension(filename)
    if extension is None:
        return None
    parts = filename[: -len(extension)].rsplit("-", 2)
    if len(parts) != 3 or not all(_FILENAME_PART.match(part) for part in parts):
        return None
    name, version, build = parts
    return PackageFilename(name=name, version=version, build=build, extension=extension)
