"""`make demo`: index a generated channel on an embedded S3 and install from it with py-rattler over HTTP.

Everything it starts (the moto server on 127.0.0.1, temporary folders) is stopped or removed on exit.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3

from devtools.channel_bucket import allow_anonymous_reads, upload_channel
from devtools.sample_channel import SamplePackage, build_packages, plan_channel
from reindexer.embedded_s3 import EmbeddedS3

BUCKET = "demo-channel"
CHANNEL = "demo"
DEMO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def main() -> int:
    os.environ.update(DEMO_ENVIRONMENT)
    with tempfile.TemporaryDirectory(prefix="reindexer-demo-") as scratch, EmbeddedS3() as s3:
        work = Path(scratch)
        step(f"Embedded S3 (moto) listening on {s3.endpoint_url} (pid {s3.pid})")
        client = boto3.client("s3", endpoint_url=s3.endpoint_url)
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        allow_anonymous_reads(client, BUCKET)

        packages = plan_channel(40)
        build_packages(packages, work / "channel")
        keys = upload_channel(client, BUCKET, CHANNEL, work / "channel")
        subdirs = sorted({package.subdir for package in packages})
        step(f"Uploaded {len(keys)} generated packages (.conda and .tar.bz2) to s3://{BUCKET}/{CHANNEL}/")
        print(f"    subdirs: {', '.join(subdirs)}")

        run_index(s3.endpoint_url, "Cold index: every package is read once")
        run_index(s3.endpoint_url, "Re-run with nothing changed: no package read, nothing written")

        extra = plan_channel(44)[40:]
        build_packages(extra, work / "more")
        upload_channel(client, BUCKET, CHANNEL, work / "more")
        client.put_object(
            Bucket=BUCKET, Key=f"{CHANNEL}/linux-64/broken-1.0-h0_0.conda", Body=b"not a package"
        )
        step(f"Uploaded {len(extra)} more packages and one corrupt file")
        run_index(s3.endpoint_url, "Incremental run: only the new files are read, the corrupt one is refused")

        channel_url = f"{s3.endpoint_url}/{BUCKET}/{CHANNEL}"
        target = pick_installable(packages)
        step(f"Solving '{target.name}' for linux-64 from {channel_url} with py-rattler (sharded repodata)")
        installed = asyncio.run(solve_and_install(channel_url, target.name, work / "env", work / "cache"))
        for line in installed:
            print(f"    {line}")
        step(f"Installed {len(installed)} packages into a fresh prefix; stopping the embedded S3")
    print("\nDemo finished: the channel was indexed, updated incrementally and installed from over HTTP.")
    return 0


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run_index(endpoint_url: str, title: str) -> None:
    arguments = ["index", f"s3://{BUCKET}/{CHANNEL}", "--endpoint-url", endpoint_url, "--force-path-style"]
    step(f"{title}\n    $ reindexer {' '.join(arguments)}")
    command = [sys.executable, "-m", "reindexer.cli", *arguments]
    subprocess.run(command, check=True)


def pick_installable(packages: list[SamplePackage]) -> SamplePackage:
    """The linux-64 package with the most dependencies, so the solve has something to do."""
    return max((p for p in packages if p.subdir == "linux-64"), key=lambda p: (len(p.depends), p.name))


async def solve_and_install(channel_url: str, spec: str, prefix: Path, cache: Path) -> list[str]:
    from rattler import Gateway, install, solve

    records = await solve(
        [channel_url], [spec], gateway=Gateway(cache_dir=cache / "repodata"), platforms=["linux-64", "noarch"]
    )
    await install(records, target_prefix=prefix, cache_dir=cache / "packages", show_progress=False)
    missing = [r.name.normalized for r in records if not (prefix / "share" / r.name.normalized).is_dir()]
    if missing:
        raise RuntimeError(f"installed packages left no files: {missing}")
    return [
        f"{r.name.normalized} {r.version} ({r.subdir}, sha256 {(r.sha256 or b'').hex()[:12]}…)"
        for r in records
    ]


if __name__ == "__main__":
    sys.exit(main())
