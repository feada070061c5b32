"""Fixtures for the S3 integration tests: in-process moto (served over loopback HTTP to our store), and fresh
buckets on the embedded HTTP server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from reindexer.storage.s3 import S3Store
from reindexer.store_conditions import StoreConditions
from tests.support.stores import CallRecorder, s3_store

MOTO_BUCKET = "channel-bucket"


@pytest.fixture
def moto_client() -> Iterator[Any]:
    """A boto3 client on in-process moto (no HTTP at all) with one empty bucket, MOTO_BUCKET."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=MOTO_BUCKET)
        yield client


@pytest.fixture
def moto_store(moto_client: Any, moto_endpoint: str) -> S3Store:
    """Our S3Store on MOTO_BUCKET, built the way the CLI builds it; moto's conditions are known (S3's), so
    request counts hold no probe."""
    return s3_store(MOTO_BUCKET, moto_endpoint, conditions=StoreConditions.all_honoured())


@pytest.fixture
def moto_calls(moto_store: S3Store) -> CallRecorder:
    """Every API call `moto_store` makes, with its key."""
    return CallRecorder(moto_store)


@pytest.fixture
def http_bucket(http_s3_client: Any) -> str:
    """A fresh bucket on the embedded HTTP S3 server (the server is shared by the whole session)."""
    name = f"it-{uuid.uuid4().hex[:16]}"
    http_s3_client.create_bucket(Bucket=name)
    return name
