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

CHILD_TIMEOUT = 1800.0


@dataclass
class ChildRun:
    exit_code: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str


# wait4 in this process would not give a child's own peak RSS: Linux carries the RSS high-water mark of
# the process that spawns across (v)fork and exec, so every child would report at least this process's RSS
# (moto holds the whole bucket contents here). A small launcher interpreter spawns the measured command
# instead and reports what wait4 says of it; the figure then includes at most the launcher's ~10 MB.
LAUNCHER_SCRIPT = """
import json, os, subprocess, sys, threading, time
command, stdout_path, stderr_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
timeout = float(sys.argv[4])
with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    timer.cancel()
print(json.dumps({
    "exit_code": os.waitstatus_to_exitcode(status),
    "seconds": seconds,
    "cpu_seconds": usage.ru_utime + usage.ru_stime,
    "peak_rss_mb": usage.ru_maxrss / 1024,
}))
"""


def run_child(command: Sequence[str], env: dict[str, str], timeout: float = CHILD_TIMEOUT) -> ChildRun:
    """Run a command to completion; its wall time and its own peak RSS (from wait4, not RUSAGE_CHILDREN)."""
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
    """Run a command to completion through the launcher: its wall time and its own peak RSS (wait4)."""
    with tempfile.TemporaryDirectory(prefix="bench-child-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        launcher = [sys.executable, "-c", LAUNCHER_SCRIPT, json.dumps(list(command)), str(out), str(err)]
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
