"""conda's repodata patch instructions (a subdir's patch_instructions.json): parsing untrusted files,
composing them, and the patched view of a subdir's records.

The semantics are conda-index's (`_apply_instructions`, which calls conda-build's
`merge_or_update_dict(..., merge=False, add_missing_keys=False)`):

- `packages` overrides apply to the record of the same file name (a .tar.bz2), and the same overrides to
  its .conda twin (same stem); then `packages.conda` overrides apply to .conda records. A file named but
  absent from the records is ignored.
- Within a record an override replaces a field's value (lists are replaced, not merged), adds fields the
  record lacks, merges an object into an object field, and a JSON null removes the field.
- `revoke`: the record gets `"revoked": true` and REVOKED_DEPENDENCY in its depends; `remove`: the record
  is dropped and its file name listed in repodata's "removed". A .tar.bz2 name reaches its .conda twin too.
- Overrides apply first, then revoke, then remove.

A null removes the field, never writes null: conda-index deletes the key (merge_or_update_dict's
`if value is None and key in base: del base[key]`, asserted by its test_channel_patch_instructions_json),
and rattler refuses a null `depends`, `constrains`, `track_features` or `build_number` ("invalid type:
null"), which would make the whole repodata.json unreadable to pixi. The record schema drops nulls anyway.

Every record the instructions change is checked again against the record schema, so no patch can publish
a record clients would refuse; records not named are passed through as the same text, never decoded.

Departures from conda, each on the safe side: a file whose version is not 1 is refused (conda refuses
only versions above 1); keys and file names must be package file names of the right extension; and
`reindexer_reasons` is our own key (why a file was yanked), which conda ignores.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from .contract import CONDA_SUFFIX, TAR_BZ2_SUFFIX
from .layout import PackageFilename, parse_package_filename
from .record_schema import RecordError, shorten, show
from .records import RecordJson, checked_stored_record, decode_record, encode_record, sort_record
from .reports import MAX_REASON_LENGTH, one_line_reason
from .strict_json import StrictJsonError, dump_json, load_strict_json

PATCH_INSTRUCTIONS_VERSION = 1
MAX_INSTRUCTIONS_BYTES = 64 * 1024 * 1024  # conda-forge's largest per-subdir file is tens of MB
REVOKED_DEPENDENCY = "package_has_been_revoked"
# S3's longest key: a longer name can be no package file.
MAX_FILENAME_LENGTH = 1024

VERSION_KEY = "patch_instructions_version"
PACKAGES_KEY = "packages"
PACKAGES_CONDA_KEY = "packages.conda"
REMOVE_KEY = "remove"
REVOKE_KEY = "revoke"
REASONS_KEY = "reindexer_reasons"

Overrides = Mapping[str, Mapping[str, Any]]


class PatchError(ValueError):
    """A patch instructions file or package that cannot be applied; the message is one line."""


@dataclass(frozen=True)
class PatchInstructions:
    """One subdir's patch instructions, validated; the mappings are read-only views."""

    packages: Overrides
    packages_conda: Overrides
    remove: frozenset[str]
    revoke: frozenset[str]
    reasons: Mapping[str, str]

    EMPTY: ClassVar[PatchInstructions]

    def __post_init__(self) -> None:
        # Read-only copies, so instructions shared between runs (EMPTY, a state's) cannot be changed; the
        # read-only views of other instructions are kept as they are (yank and unyank copy no overrides).
        object.__setattr__(self, "packages", _frozen_overrides(self.packages))
        object.__setattr__(self, "packages_conda", _frozen_overrides(self.packages_conda))
        object.__setattr__(self, "remove", frozenset(self.remove))
        object.__setattr__(self, "revoke", frozenset(self.revoke))
        object.__setattr__(self, "reasons", _frozen(self.reasons))

    @classmethod
    def parse(cls, data: bytes) -> PatchInstructions:
        """Instructions from untrusted bytes; PatchError with a one-line reason for anything else."""
        if len(data) > MAX_INSTRUCTIONS_BYTES:
            raise PatchError(f"is {len(data)} bytes, over the limit of {MAX_INSTRUCTIONS_BYTES}")
        try:
            document = load_strict_json(bytes(data))
        except StrictJsonError as error:
            raise PatchError(one_line_reason(f"is not valid JSON: {error}")) from None
        if not isinstance(document, dict):
            raise PatchError(f"must be a JSON object, not {_json_type(document)}")
        version = document.get(VERSION_KEY, PATCH_INSTRUCTIONS_VERSION)
        if type(version) is not int or version != PATCH_INSTRUCTIONS_VERSION:
            raise PatchError(
                f"{VERSION_KEY} {show(version)} is not supported (only {PATCH_INSTRUCTIONS_VERSION})"
            )
        # Unknown top-level keys are ignored, as conda ignores them.
        return cls(
            packages=_parsed_overrides(document, PACKAGES_KEY, TAR_BZ2_SUFFIX),
            packages_conda=_parsed_overrides(document, PACKAGES_CONDA_KEY, CONDA_SUFFIX),
            remove=_parsed_names(document, REMOVE_KEY),
            revoke=_parsed_names(document, REVOKE_KEY),
            reasons=_parsed_reasons(document),
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys and lists, version 1) that parse() reads back equal.

        Raises PatchError when it would be over MAX_INSTRUCTIONS_BYTES (parse() would refuse it)."""
        document: dict[str, Any] = {
            VERSION_KEY: PATCH_INSTRUCTIONS_VERSION,
            PACKAGES_KEY: _plain_overrides(self.packages),
            PACKAGES_CONDA_KEY: _plain_overrides(self.packages_conda),
            REMOVE_KEY: sorted(self.remove),
            REVOKE_KEY: sorted(self.revoke),
        }
        if self.reasons:
            document[REASONS_KEY] = dict(self.reasons)
        data = dump_json(document).encode()
        if len(data) > MAX_INSTRUCTIONS_BYTES:
            raise PatchError(f"would be {len(data)} bytes, over the limit of {MAX_INSTRUCTIONS_BYTES}")
        return data

    def is_empty(self) -> bool:
        return not (self.packages or self.packages_conda or self.remove or self.revoke or self.reasons)

    def then(self, later: PatchInstructions) -> PatchInstructions:
        """`later` applied after these: overrides merged per file and field (later wins; an object merged
        into an object, as apply_instructions merges one into a record), remove and revoke united, reasons
        merged (later wins).

        Applying the result is applying these and then `later`, with two exceptions the format cannot
        express: an object field that `later` sets after these set it to null or a non-object (merged into
        the record's object, not replacing it), and a revoked record whose depends `later` overrides (it
        keeps REVOKED_DEPENDENCY)."""
        # Instructions are immutable: with nothing to merge, either operand is the result (no copy of a
        # conda-forge-sized file on every run).
        if later.is_empty():
            return self
        if self.is_empty():
            return later
        packages = _merged_overrides(self.packages, later.packages)
        packages_conda = {name: dict(fields) for name, fields in self.packages_conda.items()}
        # A .conda record gets these packages.conda overrides before later's .tar.bz2 overrides reach it.
        for name, fields in packages_conda.items():
            twin_fields = later.packages.get(_tar_bz2_twin(name))
            if twin_fields is not None:
                _merge_fields(fields, twin_fields, into_record=False)
        for name, later_fields in later.packages_conda.items():
            _merge_fields(packages_conda.setdefault(name, {}), later_fields, into_record=False)
        return PatchInstructions(
            packages=packages,
            packages_conda=packages_conda,
            remove=self.remove | later.remove,
            revoke=self.revoke | later.revoke,
            reasons={**self.reasons, **later.reasons},
        )

    def yanked(self, filenames: Iterable[str], reason: str | None) -> PatchInstructions:
        """These instructions with `filenames` removed from the index (and `reason` kept for each, made one
        line; None or blank keeps any reason already given). PatchError for a name that is no package file."""
        names = _checked_names(filenames, "a file to yank")
        reasons = dict(self.reasons)
        if reason is not None and reason.strip():
            line = one_line_reason(reason)
            reasons.update(dict.fromkeys(names, line))
        return PatchInstructions(
            packages=self.packages,
            packages_conda=self.packages_conda,
            remove=self.remove | names,
            revoke=self.revoke,
            reasons=reasons,
        )

    def unyanked(self, filenames: Iterable[str]) -> PatchInstructions:
        """These instructions without `filenames` in remove or revoke, and without their reasons. Only the
        names given: a .conda file removed through its .tar.bz2 twin stays removed until the twin is
        unyanked."""
        names = frozenset(filenames)
        return PatchInstructions(
            packages=self.packages,
            packages_conda=self.packages_conda,
            remove=self.remove - names,
            revoke=self.revoke - names,
            reasons={name: text for name, text in self.reasons.items() if name not in names},
        )


@dataclass(frozen=True)
class PatchedView:
    """The records as clients see them under patch instructions, and the files the instructions removed."""

    records: dict[str, RecordJson]
    removed: list[str]


def apply_instructions(
    records: Mapping[str, RecordJson], instructions: PatchInstructions, subdir: str
) -> PatchedView:
    """The patched view of a subdir's records (file name → record text).

    Only the records the instructions name are decoded, patched and checked again against the record
    schema (PatchError naming the file when one fails); the others keep their text. Removed files are not
    checked: they are not published.
    """
    patched = dict(records)
    if instructions.is_empty():
        return PatchedView(patched, [])
    overrides: dict[str, list[Mapping[str, Any]]] = {}
    for name, fields in instructions.packages.items():
        for target in _targets(name):
            if target in records:
                overrides.setdefault(target, []).append(fields)
    for name, fields in instructions.packages_conda.items():
        if name in records:
            overrides.setdefault(name, []).append(fields)
    revoked = {target for name in instructions.revoke for target in _targets(name) if target in records}
    removed = {target for name in instructions.remove for target in _targets(name) if target in records}
    for name in sorted((overrides.keys() | revoked) - removed):
        patched[name] = _patched_record(name, records[name], overrides.get(name, []), name in revoked, subdir)
    for name in removed:
        del patched[name]
    return PatchedView(patched, sorted(removed))


def changed_records(
    before: Mapping[str, RecordJson], after: Mapping[str, RecordJson]
) -> list[tuple[str, RecordJson | None, RecordJson | None]]:
    """(file, text before or None, text after or None) of each record that differs, by file name."""
    return [
        (name, before.get(name), after.get(name))
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


# --- applying -----------------------------------------------------------------------------------------------


def _patched_record(
    name: str, text: RecordJson, overrides: list[Mapping[str, Any]], revoked: bool, subdir: str
) -> RecordJson:
    parsed = parse_package_filename(name)
    if parsed is None:
        raise PatchError(f"{show(name)} is not a package file name")
    try:
        record = decode_record(text)
    except ValueError as error:
        raise PatchError(
            one_line_reason(f"{shorten(name, 160)}: its record does not parse: {error}")
        ) from None
    if not isinstance(record, dict):
        raise PatchError(f"{shorten(name, 160)}: its record is not a JSON object")
    for fields in overrides:
        _merge_fields(record, fields)
    if revoked:
        depends = record.get("depends", [])
        if isinstance(depends, list) and REVOKED_DEPENDENCY not in depends:
            record["depends"] = [*depends, REVOKED_DEPENDENCY]
    checked = _checked(record, parsed, subdir, name)
    if revoked:
        # The record schema does not keep "revoked"; the published record must.
        checked["revoked"] = True
        checked = sort_record(checked)
    return encode_record(checked)


def _checked(record: dict[str, Any], parsed: PackageFilename, subdir: str, name: str) -> dict[str, Any]:
    try:
        return checked_stored_record(record, parsed, subdir)
    except RecordError as error:
        raise PatchError(one_line_reason(f"{shorten(name, 160)} after patching: {error}")) from None


def _merge_fields(target: dict[str, Any], fields: Mapping[str, Any], *, into_record: bool = True) -> None:
    """conda's merge of one override into a record: a value replaces the field's, an object is merged into
    an object field, and null removes the field. Into an earlier override (`into_record` False) a null is
    kept, to remove the field when the merged override is applied."""
    for field, value in fields.items():
        current = target.get(field)
        if value is None and into_record:
            target.pop(field, None)
        elif isinstance(value, Mapping) and isinstance(current, dict):
            merged = dict(current)
            _merge_fields(merged, value, into_record=into_record)
            target[field] = merged
        else:
            target[field] = copy.deepcopy(_plain(value))


def _targets(name: str) -> tuple[str, ...]:
    """The records a file name in instructions reaches: itself, and a .tar.bz2 name its .conda twin."""
    if name.endswith(TAR_BZ2_SUFFIX):
        return (name, f"{name[: -len(TAR_BZ2_SUFFIX)]}{CONDA_SUFFIX}")
    return (name,)


def _tar_bz2_twin(name: str) -> str:
    return f"{name[: -len(CONDA_SUFFIX)]}{TAR_BZ2_SUFFIX}" if name.endswith(CONDA_SUFFIX) else name


def _merged_overrides(earlier: Overrides, later: Overrides) -> dict[str, dict[str, Any]]:
    merged = {name: dict(fields) for name, fields in earlier.items()}
    for name, fields in later.items():
        _merge_fields(merged.setdefault(name, {}), fields, into_record=False)
    return merged


# --- parsing ------------------------------------------------------------------------------------------------


def _parsed_overrides(document: Mapping[str, Any], key: str, extension: str) -> Overrides:
    section = document.get(key, {})
    if not isinstance(section, dict):
        raise PatchError(f"{key} must be an object of overrides by file name, not {_json_type(section)}")
    for name, fields in section.items():
        parsed = _parsed_name(name)
        if parsed is None or parsed.extension != extension:
            raise PatchError(f"{key} names {show(name)}, not a {extension} package file name")
        if not isinstance(fields, dict):
            raise PatchError(f"{key}[{show(name)}] must be an object of fields, not {_json_type(fields)}")
    # Read-only views of the parsed objects, which nothing else holds: no copy of a large file.
    return {name: MappingProxyType(fields) for name, fields in section.items()}


def _parsed_names(document: Mapping[str, Any], key: str) -> frozenset[str]:
    names = document.get(key, [])
    if not isinstance(names, list):
        raise PatchError(f"{key} must be a list of package file names, not {_json_type(names)}")
    for name in names:
        if not isinstance(name, str) or len(name) > MAX_FILENAME_LENGTH:
            raise PatchError(f"{key} holds {show(name)}, not a package file name")
    # Names conda's grammar cannot split can match no record: conda-forge's own files list some (an empty
    # build string, as in `lammps-2018.03.16-.tar.bz2`), so they are passed over rather than refused.
    return frozenset(name for name in names if _parsed_name(name) is not None)


def _parsed_reasons(document: Mapping[str, Any]) -> dict[str, str]:
    reasons = document.get(REASONS_KEY, {})
    if not isinstance(reasons, dict):
        raise PatchError(
            f"{REASONS_KEY} must be an object of reasons by file name, not {_json_type(reasons)}"
        )
    for name, reason in reasons.items():
        if _parsed_name(name) is None:
            raise PatchError(f"{REASONS_KEY} names {show(name)}, not a package file name")
        if not isinstance(reason, str) or not reason or not reason.isprintable():
            raise PatchError(
                f"{REASONS_KEY}[{show(name)}] must be one line of printable text, not {show(reason)}"
            )
        if len(reason) > MAX_REASON_LENGTH:
            raise PatchError(
                f"{REASONS_KEY}[{show(name)}] is {len(reason)} characters long, over the limit of "
                f"{MAX_REASON_LENGTH}"
            )
    return reasons


def _parsed_name(name: Any) -> PackageFilename | None:
    if not isinstance(name, str) or len(name) > MAX_FILENAME_LENGTH:
        return None
    return parse_package_filename(name)


def _checked_names(filenames: Iterable[str], what: str) -> frozenset[str]:
    names = frozenset(filenames)
    for name in sorted(names, key=str):
        if _parsed_name(name) is None:
            raise PatchError(f"{show(name)} is not a package file name ({what})")
    return names


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- read-only and plain copies -----------------------------------------------------------------------------


def _frozen_overrides(overrides: Overrides) -> Mapping[str, Mapping[str, Any]]:
    if isinstance(overrides, MappingProxyType):
        return overrides
    return MappingProxyType({name: _frozen(fields) for name, fields in overrides.items()})


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


def _plain_overrides(overrides: Overrides) -> dict[str, dict[str, Any]]:
    return {
        name: {field: _plain(value) for field, value in fields.items()} for name, fields in overrides.items()
    }


def _plain(value: Any) -> Any:
    """A JSON value with any read-only mapping in it turned back into a dict (for json and copy)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# Set here, once the helpers its construction uses are defined.
PatchInstructions.EMPTY = PatchInstructions(
    packages={}, packages_conda={}, remove=frozenset(), revoke=frozenset(), reasons={}
)
