"""Helpers to put a generated channel into a bucket and open it to anonymous HTTP reads (moto only)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devtools.sample_channel import package_files
from reindexer.layout import join_key


def upload_channel(client: Any, bucket: str, prefix: str, channel_dir: Path, threads: int = 8) -> list[str]:
    """Upload every package under `channel_dir` to `bucket/prefix/<subdir>/<file>`; return the keys."""
    files = package_files(channel_dir)
    keys = [join_key(prefix, path.parent.name, path.name) for path in files]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(
            pool.map(
                lambda item: client.upload_file(str(item[0]), bucket, item[1]), zip(files, keys, strict=True)
            )
        )
    return keys


def allow_anonymous_reads(client: Any, bucket: str) -> None:
    """A public-read bucket policy as the pixi documentation shows it.

    moto also checks an `s3:HeadObject` action for HEAD requests (real S3 governs HEAD by s3:GetObject and
    would reject that action name), and without it rattler silently skips repodata.json.zst.
    """
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:HeadObject"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
            },
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
