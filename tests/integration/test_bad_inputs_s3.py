"""Broken and stray files beside good packages on S3: each is rejected with a reason, the rest is indexed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import reindexer.package_reader
from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage, build_packages
from reindexer.storage.s3 import S3Store
from tests.integration.conftest import MOTO_BUCKET
from tests.support.archives import index_json, package_bytes
from tests.support.checks import all_records
from tests.support.stores import CallRecorder, get_repodata, run_index

SmallChannel = tuple[Path, list[SamplePackage]]
OVERSIZED_LIMIT = 4096


def _real_archives(tmp_path: Path) -> dict[str, bytes]:
    """Real rattler-build packages of both formats, to be truncated."""
    packages = [
        SamplePackage(subdir="linux-64", name="truncated", version="1.0", build="h0_0", archive=".conda"),
        SamplePackage(subdir="linux-64", name="truncated", version="1.0", build="h0_1", archive=".tar.bz2"),
    ]
    return {path.name: path.read_bytes() for path in build_packages(packages, tmp_path)}


def bad_files(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """Channel-relative key -> (content, a phrase the rejection reason must contain)."""
    files: dict[str, tuple[bytes, str]] = {
        "linux-64/corrupt-1.0-h0_0.conda": (os.urandom(2048), "not a valid .conda"),
        "noarch/corrupt-1.0-h0_0.tar.bz2": (os.urandom(2048), "not a valid .tar.bz2"),
        "linux-64/empty-1.0-h0_0.conda": (b"", "empty file"),
        "noarch/empty-1.0-h0_0.tar.bz2": (b"", "empty file"),
        "linux-64/noindex-1.0-h0_0.conda": (
            package_bytes("noindex-1.0-h0_0.conda", None),
            "no info/index.json",
        ),
        "noarch/noindex-1.0-h0_0.tar.bz2": (
            package_bytes("noindex-1.0-h0_0.tar.bz2", None),
            "no info/index.json",
        ),
        "linux-64/badjson-1.0-h0_0.conda": (
            package_bytes("badjson-1.0-h0_0.conda", b'{"name": "badjson",'),
            "not valid JSON",
        ),
        "noarch/badjson-1.0-h0_0.tar.bz2": (
            package_bytes("badjson-1.0-h0_0.tar.bz2", b"\xff\xfe not json"),
            "not valid JSON",
        ),
        "linux-64/renamed-1.0-h0_0.conda": (
            package_bytes("renamed-1.0-h0_0.conda", index_json("original", "1.0", "h0_0")),
            "file name says renamed-1.0-h0_0",
        ),
        "linux-64/wrongsubdir-1.0-h0_0.tar.bz2": (
            package_bytes("wrongsubdir-1.0-h0_0.tar.bz2", index_json("wrongsubdir", subdir="osx-64")),
            "says subdir 'osx-64'",
        ),
        "linux-65/x-1-0.conda": (
            package_bytes("x-1-0.conda", index_json("x", "1", "0")),
            "not a known conda subdir",
        ),
        "linux-64/README.txt": (b"read me\n", "not a conda package"),
        "noarch/oversized-1.0-h0_0.conda": (
            package_bytes(
                "oversized-1.0-h0_0.conda",
                index_json("oversized", description="x" * (2 * OVERSIZED_LIMIT)),
            ),
            "byte limit",
        ),
    }
    for filename, data in _real_archives(tmp_path).items():
        expected = "not a valid .conda" if filename.endswith(".conda") else "not a valid .tar.bz2"
        files[f"linux-64/{filename}"] = (data[: len(data) // 2], expected)
    return files


def test_bad_files_are_rejected_and_good_packages_indexed(
    moto_store: S3Store,
    moto_calls: CallRecorder,
    small_channel: SmallChannel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Metadata members above the limit are refused; the good packages' index.json is far below it.
    monkeypatch.setattr(reindexer.package_reader, "METADATA_MEMBER_LIMIT", OVERSIZED_LIMIT)
    folder, packages = small_channel
    upload_channel(moto_store.client, MOTO_BUCKET, "ch", folder)
    bad = bad_files(tmp_path)
    for key, (data, _) in bad.items():
        moto_store.client.put_object(Bucket=MOTO_BUCKET, Key=f"ch/{key}", Body=data)

    report = run_index(moto_store, "ch")

    assert report.ok
    assert sorted(report.subdirs) == ["linux-64", "noarch", "osx-arm64", "win-64"]
    rejected = {f"{name}/{r.file}": r.reason for name, sub in report.subdirs.items() for r in sub.rejected}
    rejected.update({r.file: r.reason for r in report.rejected})
    assert sorted(rejected) == sorted(bad)
    for key, (_, phrase) in bad.items():
        reason = rejected[key]
        assert phrase in reason, (key, reason)
        assert reason.strip() and "\n" not in reason, (key, reason)
    for subdir, sub in report.subdirs.items():
        assert sub.failed == []
        records = all_records(get_repodata(moto_store.client, MOTO_BUCKET, "ch", subdir))
        assert sorted(records) == sorted(p.filename for p in packages if p.subdir == subdir)
        assert sorted(sub.added) == sorted(records)
    assert "linux-65" not in report.subdirs

    # Rejections are remembered by ETag: an unchanged bad file is not fetched again.
    moto_calls.clear()
    again = run_index(moto_store, "ch")
    assert moto_calls.package_reads() == {}
    assert moto_store.requests.get("PutObject", 0) == 0
    again_rejected = {f"{n}/{r.file}": r.reason for n, sub in again.subdirs.items() for r in sub.rejected}
    again_rejected.update({r.file: r.reason for r in again.rejected})
    assert again_rejected == rejected
