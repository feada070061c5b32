"""The `reindexer index` command end to end, as a subprocess talking real HTTP to the embedded S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage
from reindexer_cli.embedded_s3 import EmbeddedS3, free_port
from tests.support.checks import all_records
from tests.support.stores import get_repodata

SmallChannel = tuple[Path, list[SamplePackage]]
CLI_TIMEOUT = 60


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(variable, None)
    return subprocess.run(
        [sys.executable, "-m", "reindexer_cli.cli", "index", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reindexer: error:"), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_cli_indexes_a_channel_and_prints_one_json_summary(
    embedded_s3: EmbeddedS3, http_s3_client: Any, http_bucket: str, small_channel: SmallChannel
) -> None:
    folder, packages = small_channel
    upload_channel(http_s3_client, http_bucket, "org/dev", folder)
    target = f"s3://{http_bucket}/org/dev"
    connection = ("--endpoint-url", embedded_s3.endpoint_url, "--force-path-style", "--json")

    result = run_cli(target, *connection)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["ok"] is True
    assert summary["target"] == target
    assert summary["dry_run"] is False
    assert sorted(summary["subdirs"]) == ["linux-64", "noarch", "osx-arm64", "win-64"]
    assert sum(len(sub["added"]) for sub in summary["subdirs"].values()) == len(packages)
    assert all(sub["written"] for sub in summary["subdirs"].values())
    assert summary["requests"]["GetObject"] >= len(packages)
    assert summary["rejected"] == []
    for subdir in summary["subdirs"]:
        records = all_records(get_repodata(http_s3_client, http_bucket, "org/dev", subdir))
        assert sorted(records) == sorted(p.filename for p in packages if p.subdir == subdir)

    again = run_cli(target, *connection)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert "PutObject" not in summary["requests"]
    assert not any(sub["written"] for sub in summary["subdirs"].values())
    assert all(sub["unchanged"] == 6 for sub in summary["subdirs"].values())


def test_cli_missing_bucket_is_a_one_line_error(embedded_s3: EmbeddedS3) -> None:
    result = run_cli(
        "s3://no-such-bucket-anywhere/ch",
        "--endpoint-url",
        embedded_s3.endpoint_url,
        "--force-path-style",
        "--json",
    )
    line = assert_one_line_error(result)
    assert "no-such-bucket-anywhere" in line


def test_cli_endpoint_down_is_a_one_line_error() -> None:
    # Nothing listens on this loopback port: connections are refused at once; botocore retries a
    # few times with a short backoff before the command gives up.
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = run_cli("s3://some-bucket/ch", "--endpoint-url", endpoint, "--force-path-style", "--json")
    line = assert_one_line_error(result)
    assert endpoint in line


def test_cli_rejects_a_target_it_cannot_handle() -> None:
    result = run_cli("https://example.invalid/channel", "--json")
    line = assert_one_line_error(result)
    assert "unsupported target" in line


def test_cli_dry_run_writes_nothing_and_subdir_limits_the_run(
    embedded_s3: EmbeddedS3, http_s3_client: Any, http_bucket: str, small_channel: SmallChannel
) -> None:
    folder, packages = small_channel
    upload_channel(http_s3_client, http_bucket, "ch", folder)
    before = http_s3_client.list_objects_v2(Bucket=http_bucket)["KeyCount"]
    connection = ("--endpoint-url", embedded_s3.endpoint_url, "--force-path-style", "--json")

    dry = run_cli(f"s3://{http_bucket}/ch", "--dry-run", *connection)

    assert dry.returncode == 0, dry.stderr
    summary = json.loads(dry.stdout)
    assert summary["dry_run"] is True
    assert sum(len(sub["added"]) for sub in summary["subdirs"].values()) == len(packages)
    assert "PutObject" not in summary["requests"]
    assert http_s3_client.list_objects_v2(Bucket=http_bucket)["KeyCount"] == before

    limited = run_cli(f"s3://{http_bucket}/ch", "--subdir", "linux-64", *connection)

    assert limited.returncode == 0, limited.stderr
    summary = json.loads(limited.stdout)
    assert sorted(summary["subdirs"]) == ["linux-64", "noarch"]
    keys = {obj["Key"] for obj in http_s3_client.list_objects_v2(Bucket=http_bucket)["Contents"]}
    assert "ch/linux-64/repodata.json" in keys
    assert "ch/noarch/repodata.json" in keys
    assert "ch/win-64/repodata.json" not in keys
