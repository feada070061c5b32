"""Helpers to put a generated channel into a bucket and open it to anonymous HTTP reads (moto only)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devtools.sample_channel import package_files
from reindexer.contract import join_key
from reindexer_cli.local_stack import public_read_policy


def upload_channel(
    client: Any, bucket: str, prefix: str, channel_dir: Path, threads: int = 8
) -> dict[str, Path]:
    """Upload every package under `channel_dir` to `bucket/prefix/<subdir>/<file>`; return {key: file}.

    Single-part PUTs, so each object's ETag is the MD5 of its bytes, as `aws s3 cp` gives for small files.
    """
    files = {join_key(prefix, path.parent.name, path.name): path for path in package_files(channel_dir)}

    def put(item: tuple[str, Path]) -> None:
        key, path = item
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, files.items()))
    return files


def allow_anonymous_reads(client: Any, bucket: str) -> None:
    """The public-read bucket policy of `reindexer local --access public` (moto needs s3:HeadObject too)."""
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_read_policy(bucket)))
