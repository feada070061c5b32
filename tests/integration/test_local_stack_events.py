"""`reindexer local` prints the handlers' events for automation on stdout, one line each, as the deployed
functions put them on the bus: an upload prints `Package Indexed`, a bad upload `Package Rejected` with its
reason, a delete `Package Removed`, and each publication `Subdir Published`."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest

from reindexer_cli.embedded_s3 import free_port
from tests.support.archives import index_json, package_bytes

BUCKET = "events-channel"
CHANNEL = "team/dev"
SUBDIR = "linux-64"
READY_TIMEOUT = 60.0
LINE_TIMEOUT = 60.0


@dataclass
class LocalStack:
    """`reindexer local` in a child process; its stdout lines are read by a thread as they come."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        threading.Thread(target=read, name="local-stack-stdout", daemon=True).start()

    def wait_for(self, wanted: str, timeout: float = LINE_TIMEOUT) -> str:
        """The first line from now on that starts with `wanted`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"reindexer local exited; it printed: {self.seen}")
            self.seen.append(line)
            if line.startswith(wanted):
                return line
        raise AssertionError(f"no line starting with {wanted!r} within {timeout} s; printed: {self.seen}")


@pytest.fixture
def local_stack() -> Iterator[tuple[LocalStack, str]]:
    port = free_port()
    command = [sys.executable, "-m", "reindexer_cli.cli", "local", "--port", str(port), "--bucket", BUCKET]
    command += ["--channel", CHANNEL]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stack = LocalStack(process)
    stack.start_reading()
    try:
        endpoint = stack.wait_for("ready: ", READY_TIMEOUT).removeprefix("ready: ")
        yield stack, endpoint
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        assert process.returncode == 0, stack.seen


def test_uploads_and_deletes_print_the_events_the_functions_would_put_on_the_bus(
    local_stack: tuple[LocalStack, str],
) -> None:
    stack, endpoint = local_stack
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    good, bad = "good-1.0-h0_0.conda", "bad-1.0-h0_0.conda"
    where = f"{CHANNEL}/{SUBDIR}"

    client.put_object(Bucket=BUCKET, Key=f"{where}/{good}", Body=package_bytes(good, index_json("good")))
    assert stack.wait_for("Package Indexed ") == f"Package Indexed {where}/{good}"
    assert stack.wait_for("Subdir Published ").startswith(f"Subdir Published {where}: 1 added")

    client.put_object(Bucket=BUCKET, Key=f"{where}/{bad}", Body=b"not a conda package")
    rejected = stack.wait_for("Package Rejected ")
    assert rejected.startswith(f"Package Rejected {where}/{bad}: ")
    assert len(rejected) > len(f"Package Rejected {where}/{bad}: ")  # the reason

    client.delete_object(Bucket=BUCKET, Key=f"{where}/{good}")
    assert stack.wait_for("Package Removed ") == f"Package Removed {where}/{good}"
    assert stack.wait_for("Subdir Published ").startswith(
        f"Subdir Published {where}: 0 added, 0 updated, 1 removed"
    )
