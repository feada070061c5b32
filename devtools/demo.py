"""`make demo`: the event-driven pipeline end to end on an embedded S3, with nothing run by hand.

Starts `reindexer local` on a free loopback port, uploads generated packages from several threads, waits for
automatic indexing, installs from the channel with py-rattler over HTTP, deletes a package, uploads a corrupt
one, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import boto3

from devtools.sample_channel import SamplePackage, build_packages, plan_channel
from reindexer.contract import STATE_FILE
from reindexer.state import SubdirState
from reindexer_cli.embedded_s3 import free_port

BUCKET = "demo-channel"
CHANNEL = "demo"
WAIT_SECONDS = 60.0
DEMO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def main() -> int:
    os.environ.update(DEMO_ENVIRONMENT)
    port = free_port()
    command = [sys.executable, "-m", "reindexer_cli.cli", "local", "--port", str(port), "--bucket", BUCKET]
    command += ["--access", "public", "--channel", CHANNEL]
    step(f"Starting the local pipeline: reindexer {' '.join(command[3:])}")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        endpoint = wait_for_ready(server)
        with tempfile.TemporaryDirectory(prefix="reindexer-demo-") as scratch:
            run(endpoint, Path(scratch))
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        step(f"Stopped the local pipeline (exit code {server.returncode})")
    print("\nDemo finished: uploads were indexed automatically, installed over HTTP, deletes and a corrupt")
    print("package were handled, and everything the demo started has stopped.")
    return 0


def run(endpoint: str, work: Path) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    packages = plan_channel(40)
    build_packages(packages, work / "channel")
    subdirs = sorted({p.subdir for p in packages})

    step(f"Uploading {len(packages)} packages (.conda and .tar.bz2, {', '.join(subdirs)}) from 4 threads")
    uploaded_at: dict[str, float] = {}

    def upload(package: SamplePackage) -> None:
        client.upload_file(str(work / "channel" / package.key), BUCKET, f"{CHANNEL}/{package.key}")
        uploaded_at[package.filename] = time.monotonic()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upload, packages))
    visible_at = wait_for_index(client, packages)
    latencies = [visible_at[name] - uploaded_at[name] for name in uploaded_at]
    print(
        f"    all {len(packages)} indexed, no command run; upload-to-visible latency: "
        f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
    )

    channel_url = f"{endpoint}/{BUCKET}/{CHANNEL}"
    target = max((p for p in packages if p.subdir == "linux-64"), key=lambda p: (len(p.depends), p.name))
    step(f"Solving and installing '{target.name}' for linux-64 from {channel_url} with py-rattler")
    for line in asyncio.run(solve_and_install(channel_url, target.name, work / "env1", work / "cache1")):
        print(f"    {line}")

    # An older version of a name that has newer ones: the channel stays installable without it.
    noarch = sorted((p for p in packages if p.subdir == "noarch"), key=lambda p: (p.name, p.timestamp))
    gone = next(p for p, newer in pairwise(noarch) if p.name == newer.name)
    step(f"Deleting {gone.key}")
    started = time.monotonic()
    client.delete_object(Bucket=BUCKET, Key=f"{CHANNEL}/{gone.key}")
    until(lambda: gone.filename not in published(client, gone.subdir), "the delete to be indexed")
    print(f"    gone from noarch/repodata.json after {time.monotonic() - started:.2f} s")

    broken = "broken-1.0-h0_0.conda"
    step(f"Uploading a corrupt package linux-64/{broken}")
    client.put_object(Bucket=BUCKET, Key=f"{CHANNEL}/linux-64/{broken}", Body=b"this is not a conda package")
    until(lambda: broken in rejected(client, "linux-64"), "the corrupt package to be rejected")
    print(f"    rejected, not indexed: {rejected(client, 'linux-64')[broken]}")
    assert broken not in published(client, "linux-64")
    lines = asyncio.run(solve_and_install(channel_url, target.name, work / "env2", work / "cache2"))
    print(f"    the others stay installable: '{target.name}' installs again ({len(lines)} packages)")


def wait_for_index(client: Any, packages: list[SamplePackage]) -> dict[str, float]:
    """Poll the published indexes until every package is in; return when each was first seen."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    subdirs = sorted({p.subdir for p in packages})
    while len(seen) < len(packages):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(seen)} of {len(packages)} packages were indexed in {WAIT_SECONDS} s"
            )
        now = time.monotonic()
        for subdir in subdirs:
            for name in published(client, subdir):
                seen.setdefault(name, now)
        time.sleep(0.05)
    return seen


def published(client: Any, subdir: str) -> set[str]:
    try:
        body = client.get_object(Bucket=BUCKET, Key=f"{CHANNEL}/{subdir}/repodata.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return set()
    document = json.loads(body)
    return set(document["packages"]) | set(document["packages.conda"])


def rejected(client: Any, subdir: str) -> dict[str, str]:
    """What the indexer refused in a subdir, with reasons, from its own state."""
    try:
        body = client.get_object(Bucket=BUCKET, Key=f"{CHANNEL}/{subdir}/{STATE_FILE}")["Body"].read()
    except client.exceptions.NoSuchKey:
        return {}
    return {name: file.reason for name, file in SubdirState.from_bytes(body).rejected.items()}


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_ready(server: subprocess.Popen[str]) -> str:
    """Echo the local pipeline's greeting and return its endpoint once it is polling."""
    assert server.stdout is not None
    endpoint: list[str] = []
    ready = threading.Event()

    def relay() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("ready: ") and not ready.is_set():
                endpoint.append(line.removeprefix("ready: ").strip())
                ready.set()
            if not ready.is_set() or "WARNING" in line or "ERROR" in line:
                print(f"    | {line.rstrip()}", flush=True)

    threading.Thread(target=relay, daemon=True).start()
    if not ready.wait(WAIT_SECONDS):
        raise RuntimeError("the local pipeline did not become ready")
    return endpoint[0]


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


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
