"""Records: index.json checked against the file name and folder, with types clients rely on."""

from __future__ import annotations

import re
from typing import Any

import pytest

from reindexer.layout import parse_package_filename
from reindexer.package_reader import ArchiveDigests, BadPackageError, PackageMetadata
from reindexer.records import Record, build_record, sort_record
from tests.support.archives import index_json, package_bytes
from tests.support.checks import record_from_bytes

DIGESTS = ArchiveDigests(md5="0" * 32, sha256="1" * 64, size=123)


def build(index: dict[str, Any], filename: str = "pkg-1.0-h0_0.conda", subdir: str = "linux-64") -> Record:
    parsed = parse_package_filename(filename)
    assert parsed is not None
    return build_record(parsed, subdir, PackageMetadata(index=index, run_exports=None), DIGESTS)


def assert_bad(index: dict[str, Any], match: str, **kwargs: Any) -> None:
    with pytest.raises(BadPackageError, match=re.escape(match)) as error:
        build(index, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "other"}, "other-1.0-h0_0"),
        ({"version": "2.0"}, "pkg-2.0-h0_0"),
        ({"build": "h1_0"}, "pkg-1.0-h1_0"),
    ],
)
def test_file_name_disagreeing_with_index_json_is_refused(fields, says):
    assert_bad(index_json(**fields), f"file name says pkg-1.0-h0_0 but info/index.json says {says}")


@pytest.mark.parametrize("filename", ["pkg-1.0-h0_0.conda", "pkg-1.0-h0_0.tar.bz2"])
def test_file_name_disagreeing_with_index_json_is_refused_from_a_real_archive(filename):
    data = package_bytes(filename, index_json(name="impostor"))

    with pytest.raises(
        BadPackageError, match=re.escape("file name says pkg-1.0-h0_0 but info/index.json says impostor")
    ):
        record_from_bytes(filename, data, "linux-64")


def test_index_json_subdir_disagreeing_with_the_folder_is_refused():
    assert_bad(
        index_json(subdir="linux-64"),
        "info/index.json says subdir 'linux-64' but the file is in 'osx-64'",
        subdir="osx-64",
    )


def test_missing_index_json_subdir_takes_the_folder():
    assert build(index_json(), subdir="osx-arm64")["subdir"] == "osx-arm64"


@pytest.mark.parametrize("field", ["name", "version", "build"])
@pytest.mark.parametrize("value", [None, "", 3])
def test_missing_or_non_string_identity_is_refused(field, value):
    index = index_json()
    if value is None:
        del index[field]
    else:
        index[field] = value

    assert_bad(index, f"no valid '{field}'")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"build_number": "1"}, "build_number must be a whole number"),
        ({"build_number": -1}, "build_number must be a whole number"),
        ({"build_number": True}, "build_number must be a whole number"),
        ({"build_number": 1.5}, "build_number must be a whole number"),
        ({"depends": "python >=3"}, "depends must be a list of match specs"),
        ({"depends": [1]}, "depends holds 1, not a match spec"),
        ({"depends": None}, "depends must be a list of match specs"),
        ({"constrains": {"a": 1}}, "constrains must be a list of match specs"),
        ({"timestamp": "2024-01-01"}, "timestamp must be a whole number"),
        ({"timestamp": -5}, "timestamp must be a whole number"),
        ({"noarch": 1}, 'noarch must be "python" or "generic"'),
        ({"track_features": 1}, "track_features must be a string"),
        ({"features": [1]}, "features must be a string"),
        ({"license": 5}, "license must be a string"),
        ({"license_family": ["MIT"]}, "license_family must be a string"),
    ],
)
def test_wrong_field_types_are_refused(fields, match):
    assert_bad(index_json(**fields), match)


@pytest.mark.parametrize("filename", ["pkg-1.0-h0_0.conda", "pkg-1.0-h0_0.tar.bz2"])
def test_wrong_field_types_are_refused_from_a_real_archive(filename):
    data = package_bytes(filename, index_json(build_number="0"))

    with pytest.raises(BadPackageError, match="build_number"):
        record_from_bytes(filename, data, "linux-64")


def test_accepted_optional_fields_of_real_packages():
    record = build(
        index_json(
            noarch="python",
            track_features="feature_a",
            features="mkl",
            constrains=["other <2"],
            arch="x86_64",
            platform="linux",
            timestamp=0,
        )
    )

    assert record["noarch"] == "python"
    assert record["constrains"] == ["other <2"]
    assert (record["arch"], record["platform"]) == ("x86_64", "linux")


@pytest.mark.parametrize(("arch", "platform"), [("x 86", "plan9"), (3, ["linux"]), ("a" * 33, "Linux")])
def test_legacy_arch_and_platform_conda_cannot_read_are_dropped_not_rejected(arch, platform):
    record = build(index_json(arch=arch, platform=platform))

    assert "arch" not in record and "platform" not in record


def test_record_carries_known_index_fields_and_digests_and_drops_the_rest():
    record = build(
        index_json(
            depends=["python >=3.11"],
            license="BSD-3-Clause",
            custom_field={"k": "v"},
            fn="other.conda",
            url="https://evil.example/pkg.conda",
            channel="https://evil.example",
            legacy_bz2_md5="zz",
            arch=None,
        )
    )

    assert record == {
        "build": "h0_0",
        "build_number": 0,
        "depends": ["python >=3.11"],
        "license": "BSD-3-Clause",
        "md5": DIGESTS.md5,
        "name": "pkg",
        "sha256": DIGESTS.sha256,
        "size": DIGESTS.size,
        "subdir": "linux-64",
        "timestamp": 1704067200000,
        "version": "1.0",
    }
    assert list(record) == sorted(record)


def test_digests_from_the_archive_override_index_json_fields():
    record = build(index_json(md5="f" * 32, sha256="e" * 64, size=1))

    assert (record["md5"], record["sha256"], record["size"]) == (DIGESTS.md5, DIGESTS.sha256, DIGESTS.size)


def test_sort_record_orders_keys_and_keeps_values():
    assert list(sort_record({"b": 1, "a": 2, "c": 3}).items()) == [("a", 2), ("b", 1), ("c", 3)]
