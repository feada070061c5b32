"""Differential test: the same 320-package channel indexed by rattler-index and by us must agree."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from rattler.index import S3Credentials, index_s3

from devtools.channel_bucket import upload_channel
from devtools.sample_channel import build_packages, plan_channel
from reindexer.contract import REPODATA_JSON, REPODATA_ZST, SHARD_INDEX
from reindexer_cli.embedded_s3 import EmbeddedS3
from tests.support.checks import all_records, decode_msgpack_zst, sha256_hex, zstd_decompress
from tests.support.stores import get_bytes, get_repodata, run_index, s3_store

CHANNEL = "conda/main"
SUBDIRS = ("linux-64", "noarch", "osx-arm64", "win-64")
COMPARED_FIELDS = (
    "name",
    "version",
    "build",
    "build_number",
    "depends",
    "constrains",
    "license",
    "timestamp",
    "subdir",
    "md5",
    "sha256",
    "size",
)

MISSING = "<absent>"


def _shard_names(client: Any, bucket: str, subdir: str) -> dict[str, bytes]:
    index = decode_msgpack_zst(get_bytes(client, bucket, f"{CHANNEL}/{subdir}/{SHARD_INDEX}"))
    assert index["info"]["subdir"] == subdir
    shards: dict[str, bytes] = index["shards"]
    return shards


@pytest.mark.slow
def test_our_index_agrees_with_rattler_index(
    embedded_s3: EmbeddedS3, http_s3_client: Any, tmp_path: Path
) -> None:
    packages = plan_channel(320)
    assert {p.subdir for p in packages} == set(SUBDIRS)
    assert {p.archive for p in packages} == {".conda", ".tar.bz2"}
    build_packages(packages, tmp_path)
    suffix = uuid.uuid4().hex[:12]
    theirs, ours = f"diff-rattler-{suffix}", f"diff-ours-{suffix}"
    for bucket in (theirs, ours):
        http_s3_client.create_bucket(Bucket=bucket)
    files = upload_channel(http_s3_client, theirs, CHANNEL, tmp_path)
    assert upload_channel(http_s3_client, ours, CHANNEL, tmp_path) == files
    assert len(files) == 320

    credentials = S3Credentials(
        embedded_s3.endpoint_url, "us-east-1", "testing", "testing", addressing_style="path"
    )
    asyncio.run(index_s3(f"s3://{theirs}/{CHANNEL}", credentials=credentials))
    store = s3_store(ours, embedded_s3.endpoint_url)
    report = run_index(store, CHANNEL)
    assert sorted(report.subdirs) == sorted(SUBDIRS)

    for subdir in SUBDIRS:
        reference = get_repodata(http_s3_client, theirs, CHANNEL, subdir)
        candidate = get_repodata(http_s3_client, ours, CHANNEL, subdir)
        assert candidate["info"]["subdir"] == reference["info"]["subdir"] == subdir
        for section in ("packages", "packages.conda"):
            assert sorted(candidate[section]) == sorted(reference[section]), (subdir, section)
        expected = sorted(p.filename for p in packages if p.subdir == subdir)
        assert sorted(all_records(candidate)) == expected
        for section in ("packages", "packages.conda"):
            for filename, record in reference[section].items():
                mine = candidate[section][filename]
                differing = {
                    field: (mine.get(field, MISSING), record.get(field, MISSING))
                    for field in COMPARED_FIELDS
                    if mine.get(field, MISSING) != record.get(field, MISSING)
                }
                assert not differing, (subdir, filename, differing)
                # Both describe the very bytes that were uploaded.
                assert mine["sha256"] == sha256_hex(files[f"{CHANNEL}/{subdir}/{filename}"].read_bytes())

        # The shard indexes list the same package names; our shards are content-addressed.
        our_shards = _shard_names(http_s3_client, ours, subdir)
        assert sorted(our_shards) == sorted(_shard_names(http_s3_client, theirs, subdir))
        names = {record["name"] for record in all_records(candidate).values()}
        assert set(our_shards) == names
        for name, digest in our_shards.items():
            raw = get_bytes(http_s3_client, ours, f"{CHANNEL}/{subdir}/shards/{digest.hex()}.msgpack.zst")
            assert sha256_hex(raw) == digest.hex()
            shard = decode_msgpack_zst(raw)
            for section in ("packages", "packages.conda"):
                in_repodata = {f: r for f, r in candidate[section].items() if r["name"] == name}
                assert sorted(shard[section]) == sorted(in_repodata)
                for filename, record in shard[section].items():
                    assert record["sha256"] == bytes.fromhex(in_repodata[filename]["sha256"])
                    assert record["md5"] == bytes.fromhex(in_repodata[filename]["md5"])

        # repodata.json.zst holds exactly the bytes of repodata.json.
        ours_json = get_bytes(http_s3_client, ours, f"{CHANNEL}/{subdir}/{REPODATA_JSON}")
        ours_zst = get_bytes(http_s3_client, ours, f"{CHANNEL}/{subdir}/{REPODATA_ZST}")
        assert zstd_decompress(ours_zst) == ours_json
