"""The launcher: runs one command and reports its wall time, CPU time and its own peak RSS, as wait4 says.

wait4 in the benchmark's own process would not give a child's own peak RSS: Linux carries the RSS
high-water mark of the process that spawns across (v)fork and exec, so every child would report at least
that process's RSS (moto holds the whole bucket contents there). This small interpreter spawns the measured
command instead (bench.children.run_measured runs it); the figure then includes at most its own ~10 MB.

argv: the command as a JSON list, the files for its stdout and stderr, the timeout in seconds (the command
is killed then). Prints one JSON object: exit_code, seconds, cpu_seconds, peak_rss_mb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    command: list[str] = json.loads(args[0])
    stdout_path, stderr_path, timeout = args[1], args[2], float(args[3])
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        timer.cancel()
    print(
        json.dumps(
            {
                "exit_code": os.waitstatus_to_exitcode(status),
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
