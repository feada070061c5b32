"""A real client (py-rattler, pixi's library) solves and installs from our index over anonymous HTTP.

The channel lives in a public-read bucket on the embedded S3 server and is read as
http://127.0.0.1:PORT/BUCKET/CHANNEL. rattler prefers sharded repodata, then repodata.json.zst, then
repodata.json, and quietly falls back when one is missing, so a passing solve alone would not show which
file was read. Each round therefore first deletes the outputs the round must NOT use (in every subdir):
the sharded round deletes repodata.json and repodata.json.zst, the zst round deletes the shard index and
repodata.json, the plain JSON round deletes the shard index and repodata.json.zst. What remains is the
only way to the packages. Before each round our indexer runs again; its state records the ETags of the
outputs it wrote, so it notices the deleted ones and writes them back, which the round also checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from devtools.channel_bucket import allow_anonymous_reads, upload_channel
from devtools.sample_channel import SamplePackage
from reindexer.contract import PUBLISHED_FILES
from reindexer.options import IndexOptions, PublishSettings
from reindexer_cli.embedded_s3 import EmbeddedS3
from tests.support.checks import sha256_hex
from tests.support.clients import ROUTES, solve_and_install_url
from tests.support.stores import run_index, s3_store

SmallChannel = tuple[Path, list[SamplePackage]]
CHANNEL = "org/stable"
SUBDIRS = ("linux-64", "noarch", "osx-arm64", "win-64")
PLATFORMS = ["linux-64", "noarch"]  # what a linux-64 client reads


class PublicChannel:
    def __init__(self, server: EmbeddedS3, folder: Path, packages: list[SamplePackage]) -> None:
        self.bucket = f"public-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        self.client.create_bucket(Bucket=self.bucket)
        allow_anonymous_reads(self.client, self.bucket)
        self.files = upload_channel(self.client, self.bucket, CHANNEL, folder)
        self.packages = packages
        self.url = f"{server.endpoint_url}/{self.bucket}/{CHANNEL}"
        self.store = s3_store(self.bucket, server.endpoint_url)

    def outputs(self, subdir: str) -> set[str]:
        names = {obj.name for obj in self.store.list_folder(f"{CHANNEL}/{subdir}").objects}
        return names & set(PUBLISHED_FILES)


@pytest.fixture(scope="module")
def public_channel(embedded_s3: EmbeddedS3, small_channel: SmallChannel) -> Iterator[PublicChannel]:
    folder, packages = small_channel
    channel = PublicChannel(embedded_s3, folder, packages)
    run_index(channel.store, CHANNEL)
    yield channel


@pytest.mark.parametrize("round_name", list(ROUTES))
def test_rattler_solves_and_installs_from_our_index(
    public_channel: PublicChannel, round_name: str, tmp_path: Path
) -> None:
    route = ROUTES[round_name]
    removed = route.hidden  # the index files of the other routes, deleted in every subdir
    report = run_index(public_channel.store, CHANNEL)
    for subdir in SUBDIRS:
        assert public_channel.outputs(subdir) == set(PUBLISHED_FILES), (subdir, report.to_dict())
    for subdir in SUBDIRS:
        for name in removed:
            public_channel.client.delete_object(
                Bucket=public_channel.bucket, Key=f"{CHANNEL}/{subdir}/{name}"
            )
        assert public_channel.outputs(subdir) == set(PUBLISHED_FILES) - removed

    # The linux-64 package with the most dependencies, pinned so the solve has to pull them all in.
    target = max(
        (p for p in public_channel.packages if p.subdir == "linux-64"), key=lambda p: (len(p.depends), p.key)
    )
    assert target.depends
    spec = f"{target.name} =={target.version}"

    records = solve_and_install_url(public_channel.url, [spec], PLATFORMS, route.config, tmp_path)

    by_name = {record.name.normalized: record for record in records}
    assert by_name[target.name].file_name == target.filename
    needed = {dependency.split()[0] for dependency in target.depends}
    assert needed <= set(by_name), (needed, sorted(by_name))
    planned = {(p.subdir, p.filename): p for p in public_channel.packages}
    for record in records:
        subdir = str(record.subdir)
        key = f"{CHANNEL}/{subdir}/{record.file_name}"
        assert key in public_channel.files, key
        assert record.sha256 is not None
        assert record.sha256.hex() == sha256_hex(public_channel.files[key].read_bytes())
        assert record.url == f"{public_channel.url}/{subdir}/{record.file_name}"
        package = planned[(subdir, record.file_name)]
        readme = tmp_path / "env" / "share" / package.name / "README.txt"
        assert readme.read_text() == (package.payload or package.filename)


@pytest.mark.parametrize("round_name", ["sharded", "plain-json"])
def test_rattler_fetches_packages_from_the_base_url(
    embedded_s3: EmbeddedS3, small_channel: SmallChannel, round_name: str, tmp_path: Path
) -> None:
    """`--base-url` (CEP-15) names where the channel's package tree is served from, e.g. a CDN mirror.

    As with conda-index's --base-url, it is one URL for the whole channel: clients must find a package of
    subdir S at <base-url>/S/<file>. The packages are mirrored to a second bucket and then deleted from
    the indexed one, so the install only succeeds when the clients follow the base URL correctly.
    """
    folder, packages = small_channel
    origin = PublicChannel(embedded_s3, folder, packages)
    mirror = PublicChannel(embedded_s3, folder, packages)
    base_url = mirror.url
    report = run_index(origin.store, CHANNEL, IndexOptions(settings=PublishSettings(base_url=base_url)))
    assert report.ok
    for key in origin.files:
        origin.client.delete_object(Bucket=origin.bucket, Key=key)
    target = next(p for p in packages if p.subdir == "linux-64" and len(p.depends) >= 2)

    spec = f"{target.name} =={target.version}"
    records = solve_and_install_url(origin.url, [spec], PLATFORMS, ROUTES[round_name].config, tmp_path)

    assert len(records) >= 3
    for record in records:
        assert record.url == f"{base_url}/{record.subdir}/{record.file_name}"
        package = next(
            p for p in packages if (p.subdir, p.filename) == (str(record.subdir), record.file_name)
        )
        assert (tmp_path / "env" / "share" / package.name / "README.txt").read_text() == package.payload
