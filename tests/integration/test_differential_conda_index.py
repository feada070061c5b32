"""Differential test: channeldata.json and every subdir's run_exports.json, as `reindexer index` writes them,
against conda-index's own output (conda-index 0.13.0, the reference writer of both formats) on the same
packages.

One generated channel (rattler-build's sample packages and packages of its own with about.json fields, and
hand-made archives with info/run_exports.json) is copied twice: our CLI indexes one copy, conda-index's
Python API (tests/support/conda_index_runner.py, in a subprocess that alone sees the conda stand-in
tests/support/conda_shim) the other. run_exports.json must be equal as JSON; channeldata.json too, once the
differences our code documents as deliberate, and conda-index's own slips, are normalised: each says why
below, and where conda-index takes a field from another build than we do, each case is written out with both
values.

The set covers: the subdirs noarch, linux-64 and osx-arm64; several versions and builds of one name, a
.tar.bz2 whose .conda twin is there; both archive formats; packages with and without info/about.json
(summary, home, license, description, dev_url, doc_url, a list of URLs); run_exports of all five kinds and
none; a name whose newest version is in one subdir only; versions that sort differently as strings;
timestamps in milliseconds, in seconds and absent; a subdir's patch_instructions.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rattler_build import ArchiveType, assemble_package

from devtools.sample_channel import build_packages, package_files, plan_channel
from reindexer_cli.cli import main
from tests.support.archives import index_json, package_bytes

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "tests" / "support" / "conda_shim"
RUNNER = "tests.support.conda_index_runner"
RUNNER_TIMEOUT = 120
SUBDIRS = ("linux-64", "noarch", "osx-arm64")
# The conda modules conda-index may load through the shim, and no others (write_current_repodata=False).
SHIM_MODULES = {"conda", "conda.base", "conda.base.constants", "conda.models", "conda.models.version"}

HOUR_MS = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01, milliseconds as conda-build and rattler-build write it
LAST_SECOND = 253402300799  # conda-index's cut between seconds and milliseconds (9999-12-31)

# Keys conda-index derives from what we do not read from packages: paths.json's prefix and link-script
# flags (which it writes as false for every package that has none), icons, recipe sources, tags and the like.
# reindexer/channeldata.py's docstring: "Not written: the fields we do not read from packages (icons, source
# URLs, tags, keywords, and the prefix and link-script flags of paths.json and info/recipe)".
NOT_READ_BY_US = (
    "activate.d",
    "binary_prefix",
    "deactivate.d",
    "post_link",
    "pre_link",
    "pre_unlink",
    "text_prefix",
    "doc_source_url",
    "icon_hash",
    "icon_url",
    "identifiers",
    "keywords",
    "recipe_origin",
    "source_git_url",
    "source_url",
    "tags",
)
# about.json fields rattler writes as one URL or a list of them; we keep the first (record_schema.py's
# ABOUT_URL_FIELDS, README: each kept field is "one line of printable text"), conda-index copies the list.
URL_FIELDS = ("home", "dev_url", "doc_url")
# README: "the description is cut to 400".
DESCRIPTION_KEPT = 400
# Where conda-index takes a field from another build than we do, each case of the set written out: (package,
# field): (conda-index's value, ours). Nothing else about a field's source is normalised.
RANKED_FIELD_DEPARTURES = {
    # Documented (reindexer/channeldata.py's docstring): conda-index walks the candidates in subdir order and
    # keeps a field the newest build lacks from whatever it met first, possibly an older version's; we take
    # the best-ranked candidate's. walk 3.0 (linux-64) has no summary; conda-index meets osx-arm64's 1.0
    # before 2.0 and keeps 1.0's.
    ("walk", "summary"): ("walk, as of 1.0", "walk, as of 2.0"),
    # conda-index's timestamp slip (below, in normalised_theirs) also decides which build is "newer": it
    # stores the timestamp of the build it processed last, then compares the next build of the same version
    # against that. widget 1.2 is in linux-64 (02:00) and noarch (01:00); after linux-64 it processes noarch's
    # 1.0 (00:00), stores 00:00, so noarch's 1.2 looks newer than linux-64's and gives its summary (it has no
    # description, so linux-64's stays). We rank by the real timestamps: linux-64's 1.2 is the newest build.
    ("widget", "summary"): ("Widgets, improved", "Widgets, improved (native)"),
}


def made(
    subdir: str,
    name: str,
    version: str,
    build: str,
    extension: str,
    *,
    about: dict[str, Any] | None = None,
    run_exports: dict[str, list[str]] | None = None,
    drop: Iterable[str] = (),
    **index: Any,
) -> tuple[str, bytes]:
    """A hand-made package: its key in the channel and its bytes."""
    document = index_json(name, version, build, subdir=subdir, **index)
    if subdir == "noarch":
        document["noarch"] = "generic"
    for key in drop:
        document.pop(key)
    members: dict[str, bytes] = {}
    if about is not None:
        members["info/about.json"] = json.dumps(about, indent=2).encode()
    if run_exports is not None:
        members["info/run_exports.json"] = json.dumps(run_exports).encode()
    filename = f"{name}-{version}-{build}{extension}"
    return f"{subdir}/{filename}", package_bytes(filename, document, members)


FOO_ABOUT = {
    "summary": "The foo library",
    "home": "https://foo.example/",
    "license": "Apache-2.0",
    "description": "Foo does foo things.\nIt has been doing so since 1.0.",
    "dev_url": "https://git.example/foo",
    "doc_url": "https://foo.example/docs/",
    "channels": ["https://conda.example/main"],  # an about.json field channeldata does not take
}


# Paragraphs, as descriptions are written, and longer than the 400 characters we keep.
LONG_DESCRIPTION = (
    "Foo 2.1 is the fast foo.\n\n"
    + "It foos quickly, and it foos well. " * 12
    + "\n\n  Indented, the last paragraph.\n"
)


def hand_made() -> dict[str, bytes]:
    packages = [
        # libfoo: versions 1.0 (two builds), 2.0 (in two subdirs, with a .tar.bz2 twin in linux-64) and 2.1,
        # the newest, in osx-arm64 only.
        made(
            "linux-64",
            "libfoo",
            "1.0",
            "h0_0",
            ".tar.bz2",
            about={"summary": "Foo, first build", "home": "https://foo.example/old/"},
            run_exports={"weak": ["libfoo >=1.0,<1.1.0a0"]},
            timestamp=T0 + HOUR_MS,
        ),
        made(
            "linux-64",
            "libfoo",
            "1.0",
            "h1_1",
            ".conda",
            about={"summary": "Foo, rebuilt", "home": "https://foo.example/"},
            run_exports={"weak": ["libfoo >=1.0,<2.0a0"], "strong_constrains": ["libfoo-data >=1.0"]},
            build_number=1,
            timestamp=T0 + 2 * HOUR_MS,
        ),
        # No license in index.json: about.json's is the build's.
        made(
            "linux-64",
            "libfoo",
            "2.0",
            "h0_0",
            ".conda",
            about=FOO_ABOUT,
            run_exports={"weak": ["libfoo >=2.0,<3.0a0"], "weak_constrains": ["libfoo-data >=2.0"]},
            drop=("license",),
            timestamp=T0 + 3 * HOUR_MS,
        ),
        # The twin: left out of channeldata.json (both tools), listed in run_exports.json.
        made(
            "linux-64",
            "libfoo",
            "2.0",
            "h0_0",
            ".tar.bz2",
            about={**FOO_ABOUT, "summary": "the .tar.bz2 twin, never shown"},
            run_exports={"weak": ["libfoo >=2.0,<3.0a0"], "weak_constrains": ["libfoo-data >=2.0"]},
            drop=("license",),
            timestamp=T0 + 3 * HOUR_MS,
        ),
        # Same version and timestamp as linux-64's: linux-64 (processed first) gives the fields; osx-arm64 (a
        # later subdir) gives 2.0's run_exports.
        made(
            "osx-arm64",
            "libfoo",
            "2.0",
            "h0_0",
            ".conda",
            about={"summary": "Foo for macOS, same rank as linux-64's"},
            run_exports={"weak": ["libfoo >=2.0,<3.0a0"], "strong": ["libfoo-rt >=2.0"]},
            timestamp=T0 + 3 * HOUR_MS,
        ),
        made(
            "osx-arm64",
            "libfoo",
            "2.1",
            "h0_0",
            ".conda",
            about={
                "summary": "Foo 2.1",
                "home": "https://foo.example/",
                "description": LONG_DESCRIPTION,
                "license": "Apache-2.0",
            },
            run_exports={"weak": ["libfoo >=2.1,<3.0a0"], "noarch": ["libfoo-abi"]},
            drop=("license",),  # about.json's license is the name's
            timestamp=T0 + 4 * HOUR_MS,
        ),
        # Every run_exports kind, no about.json.
        made(
            "linux-64",
            "libbaz",
            "0.5",
            "h0_0",
            ".tar.bz2",
            run_exports={
                "weak": ["libbaz >=0.5,<0.6.0a0"],
                "strong": ["libbaz-rt >=0.5"],
                "noarch": ["libbaz-abi 0.5"],
                "weak_constrains": ["libbaz-extra >=0.5"],
                "strong_constrains": ["libbaz-legacy <0"],
            },
            timestamp=T0 + 5 * HOUR_MS,
        ),
        # libbar: the newest timestamp is not in the subdir conda-index processes last.
        made("linux-64", "libbar", "1.0", "h0_1", ".conda", build_number=1, timestamp=T0 + 10 * HOUR_MS),
        made("osx-arm64", "libbar", "0.9", "h0_0", ".conda", timestamp=T0 + HOUR_MS),
        # tool (noarch only): 1.0 has no about.json and a timestamp in seconds; 1.1 lists its URLs.
        made("noarch", "tool", "1.0", "pyh0_0", ".conda", timestamp=1_704_070_800),
        made(
            "noarch",
            "tool",
            "1.1",
            "pyh0_0",
            ".tar.bz2",
            about={
                "summary": "A command line tool",
                "license": "about.json's, below index.json's MIT",
                "home": ["https://tool.example/", "https://tool-mirror.example/"],
                "doc_url": ["https://tool.example/docs/"],
            },
            timestamp=T0 + 6 * HOUR_MS,
        ),
        # oldmeta: its newest version has no about.json; the older one's fields are the name's.
        made(
            "noarch",
            "oldmeta",
            "1.0",
            "h0_0",
            ".conda",
            about={"summary": "Described in 1.0 only", "dev_url": "https://git.example/oldmeta"},
            timestamp=T0 + HOUR_MS,
        ),
        made("noarch", "oldmeta", "2.0", "h0_0", ".conda", timestamp=T0 + 2 * HOUR_MS),
        # nometa: no about.json, no run_exports, no timestamp.
        made("linux-64", "nometa", "1.0", "h0_0", ".conda", drop=("timestamp",)),
        # libqux: versions that sort differently as strings (1.10 is the newest, 1.10rc1 before it).
        made("linux-64", "libqux", "1.9", "h0_0", ".conda", timestamp=T0 + 3 * HOUR_MS),
        made("linux-64", "libqux", "1.10", "h0_0", ".conda", timestamp=T0 + 2 * HOUR_MS),
        made("linux-64", "libqux", "1.10rc1", "h0_0", ".conda", timestamp=T0 + HOUR_MS),
        # gone: removed by linux-64's patch_instructions.json (PATCH), so not in channeldata.json; still in
        # run_exports.json, which is never patched.
        made("linux-64", "gone", "1.0", "h0_0", ".conda", run_exports={"weak": ["gone"]}, timestamp=T0),
        # walk: see RANKED_FIELD_DEPARTURES.
        made("linux-64", "walk", "3.0", "h0_0", ".conda", timestamp=T0 + 3 * HOUR_MS),
        made(
            "osx-arm64",
            "walk",
            "1.0",
            "h0_0",
            ".conda",
            about={"summary": "walk, as of 1.0"},
            timestamp=T0 + HOUR_MS,
        ),
        made(
            "osx-arm64",
            "walk",
            "2.0",
            "h0_0",
            ".conda",
            about={"summary": "walk, as of 2.0"},
            timestamp=T0 + 2 * HOUR_MS,
        ),
    ]
    return dict(packages)


def rattler_built(folder: Path, scratch: Path) -> None:
    """widget, built by rattler-build with its about.json fields: 1.0 (noarch, .conda) and 1.2 (noarch's a
    .tar.bz2, linux-64's a .conda and newer)."""
    builds = (
        ("noarch", "1.0", ArchiveType.Conda, "Widgets for everyone", "Makes widgets.\nMany of them."),
        ("noarch", "1.2", ArchiveType.TarBz2, "Widgets, improved", None),
        ("linux-64", "1.2", ArchiveType.Conda, "Widgets, improved (native)", "Native widgets."),
    )
    for number, (subdir, version, archive, summary, description) in enumerate(builds):
        files = scratch / f"widget-{number}"
        (files / "share" / "widget").mkdir(parents=True)
        (files / "share" / "widget" / "README").write_text(f"widget {version}\n")
        assemble_package(
            name="widget",
            version=version,
            target_platform=subdir,
            build_string="h0_0",
            output_dir=str(folder / subdir),
            files_dir=str(files),
            homepage="https://widget.example/",
            license="BSD-3-Clause",
            summary=summary,
            description=description,
            noarch="generic" if subdir == "noarch" else None,
            archive_type=archive,
            timestamp=datetime(2024, 2, 1, number, tzinfo=UTC),
            compression_threads=1,
            detect_prefix=False,
        )


# linux-64's patch instructions (conda's format; both tools apply a subdir's file and build channeldata.json
# from the patched repodata): a license changed, one given through its .tar.bz2 name to the .conda, a file
# removed.
PATCH = {
    "patch_instructions_version": 1,
    "packages": {
        "libbaz-0.5-h0_0.tar.bz2": {"license": "BSD-2-Clause"},
        "libqux-1.10-h0_0.tar.bz2": {"license": "LicenseRef-Patched"},
    },
    "packages.conda": {},
    "remove": ["gone-1.0-h0_0.conda"],
    "revoke": [],
}


def make_channel(folder: Path, scratch: Path) -> None:
    build_packages(plan_channel(6, subdirs=SUBDIRS), folder)
    rattler_built(folder, scratch)
    for key, data in hand_made().items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    (folder / "linux-64" / "patch_instructions.json").write_text(json.dumps(PATCH))


def run_conda_index(channel: Path) -> None:
    """conda-index on `channel`, in a subprocess that alone has the conda shim on its path."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(SHIM),
        # _update_channeldata iterates a set of .tar.bz2 names, in an order that follows the hash seed. This
        # set's output is the same under other seeds (checked once); a fixed one keeps the run repeatable.
        "PYTHONHASHSEED": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", RUNNER, str(channel)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUNNER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])["conda_modules"]
    assert set(loaded) <= SHIM_MODULES, loaded
    assert all(Path(path).is_relative_to(SHIM) for path in loaded.values()), loaded


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def seconds(timestamp: Any) -> int:
    value = int(timestamp or 0)
    return value // 1000 if value > LAST_SECOND else value


def intended_timestamps(channel: Path) -> dict[str, int]:
    """By name, the newest timestamp (seconds) of the records conda-index read for channeldata.json (its
    repodata.json, .tar.bz2 twins of a .conda left out): the `max()` _update_channeldata means to keep."""
    newest: dict[str, int] = {}
    for subdir in SUBDIRS:
        repodata = read_json(channel / subdir / "repodata.json")
        conda = repodata["packages.conda"]
        legacy = {
            filename: record
            for filename, record in repodata["packages"].items()
            if filename.removesuffix(".tar.bz2") + ".conda" not in conda
        }
        for record in (*conda.values(), *legacy.values()):
            name = record["name"]
            newest[name] = max(newest.get(name, 0), seconds(record.get("timestamp", 0)))
    return newest


def normalised_theirs(document: dict[str, Any], channel: Path) -> dict[str, Any]:
    """conda-index's channeldata.json with its documented differences from ours taken out (see above)."""
    timestamps = intended_timestamps(channel)
    packages: dict[str, Any] = {}
    for name, original in document["packages"].items():
        entry = {key: value for key, value in original.items() if key not in NOT_READ_BY_US}
        for field in URL_FIELDS:
            if isinstance(entry.get(field), list):
                entry[field] = entry[field][0]
        # conda-index strips a summary and a description and turns each line break into a space; we keep
        # one line with every whitespace run made one space (record_schema.checked_about) and cut the
        # description to DESCRIPTION_KEPT characters, the last one "…".
        for field in ("summary", "description"):
            if isinstance(entry.get(field), str):
                text = " ".join(entry[field].split())
                if field == "description" and len(text) > DESCRIPTION_KEPT:
                    text = text[: DESCRIPTION_KEPT - 1] + "…"
                entry[field] = text
        # _update_channeldata means `max()` of this build's timestamp and the one kept so far, but reads the
        # kept one from the wrong dictionary (channel_data, not package_data), so its file holds the timestamp
        # of the version it processed last; channeldata.py's docstring: "we write the maximum it intends".
        entry["timestamp"] = timestamps[name]
        for (package, field), (theirs, ours) in RANKED_FIELD_DEPARTURES.items():
            if package == name:
                assert entry.get(field) == theirs, (name, field, entry.get(field))
                entry[field] = ours
        packages[name] = entry
    return {**document, "packages": packages}


def normalised_ours(document: dict[str, Any], channel: Path) -> dict[str, Any]:
    """Ours without `reference_package`, which conda-index does not fill (a CHANNELDATA_FIELDS key that
    conda-build used to fill); checked here to name the top candidate's file instead."""
    packages: dict[str, Any] = {}
    for name, original in document["packages"].items():
        entry = dict(original)
        reference = entry.pop("reference_package")
        subdir, filename = reference.split("/")
        assert (channel / subdir / filename).is_file(), reference
        assert filename.startswith(f"{name}-{entry['version']}-"), (name, reference)
        assert subdir in entry["subdirs"], (name, reference)
        packages[name] = entry
    return {**document, "packages": packages}


def differing(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Per package name and key, (ours, theirs) where they differ."""
    missing = "<absent>"
    found: dict[str, Any] = {}
    for name in sorted(set(ours) | set(theirs)):
        mine, reference = ours.get(name, {}), theirs.get(name, {})
        keys = sorted(set(mine) | set(reference))
        delta = {
            key: (mine.get(key, missing), reference.get(key, missing))
            for key in keys
            if mine.get(key, missing) != reference.get(key, missing)
        }
        if delta:
            found[name] = delta
    return found


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(ours, theirs): the same channel indexed by `reindexer index` and by conda-index."""
    if importlib.util.find_spec("conda_index") is None:
        pytest.skip("conda-index is not installed (pip install conda-index==0.13.0; it is in the dev extra)")
    base = tmp_path_factory.mktemp("conda-index-diff")
    source = base / "source"
    make_channel(source, base / "scratch")
    ours, theirs = base / "ours" / "channel", base / "theirs" / "channel"
    shutil.copytree(source, ours)
    shutil.copytree(source, theirs)
    # Our CLI, as an operator runs it on a folder.
    assert main(["index", str(ours), "--jobs", "1"]) == 0
    run_conda_index(theirs)
    return ours, theirs


def test_the_conda_shim_is_invisible_to_the_test_process() -> None:
    spec = importlib.util.find_spec("conda")
    assert spec is None or not Path(str(spec.origin)).is_relative_to(SHIM)


def test_every_package_was_indexed_by_both(indexed: tuple[Path, Path]) -> None:
    ours, theirs = indexed
    files = {f"{path.parent.name}/{path.name}" for path in package_files(ours)}
    assert len(files) == 6 + 3 + len(hand_made())
    for channel in (ours, theirs):
        listed = set()
        for subdir in SUBDIRS:
            repodata = read_json(channel / subdir / "repodata.json")
            listed |= {f"{subdir}/{name}" for name in (*repodata["packages"], *repodata["packages.conda"])}
        assert listed == files - {"linux-64/gone-1.0-h0_0.conda"}, channel
        assert read_json(channel / "linux-64" / "repodata.json")["removed"] == PATCH["remove"]


def test_run_exports_json_matches_conda_index(indexed: tuple[Path, Path]) -> None:
    ours, theirs = indexed
    kinds = set()
    for subdir in SUBDIRS:
        reference = read_json(theirs / subdir / "run_exports.json")
        candidate = read_json(ours / subdir / "run_exports.json")
        assert candidate == reference, subdir
        for section in ("packages", "packages.conda"):
            for entry in reference[section].values():
                kinds |= set(entry["run_exports"])
    # The set exercised every kind, in both sections.
    assert kinds == {"weak", "strong", "noarch", "weak_constrains", "strong_constrains"}
    linux = read_json(theirs / "linux-64" / "run_exports.json")
    assert linux["packages"]["libbaz-0.5-h0_0.tar.bz2"]["run_exports"]
    assert linux["packages.conda"]["nometa-1.0-h0_0.conda"] == {"run_exports": {}}
    assert linux["packages.conda"]["gone-1.0-h0_0.conda"] == {"run_exports": {"weak": ["gone"]}}


def test_channeldata_json_matches_conda_index(indexed: tuple[Path, Path]) -> None:
    ours, theirs = indexed
    reference = read_json(theirs / "channeldata.json")
    candidate = read_json(ours / "channeldata.json")

    # The reference holds what the set is meant to exercise (so a quietly weaker set fails here).
    assert reference["channeldata_version"] == 1
    assert reference["subdirs"] == list(SUBDIRS)
    foo = reference["packages"]["libfoo"]
    assert foo["version"] == "2.1" and foo["subdirs"] == ["linux-64", "osx-arm64"]
    assert sorted(foo["run_exports"]) == ["1.0", "2.0", "2.1"]
    assert foo["run_exports"]["2.0"] == {"weak": ["libfoo >=2.0,<3.0a0"], "strong": ["libfoo-rt >=2.0"]}
    assert {"summary", "home", "license", "description", "dev_url", "doc_url"} <= set(foo)
    assert foo["summary"] == "Foo 2.1" and foo["license"] == "Apache-2.0"
    assert foo["dev_url"] == FOO_ABOUT["dev_url"]  # from 2.0: 2.1 has none
    assert reference["packages"]["tool"]["license"] == "MIT"  # index.json's before about.json's
    assert reference["packages"]["tool"]["home"] == ["https://tool.example/", "https://tool-mirror.example/"]
    assert reference["packages"]["oldmeta"]["summary"] == "Described in 1.0 only"
    assert "summary" not in reference["packages"]["nometa"]
    assert reference["packages"]["widget"]["description"] == "Native widgets."
    assert len(foo["description"]) > DESCRIPTION_KEPT and "\n" not in foo["description"]
    # Versions in conda's order, and the patched repodata: a license changed (through the .tar.bz2 name, for
    # libqux's .conda), a file removed.
    assert reference["packages"]["libqux"]["version"] == "1.10"
    assert reference["packages"]["libqux"]["license"] == "LicenseRef-Patched"
    assert reference["packages"]["libbaz"]["license"] == "BSD-2-Clause"
    assert "gone" not in reference["packages"]
    assert len(reference["packages"]) == len(candidate["packages"]) >= 9
    # conda-index's own timestamp quirk shows on libbar (osx-arm64's older build was processed last).
    assert reference["packages"]["libbar"]["timestamp"] == seconds(T0 + 1 * HOUR_MS)

    mine = normalised_ours(candidate, ours)
    theirs_normalised = normalised_theirs(reference, theirs)
    delta = differing(mine["packages"], theirs_normalised["packages"])
    assert not delta, "(ours, conda-index's) by package and key:\n" + json.dumps(delta, indent=1)
    assert mine == theirs_normalised
    assert mine["packages"]["libbar"]["timestamp"] == seconds(T0 + 10 * HOUR_MS)
