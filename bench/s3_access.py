"""How a benchmark and its children reach the S3 server on loopback: the region, a client, the environment."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
UPLOAD_THREADS = 16
# moto takes any keys; SeaweedFS is given its own.
TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"


def s3_client(
    endpoint_url: str, access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY
) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=UPLOAD_THREADS * 2),
    )


def child_env(access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY) -> dict[str, str]:
    """This environment without any AWS settings of its own, plus the given credentials and loopback only."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env
