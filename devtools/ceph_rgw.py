"""A real Ceph RADOS Gateway for tests: a one-node cluster (monitor, memstore OSD, radosgw) from Debian's Ceph
packages on 127.0.0.1, all state in a temporary folder, each daemon stopped by its process group id.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

from reindexer_cli.embedded_s3 import LOOPBACK, free_port, stop_process_group

ACCESS_KEY = "reindexer"
SECRET_KEY = "reindexer-secret"
START_TIMEOUT = 300.0
COMMAND_TIMEOUT = 120.0
CLUSTER = "reindexer"
MON_ID = "a"
RGW_NAME = "client.rgw"
APT_PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"
REQUIRED_PROGRAMS = ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "ceph", "radosgw-admin")


class CephNotInstalledError(RuntimeError):
    """One or more of the Ceph programs is not on PATH."""


def missing_programs() -> list[str]:
    return [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]


class CephRGW:
    """Monitor, one memstore OSD and radosgw on free loopback ports, no cephx, one S3 user."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.startup_seconds: float | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def pids(self) -> dict[str, int]:
        """Process id (also its process group id) of each running daemon: mon, osd, rgw."""
        return {name: process.pid for name, process in self._daemons.items()}

    @property
    def folder(self) -> Path:
        if self._folder is None:
            raise RuntimeError("the Ceph cluster is not started")
        return Path(self._folder.name)

    @property
    def config(self) -> Path:
        return self.folder / "ceph.conf"

    def start(self) -> CephRGW:
        missing = missing_programs()
        if missing:
            raise CephNotInstalledError(
                f"Ceph programs missing ({', '.join(missing)}): "
                f"apt-get install -y --no-install-recommends {APT_PACKAGES}"
            )
        began = time.monotonic()
        deadline = began + START_TIMEOUT
        self._folder = tempfile.TemporaryDirectory(prefix="reindexer-ceph-")
        try:
            self._bring_up(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        for name in reversed(list(self._daemons)):
            stop_process_group(self._daemons.pop(name))
        folder, self._folder = self._folder, None
        if folder is not None:
            folder.cleanup()

    def __enter__(self) -> CephRGW:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _bring_up(self, deadline: float) -> None:
        for folder in ("mon", "osd", "rgw", "run", "log", "crash"):
            (self.folder / folder).mkdir()
        fsid = str(uuid.uuid4())
        mon_v2, mon_v1 = free_port(), free_port()
        self.config.write_text(_ceph_conf(self.folder, fsid, mon_v2, mon_v1, self.port))
        monmap = self.folder / "monmap"
        mon_address = f"[v2:{LOOPBACK}:{mon_v2},v1:{LOOPBACK}:{mon_v1}]"
        options = ["--create", "--clobber", "--enable-all-features", "--set-min-mon-release", "pacific"]
        self._run("monmaptool", *options, "--fsid", fsid, "--addv", MON_ID, mon_address, str(monmap))
        self._run("ceph-mon", "--mkfs", "-i", MON_ID, "--monmap", str(monmap))
        self._spawn("mon", "ceph-mon", "-f", "-i", MON_ID)

        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph_until_ok(deadline, "osd", "new", osd_uuid).strip()
        (self.folder / "osd" / f"{CLUSTER}-{osd_id}").mkdir()
        self._run("ceph-osd", "--mkfs", "-i", osd_id, "--osd-uuid", osd_uuid)
        self._spawn("osd", "ceph-osd", "-f", "-i", osd_id)
        self._wait(deadline, "the OSD to be up", self._osd_up)

        self._spawn("rgw", "radosgw", "-f", "-n", RGW_NAME)
        self._wait(deadline, f"radosgw to answer on {self.endpoint_url}", self._rgw_answers)
        user = ["--uid", ACCESS_KEY, "--display-name", ACCESS_KEY, "--access-key", ACCESS_KEY]
        self._run("radosgw-admin", "user", "create", *user, "--secret-key", SECRET_KEY)

    def _ceph_arguments(self) -> list[str]:
        return ["--cluster", CLUSTER, "-c", str(self.config)]

    def _run(self, program: str, *arguments: str, timeout: float = COMMAND_TIMEOUT) -> str:
        command = [program, *self._ceph_arguments(), *arguments]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, cwd=self.folder, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"{' '.join(command)} took over {timeout} s\n{self._logs_tail()}") from error
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
                f"\n{self._logs_tail()}"
            )
        return done.stdout

    def _ceph_until_ok(self, deadline: float, *arguments: str) -> str:
        """A `ceph` command, retried until the monitor accepts it (it answers once it has formed a quorum)."""
        while True:
            self._check_daemons()
            try:
                return self._run("ceph", "--connect-timeout", "10", *arguments, timeout=30)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _spawn(self, name: str, program: str, *arguments: str) -> None:
        with (self.folder / "log" / f"{name}.out").open("wb") as output:
            self._daemons[name] = subprocess.Popen(
                [program, *self._ceph_arguments(), *arguments],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.folder,
            )

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            self._check_daemons()
            if ready():
                return
            time.sleep(1)
        raise RuntimeError(f"timed out after {START_TIMEOUT} s waiting for {what}\n{self._logs_tail()}")

    def _check_daemons(self) -> None:
        for name, process in self._daemons.items():
            if process.poll() is not None:
                raise RuntimeError(f"ceph {name} exited with {process.returncode}\n{self._logs_tail()}")

    def _osd_up(self) -> bool:
        try:
            dump = json.loads(self._run("ceph", "--connect-timeout", "10", "osd", "dump", "-f", "json"))
        except (RuntimeError, ValueError):
            return False
        return any(osd.get("up") == 1 for osd in dump.get("osds", []))

    def _rgw_answers(self) -> bool:
        # radosgw answers an anonymous ListBuckets (200, empty) once its pools exist and it serves requests.
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=2):
                return True
        except urllib.error.HTTPError as error:
            return error.code in (200, 403)
        except OSError:
            return False

    def _logs_tail(self, characters: int = 1500) -> str:
        if self._folder is None:
            return ""
        tails = []
        for log in sorted((self.folder / "log").glob("*")):
            text = log.read_text(errors="replace").strip()
            if text:
                tails.append(f"--- {log.name} (last {characters} characters)\n{text[-characters:]}")
        return "\n".join(tails)


def _ceph_conf(folder: Path, fsid: str, mon_v2: int, mon_v1: int, rgw_port: int) -> str:
    return f"""\
[global]
fsid = {fsid}
mon host = [v2:{LOOPBACK}:{mon_v2},v1:{LOOPBACK}:{mon_v1}]
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# Daemons (radosgw) otherwise insist on "secure" mode to the monitor, which needs cephx.
ms mon client mode = crc
client mount timeout = 60
run dir = {folder}/run
log file = {folder}/log/$cluster-$name.log
pid file = {folder}/run/$cluster-$name.pid
crash dir = {folder}/crash
keyring = {folder}/$cluster.$name.keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 1

[mon]
mon data = {folder}/mon/$cluster-$id

[osd]
public addr = {LOOPBACK}
cluster addr = {LOOPBACK}
osd data = {folder}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {1024**3}
osd memory target = {896 * 1024**2}
osd crush initial weight = 1
osd op num shards = 1

[{RGW_NAME}]
rgw frontends = beast endpoint={LOOPBACK}:{rgw_port}
rgw data = {folder}/rgw
rgw thread pool size = 32
"""


def _run_command(command: list[str]) -> int:
    """Start the cluster, run `command` with the REINDEXER_TEST_S3_* variables, stop it, return its code."""

    def stop_on_sigterm(number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        with CephRGW() as cluster:
            print(
                f"ceph_rgw: radosgw on {cluster.endpoint_url} after {cluster.startup_seconds:.0f} s "
                f"(pids {cluster.pids})",
                file=sys.stderr,
                flush=True,
            )
            environment = {
                **os.environ,
                "REINDEXER_TEST_S3_ENDPOINT": cluster.endpoint_url,
                "REINDEXER_TEST_S3_ACCESS_KEY": cluster.access_key,
                "REINDEXER_TEST_S3_SECRET_KEY": cluster.secret_key,
                "REINDEXER_TEST_S3_NAME": "ceph",
            }
            return subprocess.run(command, env=environment, check=False).returncode
    except CephNotInstalledError as error:
        print(f"ceph_rgw: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.ceph_rgw", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="start the cluster, run COMMAND against it, stop the cluster")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("run needs a command after --")
    return _run_command(command)


if __name__ == "__main__":
    sys.exit(main())
