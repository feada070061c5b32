from __future__ import annotations

import pytest

from reindexer.contract import join_key
from reindexer.layout import PackageFilename, package_extension, parse_package_filename


def test_parse_package_filename_keeps_dashes_in_the_name():
    parsed = parse_package_filename("python-dateutil-2.8.2-pyhd8ed1ab_0.conda")

    assert parsed == PackageFilename("python-dateutil", "2.8.2", "pyhd8ed1ab_0", ".conda")
    assert parsed.stem == "python-dateutil-2.8.2-pyhd8ed1ab_0"


def test_parse_package_filename_accepts_plus_in_the_version():
    parsed = parse_package_filename("sample-noarch-0000-1.6.6+local-h0000000_0.tar.bz2")

    assert parsed == PackageFilename("sample-noarch-0000", "1.6.6+local", "h0000000_0", ".tar.bz2")


def test_parse_package_filename_recognises_tar_bz2_as_one_extension():
    parsed = parse_package_filename("zlib-1.3-h0_0.tar.bz2")

    assert parsed is not None
    assert (parsed.name, parsed.version, parsed.build, parsed.extension) == (
        "zlib",
        "1.3",
        "h0_0",
        ".tar.bz2",
    )


@pytest.mark.parametrize(
    "filename",
    [
        "pkg-1.0.conda",  # only two parts
        "pkg.conda",  # one part
        "pkg-1.0-h0_0.zip",  # wrong extension
        "pkg-1.0-h0_0.tar.gz",
        "pkg-1.0-h0_0.bz2",
        "pkg-1.0-h0_0.conda.part",
        ".conda",
        ".tar.bz2",
        "-1.0-h0_0.conda",  # empty name
        "pkg--h0_0.conda",  # empty version
        "pkg-1.0-.conda",  # empty build
        "my pkg-1.0-h0_0.conda",  # whitespace
        "repodata.json",
    ],
)
def test_parse_package_filename_rejects_names_outside_the_grammar(filename):
    assert parse_package_filename(filename) is None


@pytest.mark.parametrize(
    ("filename", "extension"),
    [
        ("a-1-0.conda", ".conda"),
        ("a-1-0.tar.bz2", ".tar.bz2"),
        ("a-1-0.bz2", None),
        ("a.json", None),
        (".conda", None),
    ],
)
def test_package_extension_identifies_only_conda_archives(filename, extension):
    assert package_extension(filename) == extension


def test_join_key_skips_an_empty_channel_prefix():
    assert join_key("", "linux-64", "repodata.json") == "linux-64/repodata.json"


def test_join_key_keeps_a_nested_channel_prefix():
    assert join_key("org/dev", "noarch", "repodata.json") == "org/dev/noarch/repodata.json"


def test_join_key_strips_stray_slashes_from_segments():
    assert join_key("/org/dev/", "/noarch/", "shards/x.msgpack.zst") == "org/dev/noarch/shards/x.msgpack.zst"


def test_join_key_of_only_empty_parts_is_the_root():
    assert join_key("", "") == ""
    assert join_key("/") == ""
