"""An embedded S3 endpoint for local use and tests: moto's server in a child process, on loopback only.

moto comes with the `local` extra (pip install 'reindexer[local]'); only the child process imports it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """End a server started with start_new_session=True, and whatever it started: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class EmbeddedS3:
    """A moto server on 127.0.0.1; start() waits until it answers, stop() ends it by its process id."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> EmbeddedS3:
        if importlib.util.find_spec("moto") is None:
            raise RuntimeError(
                "the embedded S3 server needs moto, which is not installed: pip install 'reindexer[local]'"
            )
        command = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the embedded S3 server exited at start (is port {self.port} free?)")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the embedded S3 server did not answer on {self.endpoint_url} within {START_TIMEOUT} s"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, timeout=10)

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
