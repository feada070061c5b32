"""Fan-out benchmark: the fan-out full reindex (issue 13) against the single full-reindex function, on the
same channel (--fanout-packages, default 10,000 packages) in two buckets of one SeaweedFS server.

The single path is the full-reindex handler, invoked again with a 900-second context (the function's default
timeout) until its answer says complete. The fan-out path is the stack's synthesized state machine run by
the local driver (reindexer_cli.state_machine): plan, a Distributed Map of read batches at the synthesized
MaxConcurrency and batch size, but at most --fanout-threads batches at once on this machine, then commit; the
three step handlers run in-process. Each path runs in its own child (bench.fanout_child) measured by
bench.children.run_measured (wall time, CPU time, peak RSS). The S3 requests are counted client-side by our
S3Store in the child (SeaweedFS does not count them), the ItemReader's GET of the manifest included. Both
indexes must end with the uploaded package set. The figures are printed and written to
.bench/fanout-bench.json; a missed expectation prints FAIL but the exit code stays 0 (this is a report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import fanout_child
from bench.children import module_command, non_negative_int, positive_int, run_child, run_measured
from bench.fanout_child import DELETE, GET_OTHER, GET_PACKAGE, HEAD, KINDS, LIST, OTHER, PUT
from bench.fast_upload import Uploader
from bench.package_cache import add_package_cache_argument, cached_channel
from bench.report import Check, add_results_argument, print_checks, print_table, tail, write_results
from bench.s3_access import REGION, UPLOAD_THREADS, child_env, s3_client
from devtools.sample_channel import DEFAULT_SUBDIRS
from devtools.seaweedfs import SeaweedFS, weed_binary
from reindexer.contract import (
    BUCKET_VARIABLE,
    DEFAULT_READ_JOBS,
    JOBS_VARIABLE,
    REPODATA_JSON,
    RUNS_FOLDER,
    join_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RESULTS_NAME = "fanout-bench.json"
SINGLE_BUCKET = "fanout-single"
FANOUT_BUCKET = "fanout-steps"
CHANNEL = "channel"
DEFAULT_PACKAGES = 10_000
DEFAULT_THREADS = 4
# The reindex functions' defaults (infra.settings: reindex_function_timeout, reindex_function_memory).
FUNCTION_TIMEOUT = 900.0
FUNCTION_MEMORY_MB = 2048
# The single function is invoked again while it answers "complete": false, at most this many times.
MAX_SINGLE_INVOCATIONS = 20
EXECUTION = "bench"
SYNTH_TIMEOUT = 300.0
TABLE_KINDS = (LIST, GET_PACKAGE, GET_OTHER, HEAD, PUT, DELETE, OTHER)
REQUEST_COUNTING = (
    "client-side: every request our S3Store sent, once per call (its on_request hook; a listing counts its "
    "pages of 1,000 keys, as S3 pages;\n transport retries inside the client are not seen, none are expected "
    "on loopback), plus the ItemReader's GET of the manifest"
)


@dataclass
class PathRun:
    """One path's child: its wall time, CPU time (user+system) and peak RSS, and what it reported."""

    path: str
    invocations: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    exit_code: int
    requests: dict[str, int]
    request_total: int
    report: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""


@dataclass
class BatchFigures:
    """What the README's AWS estimate needs, from the fan-out run at this size."""

    batches: int
    mean_batch_items: float
    mean_batch_seconds: float
    read_ms_per_package: float | None  # a batch's wall time per package it read, mean over batches
    read_cpu_ms_per_package: float | None  # this process's CPU during the map, per package read
    plan_seconds: float | None
    plan_cpu_seconds: float | None
    map_seconds: float | None  # from the plan's end to the commit's start: every batch, the ItemReader's GET
    commit_seconds: float | None
    commit_cpu_seconds: float | None
    manifest_bytes: int | None
    manifest_bytes_per_package: float | None
    result_objects: int | None
    result_bytes: int | None
    result_bytes_per_package: float | None


@dataclass
class FanoutResults:
    packages: int
    channel_bytes: int
    build_seconds: float
    built_now: int
    upload_seconds: float
    synth_seconds: float
    server: str
    threads: int
    max_concurrency: int | None
    batch_items: int | None
    read_jobs: int
    function_timeout: float
    load_average: float
    request_counting: str = REQUEST_COUNTING
    runs: list[PathRun] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    batch_figures: BatchFigures | None = None
    comparison: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    total_seconds: float = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fan-out benchmark")
    group.add_argument(
        "--fanout-packages",
        type=non_negative_int,
        default=DEFAULT_PACKAGES,
        metavar="N",
        help=f"channel size of the fan-out benchmark (default {DEFAULT_PACKAGES}; 0 skips it)",
    )
    group.add_argument(
        "--fanout-threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        metavar="N",
        help="read batches the local driver runs at once (the synthesized MaxConcurrency stays; "
        f"default {DEFAULT_THREADS})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_package_cache_argument(parser)
    add_results_argument(parser)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if not args.fanout_packages:
        print("fan-out benchmark skipped (--fanout-packages 0)")
        return 0
    started = time.perf_counter()
    size, threads = args.fanout_packages, args.fanout_threads
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        print(
            f"\n[fan-out against the single function, {size} packages] preparing the channel ...", flush=True
        )
        begun = time.perf_counter()
        files, built_now = cached_channel(size, scratch / "channel", cache_root=args.package_cache)
        build_seconds = time.perf_counter() - begun

        print("synthesizing the stack's state machine ...", flush=True)
        begun = time.perf_counter()
        machine = synthesize(scratch / "machine.json")
        synth_seconds = time.perf_counter() - begun
        read_map = map_state(machine["definition"])

        with SeaweedFS() as server:
            client = s3_client(server.endpoint_url, server.access_key, server.secret_key)
            print(f"uploading to two buckets on SeaweedFS at {server.endpoint_url} ...", flush=True)
            begun = time.perf_counter()
            uploader = Uploader(server.endpoint_url, server.access_key, server.secret_key, REGION)
            keys = [(join_key(CHANNEL, path.parent.name, path.name), path) for path in files]
            for bucket in (SINGLE_BUCKET, FANOUT_BUCKET):
                client.create_bucket(Bucket=bucket)
                uploader.put_files(bucket, keys, threads=UPLOAD_THREADS)
            results = FanoutResults(
                packages=len(files),
                channel_bytes=sum(path.stat().st_size for path in files),
                build_seconds=round(build_seconds, 3),
                built_now=built_now,
                upload_seconds=round(time.perf_counter() - begun, 3),
                synth_seconds=round(synth_seconds, 3),
                server=seaweedfs_version(),
                threads=threads,
                max_concurrency=read_map.get("MaxConcurrency"),
                batch_items=read_map.get("ItemBatcher", {}).get("MaxItemsPerBatch"),
                read_jobs=DEFAULT_READ_JOBS,
                function_timeout=FUNCTION_TIMEOUT,
                load_average=round(os.getloadavg()[0], 2),
            )
            env = child_env(server.access_key, server.secret_key)
            env.update(
                {
                    "AWS_ENDPOINT_URL_S3": server.endpoint_url,
                    "AWS_REGION": REGION,
                    JOBS_VARIABLE: str(DEFAULT_READ_JOBS),
                    "POWERTOOLS_TRACE_DISABLED": "true",
                    "POWERTOOLS_METRICS_NAMESPACE": "Bench",
                }
            )
            base = {
                "channel": CHANNEL,
                "timeout": FUNCTION_TIMEOUT,
                "memory_mb": FUNCTION_MEMORY_MB,
            }
            print("single function: the full-reindex handler until it answers complete ...", flush=True)
            single = run_path(
                "single",
                {**base, "bucket": SINGLE_BUCKET, "max_invocations": MAX_SINGLE_INVOCATIONS},
                {**env, BUCKET_VARIABLE: SINGLE_BUCKET},
                scratch,
            )
            print(f"fan-out: the state machine, {threads} read batches at once ...", flush=True)
            fanout = run_path(
                "fanout",
                {**base, "bucket": FANOUT_BUCKET, **machine, "threads": threads, "execution": EXECUTION},
                {**env, BUCKET_VARIABLE: FANOUT_BUCKET},
                scratch,
            )
            results.runs = [single, fanout]
            results.comparison = compare_indexes(client, files)
    evaluate(results)
    results.total_seconds = round(time.perf_counter() - started, 1)
    print_results(results)
    write_results(args.results_dir / RESULTS_NAME, asdict(results))
    return 0


def synthesize(output: Path) -> dict[str, Any]:
    """The stack's state machine (definition, handler of each placeholder function ARN), synthesized in a
    child so that CDK's Node.js runtime does not stay beside this process."""
    env = {**child_env(), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    child = run_child(module_command(fanout_child.__name__, "synth", str(output)), env, timeout=SYNTH_TIMEOUT)
    if child.exit_code != 0 or not output.exists():
        raise RuntimeError(
            f"synthesizing the stack failed (exit code {child.exit_code}):\n{tail(child.stderr)}"
        )
    machine: dict[str, Any] = json.loads(output.read_text())
    return machine


def map_state(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition's Distributed Map state (the read batches)."""
    for state in definition["States"].values():
        if state["Type"] == "Map":
            found: dict[str, Any] = state
            return found
    raise RuntimeError("the synthesized state machine has no Map state")


def run_path(mode: str, config: dict[str, Any], env: dict[str, str], scratch: Path) -> PathRun:
    """One path in a measured child: its figures and the report it wrote."""
    config_file, result_file = scratch / f"{mode}-config.json", scratch / f"{mode}-result.json"
    config_file.write_text(json.dumps(config))
    command = module_command(fanout_child.__name__, mode, str(config_file), str(result_file))
    child = run_measured(command, env)
    report: dict[str, Any] = {}
    if child.exit_code == 0 and result_file.exists():
        report = json.loads(result_file.read_text())
    requests = report.get("requests", {}).get("all", {kind: 0 for kind in KINDS})
    return PathRun(
        path="single function" if mode == "single" else "fan-out",
        invocations=len(report.get("invocations", [])),
        seconds=round(child.seconds, 3),
        cpu_seconds=round(child.cpu_seconds, 3),
        peak_rss_mb=round(child.peak_rss_mb, 1),
        exit_code=child.exit_code,
        requests=requests,
        request_total=sum(requests.values()),
        report=report,
        stderr_tail=tail(child.stderr) if child.exit_code else "",
    )


def compare_indexes(client: S3Client, files: Sequence[Path]) -> dict[str, Any]:
    """Each bucket's published package set against the uploaded one, and the records both publish."""
    expected = {f"{path.parent.name}/{path.name}" for path in files}
    published: dict[str, dict[str, dict[str, Any]]] = {SINGLE_BUCKET: {}, FANOUT_BUCKET: {}}
    for bucket, records in published.items():
        for subdir in DEFAULT_SUBDIRS:
            try:
                body = client.get_object(Bucket=bucket, Key=join_key(CHANNEL, subdir, REPODATA_JSON))["Body"]
            except client.exceptions.NoSuchKey:
                continue
            document = json.loads(body.read())
            for name, record in {
                **document.get("packages", {}),
                **document.get("packages.conda", {}),
            }.items():
                records[f"{subdir}/{name}"] = record
    single, fanout = published[SINGLE_BUCKET], published[FANOUT_BUCKET]
    in_one_only = sorted(single.keys() ^ fanout.keys())
    differing = sorted(name for name in single.keys() & fanout.keys() if single[name] != fanout[name])
    left = client.list_objects_v2(Bucket=FANOUT_BUCKET, Prefix=f"{join_key(CHANNEL, RUNS_FOLDER)}/")
    return {
        "expected": len(expected),
        "records": {"single function": len(single), "fan-out": len(fanout)},
        "single_matches_upload": single.keys() == expected,
        "fanout_matches_upload": fanout.keys() == expected,
        "in_one_index_only": in_one_only[:20],
        "in_one_index_only_count": len(in_one_only),
        "differing_records": differing[:20],
        "differing_records_count": len(differing),
        "run_objects_left": [item["Key"] for item in left.get("Contents", [])][:20],
    }


def evaluate(results: FanoutResults) -> None:
    single, fanout = results.runs
    report = fanout.report
    results.ratios = {
        "wall": _ratio(fanout.seconds, single.seconds),
        "cpu": _ratio(fanout.cpu_seconds, single.cpu_seconds),
        "requests": _ratio(fanout.request_total, single.request_total),
        "peak_rss": _ratio(fanout.peak_rss_mb, single.peak_rss_mb),
    }
    results.batch_figures = batch_figures(report, results.packages)
    (map_run,) = report.get("map_runs") or [{}]
    batches = -(-results.packages // (results.batch_items or 1))
    expected_concurrency = min(results.threads, results.max_concurrency or results.threads, batches)
    comparison = results.comparison
    single_report = single.report
    results.checks = [
        Check(
            "single function: completes within its invocations",
            single.exit_code == 0 and single_report.get("complete") is True,
            f"exit code {single.exit_code}, {single.invocations} invocation(s), "
            f"complete {single_report.get('complete')}, error {single_report.get('error')}",
        ),
        Check(
            "fan-out: the execution succeeds and says complete",
            fanout.exit_code == 0 and report.get("status") == "SUCCEEDED" and report.get("complete") is True,
            f"exit code {fanout.exit_code}, status {report.get('status')}, error {report.get('error')}, "
            f"cause {str(report.get('cause'))[:300]}",
        ),
        Check(
            f"fan-out: {batches} batches of at most {results.batch_items}, every one succeeded, none retried",
            map_run.get("batches") == batches
            and map_run.get("succeeded") == batches
            and not report.get("retries"),
            f"batches {map_run.get('batches')}, succeeded {map_run.get('succeeded')}, "
            f"retries {report.get('retries')}",
        ),
        Check(
            f"fan-out: {_batches(expected_concurrency)} ran at once "
            f"(MaxConcurrency {results.max_concurrency}, {results.threads} driver threads)",
            map_run.get("max_concurrency") == expected_concurrency,
            f"max concurrency observed {map_run.get('max_concurrency')}",
        ),
        Check(
            "both paths read every package exactly once",
            single.requests.get(GET_PACKAGE) == fanout.requests.get(GET_PACKAGE) == results.packages,
            f"GET pkg: single {single.requests.get(GET_PACKAGE)}, "
            f"fan-out {fanout.requests.get(GET_PACKAGE)}, packages {results.packages}",
        ),
        Check(
            "both indexes list exactly the uploaded packages (the same package sets)",
            comparison.get("single_matches_upload") is True
            and comparison.get("fanout_matches_upload") is True,
            f"records {comparison.get('records')}, expected {comparison.get('expected')} each, "
            f"{comparison.get('in_one_index_only_count')} in one index only",
        ),
        Check(
            "both indexes publish the same records",
            comparison.get("differing_records_count") == 0,
            f"{comparison.get('differing_records_count')} differ",
        ),
        Check(
            "fan-out: the commit deleted the run's objects",
            not comparison.get("run_objects_left"),
            f"left: {comparison.get('run_objects_left')}",
        ),
    ]


def batch_figures(report: dict[str, Any], packages: int) -> BatchFigures:
    invocations = report.get("invocations", [])
    reads = [
        call for call in invocations if call["step"] == "read" and call["error"] is None and call["items"]
    ]
    plans = [call for call in invocations if call["step"] == "plan"]
    commits = [call for call in invocations if call["step"] == "commit"]
    run_objects = report.get("run_objects") or {}
    map_cpu = report.get("map_cpu_seconds")
    read_packages = sum(call["items"] for call in reads)

    def first(calls: list[dict[str, Any]], name: str) -> float | None:
        return None if not calls or calls[0][name] is None else round(calls[0][name], 3)

    def per_package(value: int | None) -> float | None:
        return None if value is None or not packages else round(value / packages, 1)

    return BatchFigures(
        batches=len(reads),
        mean_batch_items=round(read_packages / len(reads), 1) if reads else 0.0,
        mean_batch_seconds=round(sum(call["seconds"] for call in reads) / len(reads), 3) if reads else 0.0,
        read_ms_per_package=(
            round(sum(call["seconds"] * 1000 / call["items"] for call in reads) / len(reads), 2)
            if reads
            else None
        ),
        read_cpu_ms_per_package=(
            round(map_cpu * 1000 / read_packages, 2) if map_cpu is not None and read_packages else None
        ),
        plan_seconds=first(plans, "seconds"),
        plan_cpu_seconds=first(plans, "cpu_seconds"),
        map_seconds=None if report.get("map_seconds") is None else round(report["map_seconds"], 3),
        commit_seconds=first(commits, "seconds"),
        commit_cpu_seconds=first(commits, "cpu_seconds"),
        manifest_bytes=run_objects.get("manifest_bytes"),
        manifest_bytes_per_package=per_package(run_objects.get("manifest_bytes")),
        result_objects=run_objects.get("result_objects"),
        result_bytes=run_objects.get("result_bytes"),
        result_bytes_per_package=per_package(run_objects.get("result_bytes")),
    )


def print_results(results: FanoutResults) -> None:
    single, fanout = results.runs
    print(
        f"\n=== fan-out full reindex against the single full-reindex function: {results.packages} packages "
        f"({results.channel_bytes / 1e6:.1f} MB) in {', '.join(DEFAULT_SUBDIRS)}, on {results.server} ==="
    )
    built = f"{results.built_now} built now" if results.built_now else "all from .bench/packages"
    print(
        f"channel ready in {results.build_seconds:.1f} s ({built}), uploaded to two buckets in "
        f"{results.upload_seconds:.1f} s; state machine synthesized in {results.synth_seconds:.1f} s"
    )
    print(
        f"synthesized: MaxConcurrency {results.max_concurrency}, MaxItemsPerBatch {results.batch_items}; "
        f"local driver: {_batches(results.threads)} at once (--fanout-threads); every invocation's context: "
        f"{results.function_timeout:.0f} s, {FUNCTION_MEMORY_MB} MB; READ_JOBS {results.read_jobs} (default)"
    )
    print(f"load average before: {results.load_average:.2f} on {os.cpu_count()} cores")
    at_once = _batches(results.threads)
    invoked = fanout.report.get("invoked", {})
    steps = ", ".join(f"{invoked.get(step, 0)} {step}" for step in ("plan", "read", "commit"))
    headers = ["path", "invocations", "wall s", "CPU s", "peak RSS MB", *TABLE_KINDS, "total"]
    rows = [
        [
            run.path,
            str(run.invocations) if run is single else f"{run.invocations} ({steps})",
            f"{run.seconds:.2f}",
            f"{run.cpu_seconds:.2f}",
            f"{run.peak_rss_mb:.0f}",
            *(str(run.requests.get(kind, 0)) for kind in TABLE_KINDS),
            str(run.request_total),
        ]
        for run in results.runs
    ]
    run_objects = fanout.report.get("requests", {}).get("run_objects", {})
    rows.append(
        [
            "  of which run objects",
            "",
            "",
            "",
            "",
            *(str(run_objects.get(kind, 0)) for kind in TABLE_KINDS),
            str(sum(run_objects.values())),
        ]
    )
    ratios = results.ratios
    rows.append(
        [
            "fan-out / single",
            "",
            _shown(ratios.get("wall")),
            _shown(ratios.get("cpu")),
            _shown(ratios.get("peak_rss")),
            *([""] * len(TABLE_KINDS)),
            _shown(ratios.get("requests")),
        ]
    )
    print_table(headers, rows, left=range(2))
    print(
        "(wall s, CPU s (user+system), peak RSS: each path's whole child process, interpreter start and "
        f"imports included;\n the fan-out's child runs the driver and up to {at_once} at once in one "
        "process, so its RSS is theirs together;\n"
        f" run objects: the manifest, the result objects and their deletion, under {RUNS_FOLDER}/;\n"
        f" requests: {results.request_counting})"
    )
    for run in results.runs:
        if run.exit_code and run.stderr_tail:
            print(f"\n{run.path} exited {run.exit_code}; stderr ends with:\n{run.stderr_tail}")
    invocations = single.report.get("invocations", [])
    if invocations:
        shown = ", ".join(
            f"{call['seconds']:.1f} s ({call['items']} read)" for call in invocations[:MAX_SINGLE_INVOCATIONS]
        )
        print(f"single function's invocations: {shown}")
    (map_run,) = fanout.report.get("map_runs") or [{}]
    report = fanout.report
    print(
        f"fan-out: execution {report.get('status')} in {report.get('execution_seconds', 0):.2f} s "
        f"({report.get('summary') or report.get('error')}); map: {map_run.get('items')} items in "
        f"{map_run.get('batches')} batches, {map_run.get('succeeded')} succeeded, {map_run.get('failed')} "
        f"failed, at most {map_run.get('max_concurrency')} at once; retries {report.get('retries') or 'none'}"
    )
    figures = results.batch_figures
    if figures is not None:
        print(
            f"\nfor the AWS estimate (this machine: {os.cpu_count()} cores, shared with SeaweedFS on "
            f"loopback; {at_once} at once):"
        )
        print(
            f"  read: {_ms(figures.read_cpu_ms_per_package)} CPU per package (the child's CPU during the "
            f"map / packages read); a batch's wall time per package {_ms(figures.read_ms_per_package)} (mean "
            f"{figures.mean_batch_seconds:.2f} s for {figures.mean_batch_items:.0f} packages"
            f"{', batches contending for the cores' if results.threads > 1 else ''})"
        )
        print(
            f"  at {results.packages} packages: plan {_seconds(figures.plan_seconds)} wall, "
            f"{_seconds(figures.plan_cpu_seconds)} CPU; map {_seconds(figures.map_seconds)} wall; commit "
            f"{_seconds(figures.commit_seconds)} wall, {_seconds(figures.commit_cpu_seconds)} CPU"
        )
        print(
            f"  manifest: {_bytes(figures.manifest_bytes)} = {figures.manifest_bytes_per_package} bytes per "
            f"package; result objects: {figures.result_objects} holding {_bytes(figures.result_bytes)} = "
            f"{figures.result_bytes_per_package} bytes per package"
        )
    comparison = results.comparison
    print(
        f"\npublished records: {comparison['records']} (expected {comparison['expected']} each); "
        f"{comparison['in_one_index_only_count']} in one index only, "
        f"{comparison['differing_records_count']} records differ"
    )
    for name in comparison["in_one_index_only"][:5] + comparison["differing_records"][:5]:
        print(f"  {name}")
    print()
    print_checks(results.checks)
    failed = sum(not check.passed for check in results.checks)
    print(f"\nfan-out benchmark took {results.total_seconds:.0f} s")
    print(f"{'ALL TARGETS PASS' if not failed else f'{failed} TARGET(S) FAIL'}")


def seaweedfs_version() -> str:
    """ "SeaweedFS <release>", the release being the first word of `weed version` with a dot in it."""
    binary = weed_binary()
    try:
        words = subprocess.run(
            [binary or "weed", "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        words = []
    release = next((word for word in words[1:] if "." in word), None)
    return f"SeaweedFS {release}" if release else "SeaweedFS"


def _batches(count: int) -> str:
    return f"{count} batch" if count == 1 else f"{count} batches"


def _ratio(fanout: float, single: float) -> float | None:
    return round(fanout / single, 3) if single > 0 and fanout > 0 else None


def _shown(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _bytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,} bytes"


if __name__ == "__main__":
    sys.exit(main())
