"""Fetching packages from a store and turning each into a record, a rejection, or a reason to retry."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

from .layout import parse_package_filename
from .options import IndexOptions
from .package_reader import BadPackageError, PackageSpool, ReadResourceError
from .planner import listing_rejection
from .record_schema import RECORD_SCHEMA, RecordError, checked_about
from .records import build_record, checked_stored_record, decode_record, encode_about, encode_record
from .reports import one_line_reason
from .shards import check_shardable
from .state import IndexedPackage, RejectedFile
from .store import NotFoundError, Store, StoredObject, StoreError, UnreadableObjectError
from .subdir_ref import SubdirRef

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
# Verdicts reached earlier (by a fan-out run's read batches), by file name in one subdir.
Prefetched = Mapping[str, IndexedPackage | RejectedFile]


def read_package(store: Store, subdir: str, obj: StoredObject, *, max_size: int) -> Outcome:
    """Fetch one package and build its record.

    Whatever the content does to the reader, the record builder or the serialisers becomes a one-line
    rejection of this file; only what says nothing about the content (the store, the temporary disk) is
    a failure, retried by a later run.
    """
    filename = parse_package_filename(obj.name)
    if filename is None:
        return RejectedFile(obj.etag, obj.size, listing_rejection(obj.name) or "not a package")
    if obj.size > max_size:
        return RejectedFile(
            obj.etag, obj.size, f"the package is {obj.size} bytes, over the limit of {max_size}"
        )
    announced = obj
    with PackageSpool(max_size) as spool:

        def expect(current: StoredObject) -> None:
            nonlocal announced
            announced = current
            spool.expect(current.size)

        try:
            fetched = store.download(obj.key, spool.write, expect=expect)
        except NotFoundError:
            return Gone()
        except (UnreadableObjectError, BadPackageError) as error:  # archived, SSE-C, or too large
            return RejectedFile(announced.etag, announced.size, one_line_reason(str(error)))
        except (StoreError, ReadResourceError) as error:
            return Failed(one_line_reason(str(error)))
        except Exception as error:
            # Not a verdict on the package: an unforeseen failure while fetching is logged and retried.
            logger.exception("unexpected error while fetching %s", store.describe(obj.key))
            return Failed(one_line_reason(f"unexpected {type(error).__name__}: {error}"))
        try:
            if fetched.size == 0:
                raise BadPackageError("empty file (0 bytes)")
            metadata = spool.read_metadata(obj.name)
            record = build_record(filename, subdir, metadata, spool.digests())
            text = encode_record(record)
            check_shardable(record)
            about = encode_about(checked_about(metadata.about))
        except BadPackageError as error:
            return RejectedFile(fetched.etag, fetched.size, one_line_reason(str(error)))
        except (ReadResourceError, MemoryError) as error:
            return Failed(one_line_reason(f"{type(error).__name__}: {error}"))
        except Exception as error:
            # The whole archive is in hand, so this is the content's doing: the file is refused (and logged
            # in full so the reader can learn the case), never allowed to stop the packages beside it.
            logger.exception("unexpected error while reading %s", store.describe(obj.key))
            reason = f"could not be read: unexpected {type(error).__name__}: {error}"
            return RejectedFile(fetched.etag, fetched.size, one_line_reason(reason))
    return IndexedPackage(fetched.etag, fetched.size, text, about)


def recheck_records(
    packages: Mapping[str, IndexedPackage], subdir: str, schema: int
) -> list[tuple[StoredObject, Outcome]]:
    """Records kept from a run under older rules (`schema`), checked under today's: the outcome of each one
    that is cleaned (an updated record) or refused (a rejection), without fetching the package again.
    Nothing when `schema` is today's."""
    if schema == RECORD_SCHEMA:
        return []
    outcomes: list[tuple[StoredObject, Outcome]] = []
    for name, package in sorted(packages.items()):
        stored = StoredObject(name, package.etag, package.size)
        filename = parse_package_filename(name)
        try:
            if filename is None:
                raise RecordError("file name is not <name>-<version>-<build>.conda|.tar.bz2")
            text = encode_record(checked_stored_record(decode_record(package.record), filename, subdir))
        except (RecordError, ValueError) as error:
            reason = one_line_reason(f"refused by the indexer's current rules: {error}")
            outcomes.append((stored, RejectedFile(package.etag, package.size, reason)))
            continue
        if text != package.record:
            outcomes.append((stored, replace(package, record=text)))
    return outcomes


def take_prefetched(
    objects: list[StoredObject], prefetched: Prefetched
) -> tuple[list[tuple[StoredObject, Outcome]], list[StoredObject]]:
    """The outcomes of `objects` read earlier, for each one still the upload that was read (same ETag and
    size), and the objects left to read now."""
    taken: list[tuple[StoredObject, Outcome]] = []
    left: list[StoredObject] = []
    for obj in objects:
        verdict = prefetched.get(obj.name)
        if verdict is not None and (verdict.etag, verdict.size) == (obj.etag, obj.size):
            taken.append((obj, verdict))
        else:
            left.append(obj)
    return taken, left


def read_packages(
    subdir: SubdirRef, objects: list[StoredObject], options: IndexOptions
) -> list[tuple[StoredObject, Outcome]]:
    """Read packages in parallel; those not started before the options' deadline are Deferred."""
    if not objects:
        return []
    deadline, clock = options.deadline, options.clock

    def read(obj: StoredObject) -> Outcome:
        if deadline is not None and clock.monotonic() >= deadline:
            return Deferred()
        return read_package(subdir.store, subdir.name, obj, max_size=options.max_package_bytes)

    results: list[tuple[StoredObject, Outcome]] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool,
        options.progress(subdir.name, len(objects)) as advance,
    ):
        futures = {pool.submit(read, obj): obj for obj in objects}
        for future in as_completed(futures):
            results.append((futures[future], future.result()))
            advance()
    return results
