"""The fields a published record may hold, each with the type and value rules real clients apply.

Known fields are allow-listed; everything else in info/index.json is dropped. Names, versions, build
strings and match specs are checked with rattler's own parsers (py-rattler, the library pixi is built on),
and the whole index part once more with rattler's IndexJson deserializer, so a record we publish is one
rattler parses. Where conda is stricter than rattler, its rules apply on top (reindexer.conda_grammar).
Digests and size are ours, computed from the archive; `fn`, `url`, `channel` and the legacy fields are
never taken from it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import conda_grammar
from .layout import PackageFilename

# C0 and C1 controls and lone surrogates (Unicode categories Cc and Cs).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ARCH = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
# Bump when the rules change: records kept from earlier runs are checked again under the new rules.
RECORD_SCHEMA = 1

MAX_NAME_LENGTH = 128
MAX_VERSION_LENGTH = 128
MAX_BUILD_LENGTH = 128
MAX_SPEC_LENGTH = 512
MAX_SPECS = 2048
MAX_TEXT_LENGTH = 1024
MAX_LIST_ITEMS = 64
# Milliseconds (or seconds: clients take small values as seconds) since 1970, up to the year 2100.
MAX_TIMESTAMP = 4_102_444_800_000
INT64_MAX = 2**63 - 1

RUN_EXPORTS_KINDS = ("weak", "strong", "noarch", "weak_constrains", "strong_constrains")

# The text fields of info/about.json kept for the channel's page and channeldata.json (conda-index's names).
ABOUT_FIELDS = ("summary", "home", "license", "description", "dev_url", "doc_url")
# rattler writes these as one URL or a list of them (its AboutJson); the first one is kept.
ABOUT_URL_FIELDS = frozenset({"home", "dev_url", "doc_url"})
# Descriptions run to pages: the first few hundred characters are kept (cut, never refused).
MAX_DESCRIPTION_LENGTH = 400
# Dropped, never copied: where the file lives is the client's to derive; digests and size are ours; the
# legacy fields are conda-index's deprecated keys.
DROPPED_FIELDS = frozenset(
    {
        "fn",
        "url",
        "channel",
        "md5",
        "sha256",
        "size",
        "legacy_bz2_md5",
        "legacy_bz2_size",
        "date",
        "package_type",
        "preferred_env",
    }
)


class RecordError(ValueError):
    """A field value no client would accept; the message is a one-line reason naming the field."""


def checked_index_fields(index: Mapping[str, Any], filename: PackageFilename, subdir: str) -> dict[str, Any]:
    """The fields of info/index.json (or of a stored record) a published record keeps, checked and cleaned.

    Raises RecordError for a value clients would refuse. Unknown fields, nulls and DROPPED_FIELDS are left
    out; the subdir is the folder's.
    """
    _check_identity(index, filename)
    declared_subdir = index.get("subdir")
    if declared_subdir is not None and declared_subdir != subdir:
        raise RecordError(
            f"info/index.json says subdir {show(declared_subdir)} but the file is in {subdir!r}"
        )
    fields: dict[str, Any] = {
        "name": filename.name,
        "version": filename.version,
        "build": filename.build,
        "subdir": subdir,
        "build_number": _whole_number(index.get("build_number", 0), "build_number", INT64_MAX),
        "depends": _specs(index.get("depends", []), "depends"),
    }
    for field, check in _OPTIONAL_FIELDS.items():
        value = index.get(field)
        if value is not None and (checked := check(value, field)) is not None:
            fields[field] = checked
    from rattler.package import IndexJson  # (rattler loads on first use: see _check_identity)

    _confirm_with_rattler(IndexJson.from_str, fields, "info/index.json")
    return fields


def checked_run_exports(run_exports: Any) -> dict[str, list[str]]:
    """info/run_exports.json as clients read it: lists of match specs by kind; unknown kinds dropped."""
    if not isinstance(run_exports, dict):
        raise RecordError(f"run_exports must be an object, not {type(run_exports).__name__}")
    checked = {
        kind: _specs(run_exports[kind], f"run_exports.{kind}")
        for kind in RUN_EXPORTS_KINDS
        if run_exports.get(kind) is not None
    }
    from rattler.package import RunExportsJson

    _confirm_with_rattler(RunExportsJson.from_str, checked, "info/run_exports.json")
    return checked


def checked_about(about: Any) -> dict[str, str]:
    """The ABOUT_FIELDS of info/about.json that are one line of printable text within MAX_TEXT_LENGTH (the
    description cut to MAX_DESCRIPTION_LENGTH instead); whitespace runs become one space. Anything else is
    dropped, never refused: about.json only describes a package, so a bad one costs its fields, not the
    package. Never raises."""
    if not isinstance(about, dict):
        return {}
    kept: dict[str, str] = {}
    for field in ABOUT_FIELDS:
        value = about.get(field)
        if field in ABOUT_URL_FIELDS and isinstance(value, list) and value:
            value = value[0]
        if (text := _about_text(value, cut=field == "description")) is not None:
            kept[field] = text
    return kept


def _about_text(value: Any, *, cut: bool) -> str | None:
    if not isinstance(value, str):
        return None
    if cut:
        # Bounded before the whitespace pass: the member is at most METADATA_MEMBER_LIMIT bytes anyway.
        value = value[: 4 * MAX_DESCRIPTION_LENGTH]
    elif len(value) > MAX_TEXT_LENGTH:
        return None
    text = " ".join(value.split())
    if cut:
        text = shorten(text, MAX_DESCRIPTION_LENGTH)
    # str.isprintable refuses controls, format characters (bidi overrides), separators other than the
    # space, surrogates, private-use and unassigned code points.
    if not text or not text.isprintable():
        return None
    return text


def show(value: Any, limit: int = 64) -> str:
    """A value for a rejection reason: its repr, shortened, so a hostile value cannot flood the logs."""
    return shorten(repr(value), limit)


def shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _check_identity(index: Mapping[str, Any], filename: PackageFilename) -> None:
    values = []
    for field, limit in (
        ("name", MAX_NAME_LENGTH),
        ("version", MAX_VERSION_LENGTH),
        ("build", MAX_BUILD_LENGTH),
    ):
        value = index.get(field)
        if not isinstance(value, str) or not value:
            raise RecordError(f"info/index.json has no valid {field!r} (a non-empty string)")
        if len(value) > limit:
            raise RecordError(
                f"info/index.json {field} is {len(value)} characters long, over the limit of {limit}"
            )
        values.append(value)
    name, version, build = values
    if (name, version, build) != (filename.name, filename.version, filename.build):
        raise RecordError(
            f"file name says {filename.stem} but info/index.json says {shorten(f'{name}-{version}-{build}')}"
        )
    # rattler is imported where a record is checked, not with this module: runs that check none (a no-op,
    # a deletion) spare the ~0.15 s its import takes. After the first, an import is a dictionary lookup.
    from rattler import MatchSpec, PackageName, Version

    # The file name grammar already keeps whitespace, '/' and '-' out of all three.
    if reason := _refused_by(PackageName, name) or conda_grammar.name_problem(name):
        raise RecordError(f"name {show(name)} {reason}")
    if reason := _refused_by(Version, version) or conda_grammar.version_problem(version):
        raise RecordError(f"version {show(version)} does not parse: {reason}")
    try:
        parsed_build = MatchSpec(f"{name} =={version} {build}").build
    except Exception as error:  # rattler raises its own exception types
        raise RecordError(f"build string {show(build)} does not parse: {_first_line(error)}") from None
    if parsed_build != build:
        raise RecordError(f"build string {show(build)} is not read back as itself by a match spec")
    if reason := conda_grammar.build_problem(build):
        raise RecordError(f"build string {show(build)} {reason}")


def _specs(value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        raise RecordError(f"{field} must be a list of match specs, not {type(value).__name__}")
    if len(value) > MAX_SPECS:
        raise RecordError(f"{field} has {len(value)} entries, over the limit of {MAX_SPECS}")
    for spec in value:
        if not isinstance(spec, str) or not spec.strip():
            raise RecordError(f"{field} holds {show(spec)}, not a match spec")
        if len(spec) > MAX_SPEC_LENGTH:
            raise RecordError(
                f"{field} holds a spec of {len(spec)} characters, over the limit of {MAX_SPEC_LENGTH}"
            )
        if _has_control_characters(spec):
            raise RecordError(f"{field} spec {show(spec)} holds control characters")
        if reason := _spec_problem(spec):
            raise RecordError(f"{field} spec {show(spec)} does not parse: {reason}")
    return list(value)


# The same specs recur across a channel's records ('python >=3.10,<3.11.0a0'): each is judged once.
@functools.lru_cache(maxsize=65536)
def _spec_problem(spec: str) -> str | None:
    """rattler's parse (without the extras, flags and conditions conda does not know), then conda's rules."""
    from rattler import MatchSpec

    try:
        parsed = MatchSpec(spec, extras=False, conditionals=False, flags=False)
    except Exception as error:  # rattler raises its own exception types
        return _first_line(error)
    name = str(parsed.name.normalized) if parsed.name is not None else ""
    version = str(parsed.version) if parsed.version is not None else None
    return conda_grammar.spec_problem(spec, name, version, parsed.build)


def _whole_number(value: Any, field: str, highest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= highest:
        raise RecordError(f"{field} must be a whole number from 0 to {highest}, not {show(value)}")
    return value


def _text(value: Any, field: str) -> str:
    """Free text (licenses): newlines and tabs become spaces as conda-index does; other controls refused."""
    if not isinstance(value, str):
        raise RecordError(f"{field} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise RecordError(f"{field} is {len(value)} characters long, over the limit of {MAX_TEXT_LENGTH}")
    cleaned = " ".join(value.split()) if any(c in value for c in "\t\n\r\v\f") else value.strip()
    if _has_control_characters(cleaned):
        raise RecordError(f"{field} {show(value)} holds control characters")
    return cleaned


def _word(value: Any, field: str) -> str:
    text = _text(value, field)
    if text != value or not text:
        raise RecordError(
            f"{field} must be a non-empty string without surrounding or inner whitespace controls"
        )
    return text


def _noarch(value: Any, field: str) -> str | bool:
    """ "python" or "generic"; old conda-build wrote booleans, which both clients still read."""
    if isinstance(value, bool) or value in ("python", "generic"):
        return value
    raise RecordError(f'{field} must be "python" or "generic", not {show(value)}')


def _timestamp(value: Any, field: str) -> int:
    return _whole_number(value, field, MAX_TIMESTAMP)


def _features(value: Any, field: str) -> str | list[str]:
    """track_features: a space- or comma-separated string, or a list of names (clients read both)."""
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise RecordError(f"{field} has {len(value)} entries, over the limit of {MAX_LIST_ITEMS}")
        items = [_word(item, field) for item in value]
        if any(" " in item or "," in item for item in items):
            # conda joins the list with spaces and splits it again: "a b" would come back as two names
            raise RecordError(f"{field} names must not hold spaces or commas")
        return items
    return _text(value, field)


def _purls(value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        raise RecordError(f"{field} must be a list of package URLs, not {type(value).__name__}")
    if len(value) > MAX_LIST_ITEMS:
        raise RecordError(f"{field} has {len(value)} entries, over the limit of {MAX_LIST_ITEMS}")
    return [_word(item, field) for item in value]


def _platform(value: Any, field: str) -> str | None:
    """Kept when conda can read it (it parses `platform` as an enum); otherwise dropped, a legacy field
    no client needs (rattler-build and conda-build write "linux", "osx", "win")."""
    return value if isinstance(value, str) and conda_grammar.platform_known(value) else None


def _arch(value: Any, field: str) -> str | None:
    """Kept when it is a short word ("x86_64", "arm64"); otherwise dropped, a legacy field."""
    return value if isinstance(value, str) and _ARCH.fullmatch(value) else None


_OPTIONAL_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "constrains": _specs,
    "license": _text,
    "license_family": _text,
    "noarch": _noarch,
    "timestamp": _timestamp,
    "track_features": _features,
    "features": _text,
    "purls": _purls,
    "python_site_packages_path": _word,
    "arch": _arch,
    "platform": _platform,
}


def _confirm_with_rattler(parse: Callable[[str], Any], fields: Mapping[str, Any], what: str) -> None:
    """Parse the kept fields with rattler's own deserializer: what it refuses, its clients would too."""
    try:
        parse(json.dumps(fields, allow_nan=False))
    except Exception as error:  # rattler raises its own exception types
        raise RecordError(f"{what} is refused by rattler: {_first_line(error)}") from None


def _refused_by(parse: Callable[[str], Any], text: str) -> str | None:
    try:
        parse(text)
    except Exception as error:  # rattler raises its own exception types
        return _first_line(error)
    return None


def _has_control_characters(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return shorten(lines[0], 160) if lines and lines[0] else type(error).__name__
