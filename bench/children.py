"""Running a benchmarked command as a child process: its wall time, CPU time and its own peak RSS."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import launcher as launcher_module

CHILD_TIMEOUT = 1800.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ChildRun:
    exit_code: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def module_command(module: str, *args: str) -> list[str]:
    """A module of this project (bench.launcher, ...) run as a program by this Python."""
    return [sys.executable, "-m", module, *args]


def with_project_path(env: dict[str, str]) -> dict[str, str]:
    """The environment with the project's root first on PYTHONPATH, so that a child can run `-m bench.…`
    from any working folder (and pass that on to the command it runs)."""
    paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    if str(PROJECT_ROOT) in paths:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *paths])}


def run_child(command: Sequence[str], env: dict[str, str], timeout: float = CHILD_TIMEOUT) -> ChildRun:
    """Run a command to completion; its wall time and its own peak RSS (from wait4, not RUSAGE_CHILDREN).

    The project's root is added to the child's PYTHONPATH (with_project_path)."""
    env = with_project_path(env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        reaped = threading.Event()
        lock = threading.Lock()

        def kill_if_running() -> None:
            with lock:
                if not reaped.is_set():
                    process.kill()

        timer = threading.Timer(timeout, kill_if_running)
        timer.start()
        try:
            # wait4 rather than Popen.wait: it returns this child's own rusage, peak RSS included.
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            with lock:
                reaped.set()
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return ChildRun(
            exit_code=process.returncode,
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def run_measured(command: Sequence[str], env: dict[str, str], timeout: float = CHILD_TIMEOUT) -> ChildRun:
    """Run a command to completion through the launcher (bench.launcher): its wall time and its own peak
    RSS (wait4). The command inherits the launcher's environment, `env` with the project on PYTHONPATH."""
    with tempfile.TemporaryDirectory(prefix="bench-child-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        launcher = module_command(launcher_module.__name__, json.dumps(list(command)), str(out), str(err))
        launched = run_child([*launcher, str(timeout)], env, timeout=timeout + 60)
        stdout = out.read_text(errors="replace") if out.exists() else ""
        stderr = err.read_text(errors="replace") if err.exists() else ""
        figures = last_json_line(launched.stdout)
        if launched.exit_code != 0 or figures is None:
            return ChildRun(
                exit_code=launched.exit_code or -1,
                seconds=launched.seconds,
                cpu_seconds=launched.cpu_seconds,
                peak_rss_mb=0.0,
                stdout=stdout,
                stderr=stderr + launched.stderr,
            )
        return ChildRun(
            exit_code=int(figures["exit_code"]),
            seconds=float(figures["seconds"]),
            cpu_seconds=float(figures["cpu_seconds"]),
            peak_rss_mb=float(figures["peak_rss_mb"]),
            stdout=stdout,
            stderr=stderr,
        )


def last_json_line(text: str) -> dict[str, Any] | None:
    """The JSON object a child printed last, if any."""
    try:
        value = json.loads(text.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
