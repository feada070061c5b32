"""The handler child: the package-event Lambda handler on one event, in the fresh interpreter this runs in,
so that its peak RSS is the handler's own (plus the imports a Lambda pays).

argv: the event file (JSON), the result file to write, "1" to profile the handler call with cProfile, the
memory size and the timeout in seconds the Lambda context reports. The result file gets one JSON object:
import_seconds, handler_seconds, rss_before_handler_mb, rss_after_handler_mb, response, requests (what the
handler's S3 client counted it sent), profile (cProfile's hot spots, or "").
"""

from __future__ import annotations

# Only what a fresh interpreter has loaded already, or what the handler's import would not load anyway
# (json): anything more would be imported before the clock starts and make the handler's import look cheaper.
import json
import os
import sys
import time

FUNCTION_NAME = "bench-package-events"


def high_water_mb() -> float:
    """This process's own peak RSS (VmHWM, in kB), a cross-check of what wait4 reports for it."""
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith("VmHWM:")) / 1024


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    # reindexer is imported here, after the clock started: the import (and wiring) is measured as the cost
    # a cold Lambda pays before its first event.
    from reindexer.handlers import package_events
    from reindexer.handlers.wiring import Wiring

    wiring = Wiring.from_environment(os.environ)
    handler = package_events.build_handler(wiring)
    imported = time.perf_counter()
    # After the measured part: the local context is no part of what a Lambda imports (S3Store is loaded).
    from reindexer.storage.s3 import S3Store
    from reindexer_cli.lambda_events import LocalLambdaContext

    args = sys.argv[1:] if argv is None else list(argv)
    event_path, result_path, profile = args[0], args[1], args[2] == "1"
    memory_mb, timeout = int(args[3]), float(args[4])
    with open(event_path) as file:
        event = json.load(file)
    bucket = json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["bucket"]["name"]

    rss_before = high_water_mb()
    context = LocalLambdaContext(function_name=FUNCTION_NAME, memory_limit_in_mb=memory_mb, timeout=timeout)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    response = handler(event, context)
    if profiler:
        profiler.disable()
    handler_seconds = time.perf_counter() - began
    store = wiring.store(bucket)  # the handler's own store: its client counted what it sent
    hot_spots = ""
    if profiler:
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        text.write("\n")
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        hot_spots = text.getvalue()
    result: dict[str, object] = {
        "import_seconds": imported - started,
        "handler_seconds": handler_seconds,
        "rss_before_handler_mb": rss_before,
        "rss_after_handler_mb": high_water_mb(),
        "response": response,
        "requests": dict(store.requests) if isinstance(store, S3Store) else {},
        "profile": hot_spots,
    }
    with open(result_path, "w") as file:
        json.dump(result, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
