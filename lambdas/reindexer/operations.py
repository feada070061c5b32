"""Operators' changes to a published channel without touching packages: yank, unyank and whole patch files.

Each edits the subdir's patch_instructions.json by compare-and-swap (read it with its ETag, write it back
only if nobody changed it meanwhile, else read again), so two operators never lose each other's change,
then republishes the subdir through the same update the package events use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .contract import PATCH_INSTRUCTIONS
from .layout import parse_package_filename
from .options import IndexOptions
from .patch_sources import effective_instructions, instructions_of
from .patches import PatchError, PatchInstructions, apply_instructions, changed_records
from .publication import load_state
from .records import RecordJson
from .reports import SubdirReport
from .store import FatalStoreError, NotFoundError, PreconditionFailedError, StoreError
from .subdir_ref import SubdirRef
from .updater import update_subdir

EDIT_ATTEMPTS = 8
JSON_TYPE = "application/json"
# Patch instructions change what solvers see within seconds: caches must not keep an old copy long.
PATCH_CACHE_CONTROL = "no-cache"


class OperationError(ValueError):
    """An operation that cannot be done as asked; the message is one line."""


@dataclass(frozen=True)
class Edit:
    """What an operation did to one subdir: the instructions before and after, and the republication."""

    subdir: str
    before: PatchInstructions
    after: PatchInstructions
    report: SubdirReport | None
    # Why this identity could not republish (the operator policy edits instructions only): the indexer
    # republishes on the instructions' own notification instead.
    publish_refused: str | None = None


def yank(subdir: SubdirRef, filenames: Iterable[str], reason: str | None, options: IndexOptions) -> Edit:
    """Take files out of the index (conda's `remove`), keeping the packages; `unyank` brings them back."""
    names = _package_names(subdir, filenames, must_exist=True)
    return _edit_and_publish(subdir, lambda current: current.yanked(names, reason), options, replaces=False)


def unyank(subdir: SubdirRef, filenames: Iterable[str], options: IndexOptions) -> Edit:
    names = _package_names(subdir, filenames, must_exist=False)
    return _edit_and_publish(subdir, lambda current: current.unyanked(names), options, replaces=False)


def install_patch(subdir: SubdirRef, instructions: PatchInstructions, options: IndexOptions) -> Edit:
    """Replace the subdir's patch instructions as a whole (a file that does not parse included)."""
    return _edit_and_publish(subdir, lambda _current: instructions, options, replaces=True)


def preview_patch(
    subdir: SubdirRef, instructions: PatchInstructions
) -> list[tuple[str, RecordJson | None, RecordJson | None]]:
    """The records the instructions would change in the published view, as (file, before, after); nothing
    is written. Raises PatchError when they cannot be applied to the subdir's records."""
    state, _ = load_state(subdir)
    if state is None:
        raise OperationError(f"{subdir.describe()} has not been indexed yet")
    records = state.records()
    before = apply_instructions(records, effective_instructions(state), subdir.name)
    package = instructions_of(state.patch_package_instructions)
    after = apply_instructions(records, package.then(instructions), subdir.name)
    return changed_records(before.records, after.records)


def _edit_and_publish(
    subdir: SubdirRef,
    change: Callable[[PatchInstructions], PatchInstructions],
    options: IndexOptions,
    *,
    replaces: bool,
) -> Edit:
    before, after = edit_instructions(subdir, change, replaces=replaces, dry_run=options.dry_run)
    if options.dry_run:
        return Edit(subdir.name, before, after, None)
    try:
        report = update_subdir(subdir.store, subdir.channel, subdir.name, [PATCH_INSTRUCTIONS], options)
    except FatalStoreError as error:
        return Edit(subdir.name, before, after, None, publish_refused=str(error))
    return Edit(subdir.name, before, after, report)


def edit_instructions(
    subdir: SubdirRef,
    change: Callable[[PatchInstructions], PatchInstructions],
    *,
    replaces: bool = False,
    dry_run: bool = False,
) -> tuple[PatchInstructions, PatchInstructions]:
    """Apply `change` to the stored instructions by compare-and-swap; (before, after). An unchanged result,
    or a dry run, writes nothing. A stored file that does not parse is refused unless the change `replaces`
    it whole."""
    key = subdir.key(PATCH_INSTRUCTIONS)
    for _ in range(EDIT_ATTEMPTS):
        etag: str | None
        try:
            data, etag = subdir.store.read(key)
        except NotFoundError:
            data, etag = b"", None
        try:
            current = PatchInstructions.parse(data) if etag is not None else PatchInstructions.EMPTY
        except PatchError as error:
            if not replaces:
                raise OperationError(
                    f"{subdir.describe(PATCH_INSTRUCTIONS)} does not parse: {error}"
                ) from None
            current = PatchInstructions.EMPTY
        updated = change(current)
        if updated == current or dry_run:
            return current, updated
        try:
            subdir.store.write(
                key,
                updated.to_bytes(),
                content_type=JSON_TYPE,
                cache_control=PATCH_CACHE_CONTROL,
                if_match=etag,
                if_none_match=etag is None,
            )
        except PreconditionFailedError:
            continue  # another operator's edit landed first: apply ours to theirs
        return current, updated
    raise StoreError(
        f"{subdir.describe(PATCH_INSTRUCTIONS)} kept changing; gave up after {EDIT_ATTEMPTS} tries"
    )


def check_package_files(subdir: SubdirRef, filenames: Iterable[str], *, must_exist: bool) -> list[str]:
    """The sorted, distinct file names, each a package file name (and, with must_exist, in the subdir);
    OperationError otherwise. Callers editing several subdirs check them all before editing any."""
    return _package_names(subdir, filenames, must_exist=must_exist)


def _package_names(subdir: SubdirRef, filenames: Iterable[str], *, must_exist: bool) -> list[str]:
    names = sorted(set(filenames))
    if not names:
        raise OperationError("no file names given")
    for name in names:
        if parse_package_filename(name) is None:
            raise OperationError(
                f"{name!r} is not a package file name (<name>-<version>-<build>.conda|.tar.bz2)"
            )
        if must_exist and subdir.store.head(subdir.key(name)) is None:
            raise OperationError(f"{subdir.describe(name)} does not exist")
    return names
