"""Index benchmark: reindexer against rattler-index on generated channels.

The timing comparison runs on a real S3-compatible server, SeaweedFS (devtools.seaweedfs), at each size of
--sizes (default 1,000 and 10,000 packages): each tool indexes its own bucket holding an identical copy of
the channel, cold and then again with nothing changed, as a child process whose wall time, CPU time and
peak RSS are measured. The request counts come from a separate run on an in-process moto S3 that counts
requests by kind (--count-packages; moto is slow, so its timings are not the comparison). The handler's
import time is measured in fresh interpreters. The figures are printed and written to
.bench/index-bench.json; a missed target prints FAIL but the exit code stays 0 (this is a report).
The generated packages are kept under .bench/packages/ (bench.package_cache) for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import events, fanout, import_probe, worst_inputs
from bench.children import (
    ChildRun,
    last_json_line,
    module_command,
    non_negative_int,
    positive_int,
    run_child,
    run_measured,
)
from bench.counting_s3 import (
    DELETE,
    ERRORS,
    GET_OTHER,
    GET_PACKAGE,
    HEAD_OTHER,
    HEAD_PACKAGE,
    LIST,
    OTHER,
    PACKAGE_SUFFIXES,
    POST,
    PUT,
    CountingS3Server,
)
from bench.fast_upload import Uploader
from bench.package_cache import CACHE_ROOT, add_package_cache_argument, cached_channel
from bench.report import Check, add_results_argument, print_checks, print_table, tail, write_results
from bench.s3_access import REGION, UPLOAD_THREADS, child_env, s3_client
from bench.tools import rattler_index_command, rattler_index_finished, reindexer_command
from devtools.channel_bucket import upload_channel
from devtools.sample_channel import DEFAULT_SUBDIRS
from devtools.seaweedfs import SeaweedFS, weed_binary
from reindexer.contract import DEFAULT_READ_JOBS as DEFAULT_JOBS  # reindexer index --jobs

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_NAME = "index-bench.json"
REINDEXER_BUCKET = "bench-reindexer"
RATTLER_BUCKET = "bench-rattler"
CHANNEL = "channel"
DEFAULT_SIZES = (1_000, 10_000)
COUNT_PACKAGES = 500
# Rounds of the timing comparison: the median of three below this size; a larger channel's cold run is
# long enough to even out short disturbances by itself (and one round of 10,000 takes minutes).
SHORT_CHANNEL = 5_000
SHORT_REPEATS = 3
RUN_ORDER = (
    ("reindexer", "cold"),
    ("reindexer", "no-op"),
    ("rattler-index", "cold"),
    ("rattler-index", "no-op"),
)
# Targets: reindexer / rattler-index.
COLD_WALL_TARGET = 1.0
CPU_PER_PACKAGE_TARGET = 1.5
NOOP_WALL_TARGET = 0.5
IMPORT_TARGET_SECONDS = 0.25
IMPORT_RUNS = 7
HANDLER_MODULE = "reindexer.handlers.package_events"
TABLE_KINDS = (LIST, GET_PACKAGE, GET_OTHER, HEAD_PACKAGE, HEAD_OTHER, PUT, DELETE, POST, OTHER, ERRORS)
COMPARED_FIELDS = (
    "name",
    "version",
    "build",
    "build_number",
    "depends",
    "constrains",
    "md5",
    "sha256",
    "size",
)


@dataclass
class PhaseResult:
    """One tool's run on the counting moto server, with the requests that arrived by kind."""

    tool: str
    phase: str
    seconds: float
    cpu_seconds: float
    requests: dict[str, int]
    peak_rss_mb: float
    exit_code: int
    finished: bool
    stderr_tail: str = ""
    tool_report: dict[str, Any] | None = None


@dataclass
class Results:
    """The request-count run on moto."""

    packages: int
    jobs: int
    channel_bytes: int
    build_seconds: float
    upload_seconds: float
    server: str = "moto (in-process, counting requests)"
    total_seconds: float = 0.0  # this whole run, setup included
    phases: list[PhaseResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)


@dataclass
class TimedRun:
    """One tool's run on SeaweedFS: wall time, the child's own CPU time (user+system) and peak RSS."""

    tool: str
    phase: str
    seconds: float
    cpu_seconds: float
    cpu_ms_per_package: float
    peak_rss_mb: float
    exit_code: int
    finished: bool
    stderr_tail: str = ""
    tool_requests: dict[str, int] | None = None  # what reindexer's --json summary says it sent
    # Every round's wall s, CPU s and peak RSS MB; the figures above are the medians (RSS: the highest).
    rounds: list[dict[str, float]] = field(default_factory=list)


@dataclass
class SizeResults:
    """The timing comparison at one channel size on SeaweedFS."""

    packages: int
    jobs: int
    channel_bytes: int
    build_seconds: float
    built_now: int
    upload_seconds: float
    server: str
    rounds: int
    load_average: float  # this machine's 1-minute load average before the first round
    total_seconds: float = 0.0  # this whole size, setup included
    runs: list[TimedRun] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportTime:
    """`import reindexer.handlers.package_events` in fresh interpreters (after one uncounted warm-up)."""

    module: str
    runs: int
    median_seconds: float | None
    samples: list[float] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    total_seconds: float = 0.0


@dataclass
class IndexReport:
    reindexer_source: str
    sizes: list[SizeResults] = field(default_factory=list)
    import_time: ImportTime | None = None
    request_counts: Results | None = None
    total_seconds: float = 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=f"{__doc__}\nThe event-path benchmark (bench.events), the worst-input benchmark "
        "(bench.worst_inputs) and the fan-out\nbenchmark (bench.fanout: the fan-out full reindex against the "
        "single full-reindex function) run after it\nunless --only says.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        choices=("index", "events", "worst", "fanout"),
        help="run only the index, event-path, worst-input or fan-out benchmark (default: all four)",
    )
    parser.add_argument(
        "--sizes",
        type=positive_int,
        nargs="*",
        default=list(DEFAULT_SIZES),
        metavar="N",
        help="channel sizes of the timing comparison on SeaweedFS "
        f"(default {' '.join(str(size) for size in DEFAULT_SIZES)}; none skips it)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        help="rounds of the timing comparison at every size, medians reported (default "
        f"{SHORT_REPEATS} below {SHORT_CHANNEL} packages, else 1)",
    )
    parser.add_argument(
        "--count-packages",
        "--packages",
        dest="count_packages",
        type=int,
        default=COUNT_PACKAGES,
        metavar="N",
        help=f"channel size of the request-count run on moto (default {COUNT_PACKAGES}; 0 skips it)",
    )
    parser.add_argument(
        "--import-runs",
        type=non_negative_int,
        default=IMPORT_RUNS,
        help=f"fresh interpreters timing the handler's import (default {IMPORT_RUNS}; 0 skips it)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=DEFAULT_JOBS,
        help=f"reindexer --jobs (default {DEFAULT_JOBS}); rattler-index keeps its own default",
    )
    add_package_cache_argument(parser)
    add_results_argument(parser)
    events.add_arguments(parser)
    worst_inputs.add_arguments(parser)
    fanout.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.count_packages < 0:
        parser.error("--count-packages must be 0 or more")
    if args.only in (None, "index"):
        run_index(args)
    if args.only is None:
        print("\n" + "=" * 100 + "\n", flush=True)
    if args.only in (None, "events"):
        events.run(args)
    if args.only is None:
        print("\n" + "=" * 100 + "\n", flush=True)
    if args.only in (None, "worst"):
        worst_inputs.run(args)
    if args.only is None:
        print("\n" + "=" * 100 + "\n", flush=True)
    if args.only in (None, "fanout"):
        fanout.run(args)
    return 0


def run_index(args: argparse.Namespace) -> None:
    """The index benchmark: timings on SeaweedFS at every size, the handler's import, requests on moto."""
    started = time.perf_counter()
    report = IndexReport(reindexer_source=reindexer_source())
    print(f"reindexer source: {report.reindexer_source}", flush=True)
    if args.import_runs:
        report.import_time = measure_import(args.import_runs)
    for size in sorted(set(args.sizes)):
        repeats = args.repeats or (SHORT_REPEATS if size < SHORT_CHANNEL else 1)
        report.sizes.append(run_seaweedfs(size, args.jobs, repeats, args.package_cache))
    if args.count_packages:
        report.request_counts = run_counting(args.count_packages, args.jobs, args.package_cache)
    report.total_seconds = round(time.perf_counter() - started, 1)

    print_report(report)
    write_results(args.results_dir / RESULTS_NAME, asdict(report))


def run_seaweedfs(size: int, jobs: int, repeats: int, package_cache: Path = CACHE_ROOT) -> SizeResults:
    """Both tools, cold then no-op, each on its own copy of a `size`-package channel in SeaweedFS.

    Every round after the first deletes both indexes first (everything but the packages), so each round's
    first run is cold again; the tools take turns at going first.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="index-bench-") as scratch:
        channel_dir = Path(scratch) / "channel"
        print(f"\n[SeaweedFS, {size} packages] preparing the channel ...", flush=True)
        begun = time.perf_counter()
        files, built_now = cached_channel(size, channel_dir, cache_root=package_cache)
        build_seconds = time.perf_counter() - begun
        with SeaweedFS() as server:
            client = s3_client(server.endpoint_url, server.access_key, server.secret_key)
            print(f"uploading to two buckets on SeaweedFS at {server.endpoint_url} ...", flush=True)
            begun = time.perf_counter()
            for bucket in (REINDEXER_BUCKET, RATTLER_BUCKET):
                client.create_bucket(Bucket=bucket)
            uploader = Uploader(server.endpoint_url, server.access_key, server.secret_key, REGION)
            keys = [(f"{CHANNEL}/{path.parent.name}/{path.name}", path) for path in files]
            for bucket in (REINDEXER_BUCKET, RATTLER_BUCKET):
                uploader.put_files(bucket, keys, threads=UPLOAD_THREADS)
            results = SizeResults(
                packages=len(files),
                jobs=jobs,
                channel_bytes=sum(path.stat().st_size for path in files),
                build_seconds=round(build_seconds, 3),
                built_now=built_now,
                upload_seconds=round(time.perf_counter() - begun, 3),
                server=_seaweedfs_version(),
                rounds=repeats,
                load_average=round(os.getloadavg()[0], 2),
            )
            env = child_env(server.access_key, server.secret_key)
            commands = _commands(server.endpoint_url, jobs, server.access_key, server.secret_key)
            children: dict[tuple[str, str], list[ChildRun]] = {key: [] for key in RUN_ORDER}
            for round_number in range(repeats):
                if round_number:
                    for bucket in (REINDEXER_BUCKET, RATTLER_BUCKET):
                        _delete_index(client, bucket)
                order = RUN_ORDER if round_number % 2 == 0 else RUN_ORDER[2:] + RUN_ORDER[:2]
                for tool, phase in order:
                    print(f"running {tool} ({phase}), round {round_number + 1} of {repeats} ...", flush=True)
                    children[(tool, phase)].append(run_measured(commands[tool], env))
            results.runs = [
                _timed_run(tool, phase, children[(tool, phase)], len(files)) for tool, phase in RUN_ORDER
            ]
            results.comparison = compare_indexes(client, len(files))
    evaluate_size(results)
    results.total_seconds = round(time.perf_counter() - started, 1)
    return results


def _timed_run(tool: str, phase: str, children: list[ChildRun], packages: int) -> TimedRun:
    """One tool's phase over every round: median wall and CPU time, the highest peak RSS."""
    cpu_seconds = statistics.median(child.cpu_seconds for child in children)
    failed = next((child for child in children if not _finished(tool, child)), None)
    shown = failed or next((child for child in children if child.exit_code), children[-1])
    report = last_json_line(children[-1].stdout) if tool == "reindexer" else None
    return TimedRun(
        tool=tool,
        phase=phase,
        seconds=round(statistics.median(child.seconds for child in children), 3),
        cpu_seconds=round(cpu_seconds, 3),
        cpu_ms_per_package=round(cpu_seconds * 1000 / packages, 3),
        peak_rss_mb=round(max(child.peak_rss_mb for child in children), 1),
        exit_code=shown.exit_code,
        finished=failed is None,
        stderr_tail=tail(shown.stderr),
        tool_requests=report.get("requests") if report else None,
        rounds=[
            {
                "seconds": round(child.seconds, 3),
                "cpu_seconds": round(child.cpu_seconds, 3),
                "peak_rss_mb": round(child.peak_rss_mb, 1),
            }
            for child in children
        ],
    )


def _delete_index(client: S3Client, bucket: str) -> None:
    """Everything in the bucket but the packages: the index files and each tool's own state."""
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
        if not item["Key"].endswith(PACKAGE_SUFFIXES)
    ]
    for start in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True},
        )


def run_counting(size: int, jobs: int, package_cache: Path = CACHE_ROOT) -> Results:
    """Both tools, cold then no-op, on the counting moto server: the requests they send, by kind."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="index-bench-") as scratch:
        channel_dir = Path(scratch) / "channel"
        print(f"\n[moto request counts, {size} packages] preparing the channel ...", flush=True)
        begun = time.perf_counter()
        files, _ = cached_channel(size, channel_dir, cache_root=package_cache)
        build_seconds = time.perf_counter() - begun
        with CountingS3Server() as server:
            client = s3_client(server.endpoint_url)
            print(f"uploading to two buckets on moto at {server.endpoint_url} ...", flush=True)
            begun = time.perf_counter()
            for bucket in (REINDEXER_BUCKET, RATTLER_BUCKET):
                client.create_bucket(Bucket=bucket)
                upload_channel(client, bucket, CHANNEL, channel_dir, threads=UPLOAD_THREADS)
            results = Results(
                packages=len(files),
                jobs=jobs,
                channel_bytes=sum(path.stat().st_size for path in files),
                build_seconds=round(build_seconds, 3),
                upload_seconds=round(time.perf_counter() - begun, 3),
            )
            env = child_env()
            commands = _commands(server.endpoint_url, jobs)
            for tool, phase in RUN_ORDER:
                print(f"running {tool} ({phase}) ...", flush=True)
                server.counter.reset()
                child = run_measured(commands[tool], env)
                result = PhaseResult(
                    tool=tool,
                    phase=phase,
                    seconds=round(child.seconds, 3),
                    cpu_seconds=round(child.cpu_seconds, 3),
                    requests=server.counter.snapshot(),
                    peak_rss_mb=round(child.peak_rss_mb, 1),
                    exit_code=child.exit_code,
                    finished=_finished(tool, child),
                    stderr_tail=tail(child.stderr),
                )
                if tool == "reindexer":
                    result.tool_report = last_json_line(child.stdout)
                results.phases.append(result)
            server.counter.reset()
            results.comparison = compare_indexes(client, len(files))
    evaluate(results)
    results.total_seconds = round(time.perf_counter() - started, 1)
    return results


def measure_import(runs: int) -> ImportTime:
    """The median time of importing the package-event handler, each time in a fresh interpreter."""
    started = time.perf_counter()
    print(f"\ntiming `import {HANDLER_MODULE}` in {runs} fresh interpreters ...", flush=True)
    env = child_env()
    command = module_command(import_probe.__name__, HANDLER_MODULE)
    samples: list[float] = []
    failure = ""
    for attempt in range(runs + 1):
        child = run_child(command, env)
        figures = last_json_line(child.stdout)
        if child.exit_code != 0 or figures is None:
            failure = f"exit code {child.exit_code}: {tail(child.stderr, 1)}"
            break
        if attempt:  # the first one may compile bytecode
            samples.append(round(float(figures["seconds"]), 4))
    median = round(statistics.median(samples), 4) if samples and not failure else None
    result = ImportTime(
        module=HANDLER_MODULE,
        runs=len(samples),
        median_seconds=median,
        samples=samples,
        total_seconds=round(time.perf_counter() - started, 1),
    )
    result.checks.append(
        Check(
            f"handler import <= {IMPORT_TARGET_SECONDS} s (median of fresh interpreters)",
            median is not None and median <= IMPORT_TARGET_SECONDS,
            failure or f"median {median} s of {samples}",
        )
    )
    return result


def compare_indexes(client: S3Client, expected: int) -> dict[str, Any]:
    """Count the records each tool published and compare the fields both write for every package."""
    counts = {REINDEXER_BUCKET: 0, RATTLER_BUCKET: 0}
    differing: list[str] = []
    missing: list[str] = []
    for subdir in DEFAULT_SUBDIRS:
        records: dict[str, dict[str, dict[str, Any]]] = {}
        for bucket in counts:
            try:
                body = client.get_object(Bucket=bucket, Key=f"{CHANNEL}/{subdir}/repodata.json")[
                    "Body"
                ].read()
            except client.exceptions.NoSuchKey:
                records[bucket] = {}
                continue
            document = json.loads(body)
            records[bucket] = {**document.get("packages", {}), **document.get("packages.conda", {})}
            counts[bucket] += len(records[bucket])
        ours, theirs = records[REINDEXER_BUCKET], records[RATTLER_BUCKET]
        for filename in sorted(ours.keys() ^ theirs.keys()):
            missing.append(f"{subdir}/{filename}")
        for filename in sorted(ours.keys() & theirs.keys()):
            fields = [f for f in COMPARED_FIELDS if ours[filename].get(f) != theirs[filename].get(f)]
            if fields:
                differing.append(f"{subdir}/{filename}: {', '.join(fields)}")
    return {
        "expected": expected,
        "records": {"reindexer": counts[REINDEXER_BUCKET], "rattler-index": counts[RATTLER_BUCKET]},
        "in_one_index_only": missing[:20],
        "in_one_index_only_count": len(missing),
        "differing": differing[:20],
        "differing_count": len(differing),
    }


def evaluate_size(results: SizeResults) -> None:
    """The targets of the timing comparison at one size."""
    runs = {(run.tool, run.phase): run for run in results.runs}
    cold, noop = runs[("reindexer", "cold")], runs[("reindexer", "no-op")]
    rattler_cold, rattler_noop = runs[("rattler-index", "cold")], runs[("rattler-index", "no-op")]
    ours_rss = max(cold.peak_rss_mb, noop.peak_rss_mb)
    theirs_rss = max(rattler_cold.peak_rss_mb, rattler_noop.peak_rss_mb)
    ratios = results.ratios = {
        "cold_wall": _ratio(cold.seconds, rattler_cold.seconds),
        "cold_cpu_per_package": _ratio(cold.cpu_ms_per_package, rattler_cold.cpu_ms_per_package),
        "noop_wall": _ratio(noop.seconds, rattler_noop.seconds),
        "peak_rss": _ratio(ours_rss, theirs_rss),
    }
    results.checks = _completion_checks(results.runs)
    results.checks += [
        _ratio_check(
            "reindexer cold wall time <= rattler-index's (aim 0.8x)",
            ratios["cold_wall"],
            COLD_WALL_TARGET,
            f"{cold.seconds:.2f} s vs {rattler_cold.seconds:.2f} s",
        ),
        _ratio_check(
            f"reindexer cold CPU per package <= {CPU_PER_PACKAGE_TARGET}x rattler-index's",
            ratios["cold_cpu_per_package"],
            CPU_PER_PACKAGE_TARGET,
            f"{cold.cpu_ms_per_package:.2f} ms vs {rattler_cold.cpu_ms_per_package:.2f} ms",
        ),
        _ratio_check(
            f"reindexer no-op wall time <= {NOOP_WALL_TARGET}x rattler-index's",
            ratios["noop_wall"],
            NOOP_WALL_TARGET,
            f"{noop.seconds:.2f} s vs {rattler_noop.seconds:.2f} s",
        ),
        _ratio_check(
            "reindexer peak RSS <= rattler-index's (the higher of cold and no-op, each)",
            ratios["peak_rss"],
            1.0,
            f"{ours_rss:.0f} MB vs {theirs_rss:.0f} MB",
        ),
        _comparison_check(results.comparison, results.packages),
        Check(
            "nightly reconciliation with nothing changed (reindexer's no-op) writes nothing",
            noop.tool_requests is not None and _writes(noop.tool_requests) == 0,
            _request_summary(noop.tool_requests),
        ),
    ]


def evaluate(results: Results) -> None:
    """The targets of the request-count run (requests by kind; timings belong to the SeaweedFS runs)."""
    phases = {(p.tool, p.phase): p for p in results.phases}
    cold, noop = phases[("reindexer", "cold")], phases[("reindexer", "no-op")]
    count = results.packages
    results.checks = _completion_checks(results.phases)
    results.checks += [
        Check(
            "reindexer cold: one GET per package",
            cold.requests[GET_PACKAGE] == count,
            f"GET pkg {cold.requests[GET_PACKAGE]}, packages {count}",
        ),
        Check(
            "reindexer cold: no package HEAD",
            cold.requests[HEAD_PACKAGE] == 0,
            f"HEAD pkg {cold.requests[HEAD_PACKAGE]}",
        ),
        Check(
            "reindexer no-op: reads no package",
            noop.requests[GET_PACKAGE] == 0,
            f"GET pkg {noop.requests[GET_PACKAGE]}",
        ),
        Check(
            "reindexer no-op: writes nothing",
            noop.requests[PUT] == noop.requests[DELETE] == noop.requests[POST] == 0,
            f"PUT {noop.requests[PUT]}, DELETE {noop.requests[DELETE]}, POST {noop.requests[POST]}",
        ),
    ]
    for phase in (cold, noop):
        # The tool counts what it sent (retries included); the server counts what arrived.
        sent = sum((phase.tool_report or {}).get("requests", {}).values())
        arrived = sum(count for kind, count in phase.requests.items() if kind != ERRORS)
        results.checks.append(
            Check(
                f"reindexer {phase.phase}: its own request count matches the server's",
                sent == arrived,
                f"reindexer {sent}, server {arrived}",
            )
        )
    results.checks.append(_comparison_check(results.comparison, count))


def _completion_checks(runs: Sequence[PhaseResult | TimedRun]) -> list[Check]:
    return [
        Check(
            f"{run.tool} {run.phase} completes",
            run.finished,
            f"exit code {run.exit_code}"
            + ("; crashed at interpreter exit after finishing" if run.finished and run.exit_code else ""),
        )
        for run in runs
    ]


def _comparison_check(comparison: dict[str, Any], count: int) -> Check:
    records = comparison.get("records", {})
    return Check(
        "both indexes list every package, with the same fields",
        records.get("reindexer") == count
        and records.get("rattler-index") == count
        and comparison.get("differing_count") == 0
        and comparison.get("in_one_index_only_count") == 0,
        f"records {records}, differing {comparison.get('differing_count')}",
    )


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs > 0 and ours > 0 else None


def _ratio_check(name: str, ratio: float | None, limit: float, detail: str) -> Check:
    shown = "n/a" if ratio is None else f"{ratio:.2f}x"
    return Check(name, ratio is not None and ratio <= limit, f"{shown}, limit {limit}x: {detail}")


def print_report(report: IndexReport) -> None:
    checks: list[Check] = []
    print()
    print(f"reindexer source: {report.reindexer_source}")
    for size in report.sizes:
        print_size(size)
        checks += size.checks
    if report.import_time is not None:
        imported = report.import_time
        median = "n/a" if imported.median_seconds is None else f"{imported.median_seconds:.3f} s"
        print(f"\n=== handler import time: `import {imported.module}`, fresh interpreters ===")
        print(f"median {median} over {imported.runs} runs: {imported.samples}")
        print_checks(imported.checks)
        checks += imported.checks
    if report.request_counts is not None:
        print_request_counts(report.request_counts)
        checks += report.request_counts.checks
    if report.sizes:
        print(f"\n=== summary: reindexer / rattler-index on SeaweedFS ({report.sizes[0].server}) ===")
        headers = ["packages", "cold wall", "cold CPU/pkg", "no-op wall", "peak RSS"]
        rows = [
            [
                str(size.packages),
                *(
                    _shown(size.ratios.get(name))
                    for name in ("cold_wall", "cold_cpu_per_package", "noop_wall", "peak_rss")
                ),
            ]
            for size in report.sizes
        ]
        rows.append(
            [
                "target",
                f"<= {COLD_WALL_TARGET}x (aim 0.8x)",
                f"<= {CPU_PER_PACKAGE_TARGET}x",
                f"<= {NOOP_WALL_TARGET}x",
                "<= 1.0x",
            ]
        )
        print_table(headers, rows, left=range(1))
    failed = sum(not check.passed for check in checks)
    parts = [f"SeaweedFS {size.packages}: {size.total_seconds:.0f} s" for size in report.sizes]
    if report.import_time is not None:
        parts.append(f"import: {report.import_time.total_seconds:.0f} s")
    if report.request_counts is not None:
        parts.append(f"moto {report.request_counts.packages}: {report.request_counts.total_seconds:.0f} s")
    print(f"\nindex benchmark took {report.total_seconds:.0f} s ({', '.join(parts)})")
    print(f"{'ALL TARGETS PASS' if not failed else f'{failed} TARGET(S) FAIL'}")


def print_size(results: SizeResults) -> None:
    print(
        f"\n=== timings on SeaweedFS ({results.server}), {results.packages} packages "
        f"({results.channel_bytes / 1e6:.1f} MB) in {', '.join(DEFAULT_SUBDIRS)} ==="
    )
    built = f"{results.built_now} built now" if results.built_now else "all from .bench/packages"
    print(
        f"channel ready in {results.build_seconds:.1f} s ({built}), uploaded twice in "
        f"{results.upload_seconds:.1f} s; reindexer --jobs {results.jobs}, rattler-index its own default"
    )
    rounds = "1 round" if results.rounds == 1 else f"median of {results.rounds} rounds (peak RSS: highest)"
    print(f"{rounds}; load average before: {results.load_average:.2f} on {os.cpu_count()} cores")
    headers = ["tool", "phase", "wall s", "CPU s", "CPU ms/pkg", "peak RSS MB"]
    rows = [
        [
            run.tool,
            run.phase,
            f"{run.seconds:.2f}",
            f"{run.cpu_seconds:.2f}",
            f"{run.cpu_ms_per_package:.2f}",
            f"{run.peak_rss_mb:.0f}",
        ]
        for run in results.runs
    ]
    print_table(headers, rows, left=range(2))
    print("(CPU s: the tool's own user+system time, child process only; not the server's)")
    _print_failures(results.runs)
    ratios = results.ratios
    print(
        f"reindexer / rattler-index: cold wall {_shown(ratios.get('cold_wall'))}, "
        f"cold CPU per package {_shown(ratios.get('cold_cpu_per_package'))}, "
        f"no-op wall {_shown(ratios.get('noop_wall'))}, peak RSS {_shown(ratios.get('peak_rss'))}"
    )
    noop = next(run for run in results.runs if (run.tool, run.phase) == ("reindexer", "no-op"))
    print(
        f"nightly reconciliation (the no-op: a full run, shard clean-up included, nothing changed): "
        f"{_request_summary(noop.tool_requests)} in {noop.seconds:.2f} s wall, {noop.cpu_seconds:.2f} s CPU"
    )
    _print_comparison(results.comparison)
    print_checks(results.checks)


def _request_summary(requests: dict[str, int] | None) -> str:
    if requests is None:
        return "requests unknown (no --json summary)"
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(requests.items()))
    return f"{sum(requests.values())} requests ({kinds or 'none'})"


def _writes(requests: dict[str, int]) -> int:
    return sum(requests.get(kind, 0) for kind in ("PutObject", "DeleteObject", "CopyObject"))


def print_request_counts(results: Results) -> None:
    print(
        f"\n=== request counts on moto (in-process, counting by kind), {results.packages} packages "
        f"({results.channel_bytes / 1e6:.1f} MB) in {', '.join(DEFAULT_SUBDIRS)} ==="
    )
    print(
        "(moto is slow and serves from this process: its wall and CPU figures are no comparison; "
        "the timings are the SeaweedFS runs above)"
    )
    headers = ["tool", "phase", "wall s", "CPU s", *TABLE_KINDS, "RSS MB"]
    rows = [
        [
            phase.tool,
            phase.phase,
            f"{phase.seconds:.2f}",
            f"{phase.cpu_seconds:.2f}",
            *(str(phase.requests[kind]) for kind in TABLE_KINDS),
            f"{phase.peak_rss_mb:.0f}",
        ]
        for phase in results.phases
    ]
    print_table(headers, rows, left=range(2))
    print(
        f"(CPU s: the tool's own user+system time; {ERRORS}: responses with a 4xx/5xx status, "
        "also counted in their kind)"
    )
    _print_failures(results.phases)
    _print_comparison(results.comparison)
    print_checks(results.checks)


def _print_failures(runs: Sequence[PhaseResult | TimedRun]) -> None:
    for run in runs:
        if not run.finished and run.stderr_tail:
            print(f"\n{run.tool} {run.phase} exited {run.exit_code}; stderr ends with:\n{run.stderr_tail}")


def _print_comparison(comparison: dict[str, Any]) -> None:
    print(
        f"published records: {comparison['records']} (expected {comparison['expected']} each); "
        f"{comparison['differing_count']} differ in {'/'.join(COMPARED_FIELDS)}, "
        f"{comparison['in_one_index_only_count']} in one index only"
    )
    for text in comparison["differing"][:5] + comparison["in_one_index_only"][:5]:
        print(f"  {text}")


def _shown(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _finished(tool: str, child: ChildRun) -> bool:
    return rattler_index_finished(child) if tool == "rattler-index" else child.exit_code == 0


def _commands(
    endpoint_url: str, jobs: int, access_key: str = "testing", secret_key: str = "testing"
) -> dict[str, list[str]]:
    """Each tool's command line: reindexer's CLI, and py-rattler's index_s3 in a fresh interpreter."""
    return {
        "reindexer": [
            *reindexer_command(),
            "index",
            f"s3://{REINDEXER_BUCKET}/{CHANNEL}",
            "--endpoint-url",
            endpoint_url,
            "--force-path-style",
            "--region",
            REGION,
            "--json",
            "--jobs",
            str(jobs),
        ],
        "rattler-index": rattler_index_command(
            endpoint_url, f"s3://{RATTLER_BUCKET}/{CHANNEL}", access_key, secret_key
        ),
    }


def _seaweedfs_version() -> str:
    binary = weed_binary()
    if binary is None:
        return "SeaweedFS"
    try:
        output = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "SeaweedFS"
    words = output.split()
    # "version 8000GB 4.48 pypi linux amd64": the release is the first word with a dot.
    release = next((word for word in words[1:] if "." in word), None)
    return f"SeaweedFS {release}" if release else "SeaweedFS"


def reindexer_source() -> str:
    """The commit reindexer's code comes from, and whether lambdas/ has uncommitted changes on top."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "lambdas/reindexer"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not changed:
        return f"commit {commit}"
    return f"commit {commit} + uncommitted changes in {len(changed)} file(s) under lambdas/reindexer"


if __name__ == "__main__":
    sys.exit(main())
