"""A channel as its subdirs' states show it: channeldata.json (conda-index's format) and the page's builds.

channeldata.json, as conda-index's `ChannelIndex._update_channeldata` writes it from each subdir's patched
repodata.json and the packages' metadata: `{"channeldata_version": 1, "packages": {name: {...}}, "subdirs":
[...]}`, compact with sorted keys, and per package name:
- the candidates are, in each subdir, the newest build (by timestamp) of each version; a .tar.bz2 whose
  .conda twin is there is left out. They are ranked by version (conda's order, rattler's Version), then by
  timestamp in seconds (a timestamp over 253402300799 is milliseconds);
- `version` is the top candidate's; `description`, `dev_url`, `doc_url`, `home`, `license` and `summary`
  each come from the best-ranked candidate that has a non-empty value, the record's (patched) value before
  its about.json's (conda-index lets index.json and the repodata record override about.json). conda-index
  means the same ("keep newer value for these") but walks the candidates in subdir order, so a field the
  newest build lacks keeps whatever it met first, possibly an older version's; we take the best-ranked;
- `subdirs`: every subdir holding a build of the name; `run_exports`: by version, the non-empty run_exports
  of the newest build of that version, a later subdir (in name order) winning as in conda-index;
- `timestamp`: in seconds, the newest of the candidates'. (conda-index means the same, `max()` of this
  build's and the one kept so far, but reads the kept one from the wrong dictionary, so its file ends up
  with the timestamp of whichever version it processed last; we write the maximum it intends.)
- `reference_package`: `<subdir>/<file>` of the top candidate (a key of conda-index's CHANNELDATA_FIELDS
  that conda-build used to fill and conda-index no longer does).
Keys without a value are left out, as conda-index drops None. Not written: the fields we do not read from
packages (icons, source URLs, tags, keywords, and the prefix and link-script flags of paths.json and
info/recipe). Unlike conda-index, which only ever adds to the channeldata.json it finds, the document is
made from the subdirs as they are: a package deleted everywhere leaves it. Compared with conda-index 0.13's
output on the same packages in tests/integration/test_differential_conda_index.py; besides the above it
differs on versions equal but spelled differently (1.0 / 1.0.0: it keeps the build met first, we the newer)
and, through its timestamp slip, may take a field from an older build than the one it means to.

Every publication makes it again from every record of the channel, so records are decoded only where a
field is needed: name, version and build come from the file name (a record's are checked to equal them),
the timestamp from the record's text (our own compact, key-sorted JSON), and a record is parsed when its
fields are read (the best-ranked candidates, those declaring run_exports, the page's builds). Versions are
parsed once per distinct string.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .contract import CONDA_SUFFIX, TAR_BZ2_SUFFIX
from .patch_sources import views_of
from .records import AboutJson, Record, RecordJson, decode_about, decode_record
from .state import SubdirState

CHANNELDATA_VERSION = 1
# The fields a package's entry takes from its best-ranked candidate that has them (conda-index's names).
RANKED_FIELDS = ("description", "dev_url", "doc_url", "home", "license", "summary")
# conda-index's cut between seconds and milliseconds: 9999-12-31 in seconds.
_LAST_SECOND = 253402300799
# A record's top-level timestamp in its compact, key-sorted JSON text (string values escape their quotes,
# and no nested object of a record has such a key).
_TIMESTAMP = re.compile(r'[{,]"timestamp":(\d+)[,}]')
_RUN_EXPORTS = '"run_exports":'


class Build:
    """One published package file: its record as clients see it (patched) and its about.json fields. Name,
    version and timestamp are read at once; the record and about.json are parsed when first read."""

    __slots__ = (
        "_about",
        "_record",
        "about_text",
        "filename",
        "name",
        "subdir",
        "text",
        "timestamp",
        "version",
    )

    def __init__(self, subdir: str, filename: str, text: RecordJson, about_text: AboutJson = "") -> None:
        self.subdir = subdir
        self.filename = filename
        self.text = text
        self.about_text = about_text
        # A state's keys are package file names (checked when the package was read); its record's name,
        # version and build are checked to equal the file name's.
        stem = filename.removesuffix(CONDA_SUFFIX).removesuffix(TAR_BZ2_SUFFIX)
        self.name, self.version, _ = stem.rsplit("-", 2)
        found = _TIMESTAMP.search(text)
        # The record's timestamp as written (milliseconds or seconds); 0 for none.
        self.timestamp = int(found[1]) if found else 0
        self._record: Record | None = None
        self._about: dict[str, str] | None = None

    @property
    def record(self) -> Record:
        if self._record is None:
            self._record = decode_record(self.text)
        return self._record

    @property
    def about(self) -> dict[str, str]:
        if self._about is None:
            self._about = decode_about(self.about_text)
        return self._about

    @property
    def seconds(self) -> int:
        return timestamp_seconds(self.timestamp)

    @property
    def run_exports(self) -> Any:
        return self.record.get("run_exports") if _RUN_EXPORTS in self.text else None

    def value_of(self, name: str) -> Any:
        """The value conda-index would see: the record's (index.json, patched) before about.json's. The
        record is parsed only when its text holds the key."""
        if f'"{name}":' in self.text and name in self.record:
            return self.record[name]
        return self.about.get(name)


@dataclass(frozen=True)
class ChannelSnapshot:
    """Every published build of a channel, and its subdirs (sorted)."""

    subdirs: tuple[str, ...]
    builds: tuple[Build, ...]


def snapshot_of(states: Mapping[str, SubdirState]) -> ChannelSnapshot:
    """The builds each subdir publishes: its patched view (files patch instructions removed are left out),
    with each file's about.json fields from the state."""
    builds: list[Build] = []
    for subdir in sorted(states):
        state = states[subdir]
        for filename, text in sorted(views_of(state, subdir).patched.records.items()):
            package = state.packages.get(filename)
            builds.append(Build(subdir, filename, text, package.about if package is not None else ""))
    return ChannelSnapshot(tuple(sorted(states)), tuple(builds))


def timestamp_seconds(value: Any) -> int:
    """A record's timestamp in seconds (conda-index's _make_seconds); 0 for none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    seconds = int(value)
    return seconds // 1000 if seconds > _LAST_SECOND else seconds


@functools.lru_cache(maxsize=65536)
def version_key(version: str) -> Any:
    """conda's version order (rattler's implementation); records are checked, so every version parses."""
    from rattler import Version  # loaded where it is used, as record_schema does

    try:
        return Version(version)
    except Exception:  # rattler raises its own exception types; a checked record never gets here
        return Version("0")


def without_legacy_twins(builds: Iterable[Build]) -> list[Build]:
    """conda-index's rule: a subdir's .tar.bz2 is left out when the same build is there as .conda."""
    builds = list(builds)
    conda = {(build.subdir, build.filename) for build in builds if build.filename.endswith(CONDA_SUFFIX)}
    return [
        build
        for build in builds
        if not (
            build.filename.endswith(TAR_BZ2_SUFFIX)
            and (build.subdir, build.filename[: -len(TAR_BZ2_SUFFIX)] + CONDA_SUFFIX) in conda
        )
    ]


def processing_order(build: Build) -> tuple[str, bool, str]:
    """conda-index's: subdirs in name order, in each its repodata's "packages.conda", then "packages"."""
    return (build.subdir, not build.filename.endswith(CONDA_SUFFIX), build.filename)


def by_name(builds: Iterable[Build]) -> dict[str, list[Build]]:
    grouped: dict[str, list[Build]] = {}
    for build in builds:
        grouped.setdefault(build.name, []).append(build)
    return dict(sorted(grouped.items()))


def newest_per_version_and_subdir(builds: Iterable[Build]) -> list[Build]:
    """In each subdir, the newest build (by timestamp) of each version: the builds conda-index reads. Ties
    go to the first in conda-index's order: .conda files (by name), then .tar.bz2 files."""
    newest: dict[tuple[str, str], Build] = {}
    for build in sorted(builds, key=processing_order):
        key = (build.version, build.subdir)
        kept = newest.get(key)
        if kept is None or kept.timestamp < build.timestamp:
            newest[key] = build
    return list(newest.values())


def ranked(candidates: Iterable[Build]) -> list[Build]:
    """Newest version first, then newest timestamp (seconds); equal ones in subdir order, as conda-index
    keeps the first it processed."""
    in_subdir_order = sorted(candidates, key=processing_order)
    return sorted(in_subdir_order, key=lambda b: (version_key(b.version), b.seconds), reverse=True)


def package_entry(builds: list[Build]) -> dict[str, Any]:
    """One name's entry of channeldata.json's `packages` (see the module docstring)."""
    candidates = ranked(newest_per_version_and_subdir(builds))
    top = candidates[0]
    entry: dict[str, Any] = {"version": top.version}
    for name in RANKED_FIELDS:
        value = next((value for c in candidates if (value := c.value_of(name))), None)
        if value is not None:
            entry[name] = value
    run_exports: dict[str, Any] = {}
    for candidate in sorted(candidates, key=lambda b: b.subdir):
        if exports := candidate.run_exports:
            run_exports[candidate.version] = exports
    entry["run_exports"] = run_exports
    entry["subdirs"] = sorted({build.subdir for build in builds})
    entry["timestamp"] = max(candidate.seconds for candidate in candidates)
    entry["reference_package"] = f"{top.subdir}/{top.filename}"
    return entry


def build_channeldata(snapshot: ChannelSnapshot) -> dict[str, Any]:
    """channeldata.json's document for a channel."""
    return {
        "channeldata_version": CHANNELDATA_VERSION,
        "packages": {
            name: package_entry(builds)
            for name, builds in by_name(without_legacy_twins(snapshot.builds)).items()
        },
        "subdirs": sorted(snapshot.subdirs),
    }


def render_channeldata(document: Mapping[str, Any]) -> bytes:
    """conda-index's default serialisation (compact_json): sorted keys, no spaces, ASCII."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
