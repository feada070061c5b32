"""Which patch instructions are in force for a subdir: its patch_instructions.json, read only when its ETag
changed, and the patch package's, read only when full runs find a new build of it; the patched view they
give. A bad source is reported and its last good instructions stay in force."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from .contract import PATCH_INSTRUCTIONS, join_key
from .package_reader import BadPackageError, ReadResourceError
from .patch_package import find_patch_package, read_patch_instructions
from .patches import MAX_INSTRUCTIONS_BYTES, PatchedView, PatchError, PatchInstructions, apply_instructions
from .records import RecordJson
from .reports import one_line_reason
from .state import SubdirState
from .store import NotFoundError, Store, StoredObject, StoreError
from .subdir_ref import SubdirRef

logger = logging.getLogger(__name__)

# The words of a problem found when applying (not parsing) a source: it clears once the source applies.
APPLY_FAILURE = "cannot be applied"


# The state's instructions are parsed again at every publication (for the new and the previous state, which
# mostly hold the same text): a conda-forge-sized file takes seconds to parse, so the last few are kept.
@lru_cache(maxsize=2)
def instructions_of(text: str) -> PatchInstructions:
    """Instructions kept in a state (canonical JSON written by to_bytes; "" for none)."""
    return PatchInstructions.parse(text.encode()) if text else PatchInstructions.EMPTY


def canonical(instructions: PatchInstructions) -> str:
    return "" if instructions.is_empty() else instructions.to_bytes().decode()


def effective_instructions(state: SubdirState) -> PatchInstructions:
    """The patch package's instructions, then the subdir file's (conda-forge practice: the file wins)."""
    return instructions_of(state.patch_package_instructions).then(instructions_of(state.patch_file))


def patch_changed(state: SubdirState, previous: SubdirState) -> bool:
    """Whether the instructions in force differ (so the patched view must be published again)."""
    return (state.patch_file, state.patch_package_instructions) != (
        previous.patch_file,
        previous.patch_package_instructions,
    )


def refresh_patch_file(subdir: SubdirRef, state: SubdirState, current: StoredObject | None) -> None:
    """Bring the state's patch_instructions.json in line with the object as listed or HEADed (None: there is
    none). Its bytes are read only when its ETag changed; instructions that do not parse are reported in the
    state and leave the last good ones in force until the file is fixed or deleted."""
    if (current.etag if current else "") == state.patch_file_etag:
        return
    if current is None:
        state.patch_file, state.patch_file_etag, state.patch_file_problem = "", "", ""
        return
    if current.size > MAX_INSTRUCTIONS_BYTES:
        _refuse(state, current.etag, f"is {current.size} bytes, over the limit of {MAX_INSTRUCTIONS_BYTES}")
        return
    try:
        data, etag = subdir.store.read(subdir.key(PATCH_INSTRUCTIONS))
    except NotFoundError:
        state.patch_file, state.patch_file_etag, state.patch_file_problem = "", "", ""
        return
    try:
        instructions = PatchInstructions.parse(data)
        # A file that parses but would publish a record clients refuse is refused the same way, so the last
        # good instructions stay in force (views_of would otherwise fall back to none of the file's). Checked
        # on its own: a patch package that fails is not the file's problem (views_of reports it).
        apply_instructions(state.records(), instructions, subdir.name)
    except PatchError as error:
        _refuse(state, etag, str(error))
        return
    state.patch_file, state.patch_file_etag, state.patch_file_problem = canonical(instructions), etag, ""


class PatchPackageSource:
    """The patch package as a full run finds it in noarch (rattler-index's --repodata-patch NAME): the newest
    build's identity, "file@etag" ("" when there is none), and its instructions, read at most once per run
    and only when some subdir's state names another build."""

    def __init__(self, store: Store, obj: StoredObject | None, *, name: str, max_size: int) -> None:
        self.store = store
        self.object = obj
        self.name = name
        self.max_size = max_size
        self.identity = f"{obj.name}@{obj.etag}" if obj else ""
        self._members: dict[str, bytes] | None = None
        self._problem = "" if obj or not name else f"the patch package {name!r} is not in noarch"

    @classmethod
    def find(cls, store: Store, channel: str, name: str | None, *, max_size: int) -> PatchPackageSource:
        """The configured package's newest build (one listing of noarch); no name: no patch package."""
        if not name:
            return cls(store, None, name="", max_size=max_size)
        listing = store.list_folder(join_key(channel, "noarch"))
        return cls(store, find_patch_package(listing.objects, name), name=name, max_size=max_size)

    def instructions_for(self, subdir: str) -> tuple[PatchInstructions, str]:
        """The subdir's instructions from the package, or why they cannot be had (then EMPTY)."""
        if self._problem:
            return PatchInstructions.EMPTY, self._problem
        if self.object is None:
            return PatchInstructions.EMPTY, ""
        if self._members is None:
            try:
                self._members = read_patch_instructions(self.store, self.object, max_size=self.max_size)
            except (BadPackageError, ReadResourceError, StoreError) as error:
                self._problem = one_line_reason(f"the patch package {self.object.name} not applied: {error}")
                return PatchInstructions.EMPTY, self._problem
        raw = self._members.get(subdir)
        if raw is None:
            return PatchInstructions.EMPTY, ""
        try:
            return PatchInstructions.parse(raw), ""
        except PatchError as error:
            return PatchInstructions.EMPTY, one_line_reason(
                f"the patch package {self.object.name} not applied: {subdir}/{PATCH_INSTRUCTIONS} {error}"
            )


def refresh_patch_package(subdir: SubdirRef, state: SubdirState, source: PatchPackageSource | None) -> None:
    """Bring the state's patch package instructions in line with the build a full run found (None: the event
    path, which keeps what the state has). A build that cannot be read, parsed or applied is reported and
    the last good instructions stay in force."""
    if source is None or source.identity == state.patch_package:
        return
    instructions, problem = source.instructions_for(subdir.name)
    if not problem:
        try:
            apply_instructions(
                state.records(), instructions.then(instructions_of(state.patch_file)), subdir.name
            )
        except PatchError as error:
            problem = one_line_reason(f"the patch package {source.identity} not applied: {error}")
    state.patch_package = source.identity
    state.patch_package_problem = problem
    if problem:
        logger.warning("%s: %s", subdir.describe(), problem)
    else:
        state.patch_package_instructions = canonical(instructions)


def _refuse(state: SubdirState, etag: str, reason: str) -> None:
    state.patch_file_etag = etag
    state.patch_file_problem = one_line_reason(f"{PATCH_INSTRUCTIONS} not applied: {reason}")
    logger.warning("%s", state.patch_file_problem)


@dataclass(frozen=True)
class Views:
    """What a subdir publishes: the patched view (repodata.json and shards), the records as read, and why
    a patch source was left out (a record it names changed, and the patched record fails the schema)."""

    patched: PatchedView
    unpatched: dict[str, RecordJson]
    instructions: PatchInstructions
    file_problem: str = ""
    package_problem: str = ""


def views_of(state: SubdirState, subdir: str) -> Views:
    """The patched view of the state's records: under both sources' instructions, else without the subdir
    file's, else unpatched."""
    records = state.records()
    package = instructions_of(state.patch_package_instructions)
    problems: list[str] = []
    for instructions in (package.then(instructions_of(state.patch_file)), package, PatchInstructions.EMPTY):
        try:
            view = apply_instructions(records, instructions, subdir)
        except PatchError as error:
            problems.append(one_line_reason(f"{APPLY_FAILURE}: {error}"))
            continue
        file_problem = f"{PATCH_INSTRUCTIONS} {problems[0]}" if problems else ""
        package_problem = f"the patch package {problems[1]}" if len(problems) > 1 else ""
        return Views(view, records, instructions, file_problem, package_problem)
    raise AssertionError("empty instructions always apply")
