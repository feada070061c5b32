"""Generated benchmark packages kept under .bench/packages/ between runs, built only when missing.

devtools.sample_channel plans a channel deterministically, and a larger plan starts with the packages of
every smaller one (each package depends only on those planned before it), so one pool serves every size.
The pool's folder is named after the generator's source and rattler-build's version: when either changes,
the packages are built again and the old pool is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import string
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

import devtools.sample_channel
from devtools.sample_channel import DEFAULT_SUBDIRS, SamplePackage, build_packages, plan_channel

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = REPO_ROOT / ".bench" / "packages"


def add_package_cache_argument(parser: argparse.ArgumentParser) -> None:
    """--package-cache, for every benchmark that builds its channel from the cache."""
    parser.add_argument(
        "--package-cache",
        type=Path,
        default=CACHE_ROOT,
        metavar="DIR",
        help="folder the generated packages are kept in between runs (default .bench/packages)",
    )


POOL_NAME_LENGTH = 16
CHUNK = 250  # packages per build task: large enough to amortize a task, small enough to spread over cores


def pool_dir(subdirs: Sequence[str] = DEFAULT_SUBDIRS, cache_root: Path = CACHE_ROOT) -> Path:
    """The folder of the packages this generator builds, named after everything that shapes them."""
    digest = hashlib.sha256()
    digest.update(Path(devtools.sample_channel.__file__).read_bytes())
    digest.update(version("py-rattler-build").encode())
    digest.update(",".join(subdirs).encode())
    return cache_root / digest.hexdigest()[:POOL_NAME_LENGTH]


def cached_channel(
    count: int, destination: Path, subdirs: Sequence[str] = DEFAULT_SUBDIRS, cache_root: Path = CACHE_ROOT
) -> tuple[list[Path], int]:
    """The `count`-package sample channel as symbolic links under `destination/<subdir>/`, from the pool
    under `cache_root` (.bench/packages unless told).

    Returns the links and how many packages had to be built now (0 when the pool held them all).
    """
    pool = pool_dir(subdirs, cache_root)
    if cache_root.is_dir():
        for stale in cache_root.iterdir():
            # Only other pools (named like pool_dir's): --package-cache may name a folder holding more.
            if stale != pool and stale.is_dir() and _is_pool_name(stale.name):
                shutil.rmtree(stale, ignore_errors=True)
    plan = plan_channel(count, subdirs)
    missing = [package for package in plan if not (pool / package.key).is_file()]
    if missing:
        _build_into(pool, missing)
    links = []
    for package in plan:
        link = destination / package.key
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(pool / package.key)
        links.append(link)
    return links, len(missing)


def _is_pool_name(name: str) -> bool:
    return len(name) == POOL_NAME_LENGTH and all(character in string.hexdigits for character in name)


def _build_into(pool: Path, packages: list[SamplePackage]) -> None:
    """Build packages on every core; each file moves into the pool only once it is complete."""
    pool.mkdir(parents=True, exist_ok=True)
    chunks = [packages[start : start + CHUNK] for start in range(0, len(packages), CHUNK)]
    workers = max(1, min(os.cpu_count() or 1, len(chunks)))
    with ProcessPoolExecutor(max_workers=workers) as executor:
        for _ in executor.map(_build_chunk, [pool] * len(chunks), chunks):
            pass


def _build_chunk(pool: Path, packages: list[SamplePackage]) -> None:
    with tempfile.TemporaryDirectory(prefix=".building-", dir=pool) as scratch:
        for path in build_packages(packages, Path(scratch)):
            target = pool / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
