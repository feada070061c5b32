"""channeldata.json against conda-index's semantics (conda_index/index/__init__.py, ChannelIndex.
_update_channeldata and its tests in tests/test_index.py), on hand-made subdir states whose expected documents
are written out below from reading that code, field by field."""

from __future__ import annotations

import json
from typing import Any

from reindexer.channeldata import (
    CHANNELDATA_VERSION,
    build_channeldata,
    render_channeldata,
    snapshot_of,
    timestamp_seconds,
)
from reindexer.records import encode_about, encode_record, sort_record
from reindexer.state import IndexedPackage, SubdirState

MD5 = "0" * 32
SHA256 = "1" * 64


def record(filename: str, subdir: str, timestamp: int | None = None, **fields: Any) -> str:
    stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    name, version, build = stem.rsplit("-", 2)
    document: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": int(build.rsplit("_", 1)[-1]),
        "depends": [],
        "subdir": subdir,
        "md5": MD5,
        "sha256": SHA256,
        "size": 1000,
        **fields,
    }
    if timestamp is not None:
        document["timestamp"] = timestamp
    return encode_record(sort_record(document))


def state(
    subdir: str, packages: dict[str, tuple[dict[str, Any], dict[str, str]]], **patch: Any
) -> SubdirState:
    """A subdir's state: per file, (record fields, about.json fields)."""
    return SubdirState(
        packages={
            filename: IndexedPackage("etag", 1000, record(filename, subdir, **fields), encode_about(about))
            for filename, (fields, about) in packages.items()
        },
        **patch,
    )


# The fixture set. alpha has versions 1.0 and 2.0 in linux-64 (two builds of 2.0, the newer one also as a
# .tar.bz2 twin) and 2.0 in noarch; beta's newest build is removed by noarch's patch instructions.
LINUX = state(
    "linux-64",
    {
        "alpha-1.0-h1_0.conda": (
            {"timestamp": 1_700_000_000_000, "license": "MIT", "run_exports": {"weak": ["alpha >=1.0,<2"]}},
            {"summary": "Alpha one", "home": "https://alpha.example/1", "description": "Old."},
        ),
        "alpha-2.0-h2_0.conda": (
            {"timestamp": 1_700_000_100_000, "license": "MIT", "run_exports": {"weak": ["alpha >=2.0,<3"]}},
            {"summary": "Alpha two, an older build", "dev_url": "https://git.example/alpha"},
        ),
        "alpha-2.0-h2_1.conda": (
            {"timestamp": 1_700_000_200_000, "license": "Apache-2.0"},
            {"home": "https://alpha.example", "license": "about.json's, below the record's"},
        ),
        # The same build as a .tar.bz2: conda-index reads the .conda only, so its newer timestamp and its
        # summary never show.
        "alpha-2.0-h2_1.tar.bz2": (
            {"timestamp": 1_700_000_300_000, "license": "Apache-2.0"},
            {"summary": "the twin, never shown"},
        ),
    },
)
NOARCH = state(
    "noarch",
    {
        # A timestamp in seconds (old conda-build): compared as seconds.
        "alpha-2.0-pyh_0.tar.bz2": (
            {"timestamp": 1_700_000_150, "noarch": "python", "run_exports": {"strong": ["alpha-noarch"]}},
            {"summary": "Alpha noarch", "doc_url": "https://docs.alpha.example"},
        ),
        "beta-0.9-h0_0.conda": ({}, {"license": "GPL-3.0-only", "summary": "Beta"}),
        "beta-1.0-h0_0.conda": ({"timestamp": 1_700_000_500_000}, {"summary": "Beta, yanked"}),
    },
    patch_file=json.dumps({"patch_instructions_version": 1, "remove": ["beta-1.0-h0_0.conda"]}),
)

# Read from conda-index's _update_channeldata, per key (two differences, both noted where they show: the
# timestamp, and a field the newest build lacks):
EXPECTED = {
    "channeldata_version": 1,
    "packages": {
        "alpha": {
            # Candidates: per subdir, the newest build of each version: linux-64 1.0 (h1_0) and 2.0 (h2_1,
            # the newer of h2_0 and h2_1), noarch 2.0. Ranked: linux-64 2.0 (1700000200 s), noarch 2.0
            # (1700000150 s), linux-64 1.0.
            "version": "2.0",
            "license": "Apache-2.0",  # the record's, over about.json's
            "home": "https://alpha.example",  # the top candidate has one
            # The top candidate has none: the best-ranked candidate's that has one. (conda-index's loop would
            # keep 1.0's "Alpha one": it processes linux-64's 1.0 first, and noarch's 2.0 is not newer than
            # linux-64's 2.0, which has none, so it may not replace it. Its order decides; ours is the rank.)
            "summary": "Alpha noarch",
            "doc_url": "https://docs.alpha.example",
            "description": "Old.",  # only 1.0 has one
            # no dev_url: only h2_0 has one, and h2_0 is not the newest build of 2.0 in linux-64
            "run_exports": {
                "1.0": {"weak": ["alpha >=1.0,<2"]},
                # linux-64's newest 2.0 (h2_1) declares none; noarch's does (a later subdir wins anyway)
                "2.0": {"strong": ["alpha-noarch"]},
            },
            "subdirs": ["linux-64", "noarch"],
            "timestamp": 1_700_000_200,  # seconds, the newest candidate's
            "reference_package": "linux-64/alpha-2.0-h2_1.conda",
        },
        "beta": {
            "version": "0.9",  # 1.0 is removed by the patch instructions: not in repodata.json
            "license": "GPL-3.0-only",  # the record has none: about.json's
            "summary": "Beta",
            "run_exports": {},
            "subdirs": ["noarch"],
            "timestamp": 0,
            "reference_package": "noarch/beta-0.9-h0_0.conda",
        },
    },
    "subdirs": ["linux-64", "noarch"],
}


def test_channeldata_of_the_fixture_set_is_what_conda_index_computes():
    document = build_channeldata(snapshot_of({"linux-64": LINUX, "noarch": NOARCH}))

    assert document == EXPECTED


def test_channeldata_is_written_as_conda_index_writes_it_by_default():
    # compact_json=True: json.dumps(sort_keys=True, separators=(",", ":")), ASCII.
    snapshot = snapshot_of({"linux-64": LINUX, "noarch": NOARCH})
    data = render_channeldata(build_channeldata(snapshot))

    assert data == json.dumps(EXPECTED, sort_keys=True, separators=(",", ":")).encode()
    assert data.isascii()


def test_conda_index_s_own_noarch_and_osx_64_case():
    """tests/test_index.py::test_index_noarch_osx64_1: conda-index-pkg-a 1.0 in osx-64 and noarch; the noarch
    build (the newer one) gives the summary. The one difference is deliberate: conda-index means the newest
    timestamp (max() of this build's and the kept one's) but reads the kept one from the wrong dictionary, so
    its file holds the last-processed subdir's (osx-64: 1508520039); we write the newest, 1508520204."""
    about = {
        "description": "Description field for conda-index-pkg-a.",
        "dev_url": "https://github.com/kalefranz/conda-test-packages/blob/master/conda-index-pkg-a/meta.yaml",
        "doc_url": "https://github.com/kalefranz/conda-test-packages/blob/master/conda-index-pkg-a",
        "home": "https://anaconda.org/conda-test/conda-index-pkg-a",
        "license": "BSD",
    }
    osx = state(
        "osx-64",
        {
            "conda-index-pkg-a-1.0-py27h5e241af_0.tar.bz2": (
                {"timestamp": 1508520039632, "license": "BSD", "depends": ["python >=2.7,<2.8.0a0"]},
                {**about, "summary": "Summary field for conda-index-pkg-a"},
            )
        },
    )
    noarch = state(
        "noarch",
        {
            "conda-index-pkg-a-1.0-pyhed9eced_1.tar.bz2": (
                {"timestamp": 1508520204768, "license": "BSD", "noarch": "python", "depends": ["python"]},
                {
                    **about,
                    "summary": "Summary field for conda-index-pkg-a. This is the python noarch version.",
                },
            )
        },
    )

    document = build_channeldata(snapshot_of({"osx-64": osx, "noarch": noarch}))

    assert document == {
        "channeldata_version": 1,
        "packages": {
            "conda-index-pkg-a": {
                **about,
                "summary": "Summary field for conda-index-pkg-a. This is the python noarch version.",
                "version": "1.0",
                "run_exports": {},
                "subdirs": ["noarch", "osx-64"],
                "timestamp": 1508520204,  # conda-index's test: 1508520039 (see the docstring)
                "reference_package": "noarch/conda-index-pkg-a-1.0-pyhed9eced_1.tar.bz2",
                # conda-index also writes the link-script and prefix flags of paths.json / info/recipe,
                # which we do not read: activate.d, deactivate.d, post_link, pre_link, pre_unlink,
                # binary_prefix, text_prefix; and source_git_url, doc_source_url from info/recipe.
            }
        },
        "subdirs": ["noarch", "osx-64"],
    }


def test_every_version_s_run_exports_are_kept():
    """tests/test_index.py::test_channeldata_picks_up_all_versions_of_run_exports."""
    subdir = state(
        "noarch",
        {
            "run_exports_versions-1.0-0.tar.bz2": ({"timestamp": 1, "run_exports": {"weak": ["a"]}}, {}),
            "run_exports_versions-2.0-0.tar.bz2": ({"timestamp": 2, "run_exports": {"weak": ["b"]}}, {}),
        },
    )

    entry = build_channeldata(snapshot_of({"noarch": subdir}))["packages"]["run_exports_versions"]

    assert entry["run_exports"] == {"1.0": {"weak": ["a"]}, "2.0": {"weak": ["b"]}}


def test_versions_are_ranked_in_conda_s_order_not_as_text():
    subdir = state(
        "noarch",
        {"p-1.9-0.conda": ({"timestamp": 5}, {}), "p-1.10-0.conda": ({"timestamp": 1}, {})},
    )

    assert build_channeldata(snapshot_of({"noarch": subdir}))["packages"]["p"]["version"] == "1.10"


def test_an_empty_channel_and_one_whose_packages_are_all_removed_have_no_packages():
    removed = state(
        "noarch",
        {"p-1.0-0.conda": ({}, {})},
        patch_file=json.dumps({"patch_instructions_version": 1, "remove": ["p-1.0-0.conda"]}),
    )

    assert build_channeldata(snapshot_of({"noarch": SubdirState()})) == {
        "channeldata_version": CHANNELDATA_VERSION,
        "packages": {},
        "subdirs": ["noarch"],
    }
    assert build_channeldata(snapshot_of({"noarch": removed}))["packages"] == {}


def test_timestamps_are_seconds_as_conda_index_makes_them():
    assert timestamp_seconds(1508520039632) == 1508520039
    assert timestamp_seconds(1508520039) == 1508520039
    assert timestamp_seconds(253402300799) == 253402300799  # the last second of 9999: still seconds
    assert timestamp_seconds(253402300800) == 253402300
    assert timestamp_seconds(None) == 0 and timestamp_seconds(True) == 0
