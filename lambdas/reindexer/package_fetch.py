"""Fetching packages from a store and turning each into a record, a rejection, or a reason to retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from .layout import parse_package_filename
from .package_reader import BadPackageError, PackageSpool
from .planner import listing_rejection
from .records import build_record, encode_record
from .state import IndexedPackage, RejectedFile
from .store import NotFoundError, Store, StoredObject, StoreError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gone:
    """The object was deleted before it could be read."""


@dataclass(frozen=True)
class Failed:
    """The object could not be fetched now (network, throttling, a bug): not a verdict, retried later."""

    reason: str


@dataclass(frozen=True)
class Deferred:
    """Not read because the time budget ran out."""


Outcome = IndexedPackage | RejectedFile | Gone | Failed | Deferred


class ProgressFactory(Protocol):
    """Opens a progress display for `total` package reads and yields the function that advances it."""

    def __call__(self, label: str, total: int) -> AbstractContextManager[Callable[[], None]]: ...


@contextmanager
def no_progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    del label, total
    yield lambda: None


def read_package(store: Store, subdir: str, obj: StoredObject) -> Outcome:
    """Fetch one package and build its record."""
    filename = parse_package_filename(obj.name)
    if filename is None:
        return RejectedFile(obj.etag, obj.size, listing_rejection(obj.name) or "not a package")
    with PackageSpool() as spool:
        try:
            fetched = store.download(obj.key, spool.write)
        except NotFoundError:
            return Gone()
        except StoreError as error:
            return Failed(str(error))
        try:
            if fetched.size == 0:
                raise BadPackageError("empty file (0 bytes)")
            metadata = spool.read_metadata(obj.name)
            record = encode_record(build_record(filename, subdir, metadata, spool.digests()))
        except BadPackageError as error:
            return RejectedFile(fetched.etag, fetched.size, str(error))
        except Exception as error:
            # Not a verdict on the package: an unforeseen failure is logged in full and retried next run,
            # and never stops the packages beside it.
            logger.exception("unexpected error while reading %s", store.describe(obj.key))
            return Failed(f"unexpected {type(error).__name__}: {error}")
    return IndexedPackage(fetched.etag, fetched.size, record)


def read_packages(
    store: Store,
    subdir: str,
    objects: list[StoredObject],
    *,
    jobs: int,
    progress: ProgressFactory = no_progress,
    deadline: float | None = None,
) -> list[tuple[StoredObject, Outcome]]:
    """Read packages in parallel; those not started before `deadline` (time.monotonic) are Deferred."""
    if not objects:
        return []

    def read(obj: StoredObject) -> Outcome:
        if deadline is not None and time.monotonic() >= deadline:
            return Deferred()
        return read_package(store, subdir, obj)

    results: list[tuple[StoredObject, Outcome]] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, progress(subdir, len(objects)) as advance:
        futures = {pool.submit(read, obj): obj for obj in objects}
        for future in as_completed(futures):
            results.append((futures[future], future.result()))
            advance()
    return results
