"""Where a command acts: a channel on S3 (s3://BUCKET/PREFIX) or in a local folder, and its store."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reindexer.store import Store

if TYPE_CHECKING:
    from reindexer.storage.s3 import S3Store


@dataclass(frozen=True)
class Target:
    """Where a channel lives: a bucket and prefix, or a local folder."""

    bucket: str | None
    prefix: str
    folder: Path | None


def parse_target(text: str) -> Target:
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket name in {text!r} (expected s3://BUCKET/PREFIX)")
        return Target(bucket=bucket, prefix=prefix.strip("/"), folder=None)
    if "://" in text:
        raise ValueError(f"unsupported target {text!r}: use s3://BUCKET/PREFIX or a local folder")
    return Target(bucket=None, prefix="", folder=Path(text))


def open_store(target: Target, args: argparse.Namespace) -> Store:
    if target.folder is not None:
        from reindexer.storage.local import LocalStore

        return LocalStore(target.folder)
    assert target.bucket is not None
    return s3_store(target.bucket, args)


def s3_store(bucket: str, args: argparse.Namespace) -> S3Store:
    from reindexer.storage.s3 import S3Endpoint, S3Store

    found = S3Endpoint.from_environment(max_connections=getattr(args, "jobs", 1) + 4)
    endpoint = dataclasses.replace(
        found,
        url=args.endpoint_url or found.url,
        # Without --region the bucket's own region is looked up (a shell's AWS_REGION may name another).
        region=args.region,
        path_style=args.force_path_style or (found.path_style and not args.endpoint_url),
    )
    return S3Store(bucket, endpoint, single_writer=getattr(args, "single_writer", False))


def add_s3_options(parser: argparse.ArgumentParser) -> None:
    s3 = parser.add_argument_group("S3 connection (credentials come from the standard AWS chain)")
    s3.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO")
    s3.add_argument("--region", help="bucket region (default: from the AWS configuration)")
    s3.add_argument(
        "--force-path-style", action="store_true", help="path-style addressing (MinIO, moto, ...)"
    )
