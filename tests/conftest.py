"""Shared fixtures: fake AWS credentials, an embedded S3 server on loopback, and generated channels."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from devtools.sample_channel import SamplePackage, build_packages, plan_channel
from reindexer_cli.embedded_s3 import LOOPBACK, EmbeddedS3, free_port

# Fake credentials and no instance-metadata lookups: nothing may leave loopback.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "ReindexerTests",
    }
)
for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(variable, None)


@pytest.fixture(scope="session")
def embedded_s3() -> Iterator[EmbeddedS3]:
    """One moto server (real HTTP on 127.0.0.1) for the whole session; tests use their own buckets."""
    with EmbeddedS3() as server:
        yield server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's HTTP server in this process, on 127.0.0.1: it serves the same backends as `mock_aws()`, so the
    S3 client's requests (obstore speaks HTTP only) meet the buckets a test made in-process."""
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import WSGIRequestHandler

    WSGIRequestHandler.log_request = lambda *args, **kwargs: None  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def http_s3_client(embedded_s3: EmbeddedS3):
    return boto3.client("s3", endpoint_url=embedded_s3.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def small_channel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SamplePackage]]:
    """A 24-package channel over four subdirs in both formats, built once per session by rattler-build."""
    folder = tmp_path_factory.mktemp("small-channel")
    packages = plan_channel(24)
    build_packages(packages, folder)
    return folder, packages
