"""`reindexer local` end to end: the embedded pipeline indexes concurrent uploads and deletes, and a real
client installs from it; the command starts on a free port and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from devtools.sample_channel import build_packages, plan_channel
from reindexer.config import HandlerSettings
from reindexer_cli.embedded_s3 import free_port
from reindexer_cli.local_stack import LocalSettings, handler_environment, notification_rules

BUCKET = "local-channel"
CHANNEL = "team/dev"
READY_TIMEOUT = 60.0
INDEX_TIMEOUT = 60.0


@pytest.fixture
def local_stack() -> Iterator[str]:
    """`reindexer local` in a child process, public, on a free loopback port; yields its endpoint."""
    port = free_port()
    command = [sys.executable, "-m", "reindexer_cli.cli", "local", "--port", str(port), "--bucket", BUCKET]
    command += ["--access", "public", "--channel", CHANNEL]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        endpoint = _wait_for_ready(process)
        yield endpoint
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "stopped" in output


def _wait_for_ready(process: subprocess.Popen[str], seen: list[str] | None = None) -> str:
    """The endpoint from the `ready:` line; every line read on the way is appended to `seen`."""
    deadline = time.monotonic() + READY_TIMEOUT
    assert process.stdout is not None
    seen = [] if seen is None else seen
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"reindexer local exited before it was ready: {''.join(seen)}")
        seen.append(line)
        if line.startswith("ready: "):
            return line.removeprefix("ready: ").strip()
    raise AssertionError(f"not ready within {READY_TIMEOUT} s: {''.join(seen)}")


def _published(client: Any, subdir: str) -> dict[str, dict[str, Any]]:
    try:
        body = client.get_object(Bucket=BUCKET, Key=f"{CHANNEL}/{subdir}/repodata.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return {}
    document = json.loads(body)
    return {**document["packages"], **document["packages.conda"]}


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + INDEX_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {INDEX_TIMEOUT} s")


def test_uploads_from_several_threads_are_indexed_and_installable_and_deletes_leave_the_index(
    local_stack: str, tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=local_stack, region_name="us-east-1")
    packages = plan_channel(40)
    build_packages(packages, tmp_path / "channel")
    files = {p: tmp_path / "channel" / p.key for p in packages}

    # when: four threads upload every package as packagers would
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda p: client.upload_file(str(files[p]), BUCKET, f"{CHANNEL}/{p.key}"), packages))

    # then: automatic indexing publishes each one with the sha256 of the uploaded file
    subdirs = sorted({p.subdir for p in packages})
    expected = {s: {p.filename: p for p in packages if p.subdir == s} for s in subdirs}
    _wait_until(lambda: all(set(_published(client, s)) == set(expected[s]) for s in subdirs), "indexing")
    for subdir in subdirs:
        for filename, record in _published(client, subdir).items():
            sha256 = hashlib.sha256(files[expected[subdir][filename]].read_bytes()).hexdigest()
            assert record["sha256"] == sha256
    # --access public reached the handler as CHANNEL_ACCESS
    head = client.head_object(Bucket=BUCKET, Key=f"{CHANNEL}/linux-64/repodata.json")
    assert head["CacheControl"] == "public, max-age=60"

    # and a real client solves and installs over HTTP, each installed record matching the uploaded file
    target = max((p for p in packages if p.subdir == "linux-64"), key=lambda p: (len(p.depends), p.name))
    installed = asyncio.run(_install(f"{local_stack}/{BUCKET}/{CHANNEL}", target.name, tmp_path))
    by_name = {p.filename: p for p in packages}
    assert target.filename in installed
    for filename, sha256 in installed.items():
        assert sha256 == hashlib.sha256(files[by_name[filename]].read_bytes()).hexdigest()

    # when: a package is deleted, it leaves the index
    gone = next(p for p in packages if p.subdir == "noarch")
    client.delete_object(Bucket=BUCKET, Key=f"{CHANNEL}/{gone.key}")
    _wait_until(lambda: gone.filename not in _published(client, "noarch"), "the delete")


async def _install(channel_url: str, spec: str, work: Path) -> dict[str, str]:
    from rattler import Gateway, install, solve

    records = await solve(
        [channel_url], [spec], gateway=Gateway(cache_dir=work / "cache"), platforms=["linux-64", "noarch"]
    )
    await install(records, target_prefix=work / "env", cache_dir=work / "packages", show_progress=False)
    return {r.file_name: (r.sha256 or b"").hex() for r in records}


def test_notification_rules_mirror_the_stack_one_rule_per_prefix_suffix_and_event() -> None:
    """Packages and patch instructions, created and removed, under each channel prefix."""
    rules = notification_rules("arn:aws:sqs:us-east-1:1:q", ["dev", "prod"])

    seen = sorted(
        (
            rule["Events"][0],
            {f["Name"]: f["Value"] for f in rule["Filter"]["Key"]["FilterRules"]}.get("prefix"),
            {f["Name"]: f["Value"] for f in rule["Filter"]["Key"]["FilterRules"]}["suffix"],
        )
        for rule in rules
    )
    assert seen == sorted(
        (event, f"{prefix}/", suffix)
        for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
        for prefix in ("dev", "prod")
        for suffix in (".conda", ".tar.bz2", "/patch_instructions.json")
    )


@pytest.mark.parametrize("access", ["private", "public"])
def test_handler_environment_is_what_the_handlers_read_as_the_stack_sets_it(access: str) -> None:
    local = LocalSettings(
        bucket=BUCKET, access=access, channel_prefixes=("dev", "org/dev"), repodata_max_age=30
    )

    environment = handler_environment("http://127.0.0.1:1", local)
    settings = HandlerSettings.from_environment(environment)

    assert environment["CHANNEL_ACCESS"] == access
    assert settings.bucket == BUCKET
    assert settings.private is (access == "private")
    assert settings.channel_prefixes == frozenset({"dev", "org/dev"})
    assert settings.repodata_max_age == 30
    assert environment["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:1"


def test_handler_environment_without_channels_leaves_channel_prefixes_unset() -> None:
    environment = handler_environment("http://127.0.0.1:1", LocalSettings(bucket=BUCKET))

    assert "CHANNEL_PREFIXES" not in environment
    assert HandlerSettings.from_environment(environment).channel_prefixes is None


def test_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "reindexer_cli.cli", "local", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reindexer: error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_reindex_without_a_channel_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reindexer_cli.cli", "local", "--reindex"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "--reindex needs" in result.stderr


def test_a_channel_breaking_the_prefix_rule_is_a_usage_error_before_anything_starts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reindexer_cli.cli", "local", "--channel", "../x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "--channel '../x' has a segment starting with '.'" in result.stderr
    assert "ready:" not in result.stdout


def test_reindex_flag_runs_the_full_reindex_handler_before_ready() -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "reindexer_cli.cli",
        "local",
        "--port",
        str(port),
        "--channel",
        "dev",
        "--reindex",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before_ready: list[str] = []
    try:
        _wait_for_ready(process, before_ready)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)

    assert "full reindex of dev: complete=True\n" in before_ready


def test_running_in_process_gives_its_wiring_and_gives_the_environment_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reindexer_cli.local_stack import running

    monkeypatch.delenv("CHANNEL_BUCKET", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-callers-key")
    before = dict(os.environ)

    with running(LocalSettings(bucket="in-process"), free_port()) as stack:
        assert stack.wiring is not None
        assert stack.wiring.settings.bucket == "in-process"
        assert os.environ["CHANNEL_BUCKET"] == "in-process"
        assert os.environ["AWS_ACCESS_KEY_ID"] == "the-callers-key", "credentials set by the caller are kept"

    assert dict(os.environ) == before
