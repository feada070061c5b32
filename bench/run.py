"""Index benchmark: reindexer against rattler-index on one generated channel in an in-process moto S3.

Both tools run as child processes against the same counting S3 server (each on its own copy of the
channel), cold and then again with nothing changed. The figures are printed and written to
.bench/index-bench.json; a missed target prints FAIL but the exit code stays 0 (this is a report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from bench.children import last_json_line, positive_int, run_measured
from bench.counting_s3 import (
    DELETE,
    ERRORS,
    GET_OTHER,
    GET_PACKAGE,
    HEAD_OTHER,
    HEAD_PACKAGE,
    LIST,
    OTHER,
    POST,
    PUT,
    CountingS3Server,
)
from devtools.channel_bucket import upload_channel
from devtools.sample_channel import DEFAULT_SUBDIRS, build_packages, package_files, plan_channel
from reindexer.indexer import DEFAULT_JOBS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / ".bench" / "index-bench.json"
REINDEXER_BUCKET = "bench-reindexer"
RATTLER_BUCKET = "bench-rattler"
CHANNEL = "channel"
REGION = "us-east-1"
UPLOAD_THREADS = 16
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

RATTLER_SCRIPT = """
import asyncio, sys
from rattler.index import S3Credentials, index_s3

endpoint, channel_url = sys.argv[1], sys.argv[2]
credentials = S3Credentials(endpoint, "us-east-1", "testing", "testing", addressing_style="path")
asyncio.run(index_s3(channel_url, credentials=credentials))
print("RATTLER-INDEX-DONE", flush=True)
"""
# py-rattler 0.28 sometimes crashes (SIGSEGV/SIGABRT) while the interpreter shuts down, after index_s3 has
# returned: the tokio runtime of pyo3-async-runtimes racing interpreter finalization. The marker tells such
# a crash from a failed run.
RATTLER_DONE = "RATTLER-INDEX-DONE"


@dataclass
class PhaseResult:
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
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Results:
    packages: int
    jobs: int
    channel_bytes: int
    build_seconds: float
    upload_seconds: float
    phases: list[PhaseResult] = field(default_factory=list)
    cold_ratio: float | None = None
    checks: list[Check] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    from bench import events, worst_inputs  # events imports this module's pieces

    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=f"{__doc__}\nThe event-path benchmark (bench.events) and the worst-input benchmark "
        "(bench.worst_inputs) run after it unless --only says.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        choices=("index", "events", "worst"),
        help="run only the index, the event-path or the worst-input benchmark (default: all three)",
    )
    parser.add_argument("--packages", type=positive_int, default=2000, help="channel size (default 2000)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=DEFAULT_JOBS,
        help=f"reindexer --jobs (default {DEFAULT_JOBS}); rattler-index keeps its own default",
    )
    events.add_arguments(parser)
    worst_inputs.add_arguments(parser)
    args = parser.parse_args(argv)
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
    return 0


def run_index(args: argparse.Namespace) -> None:
    """The index benchmark: reindexer and rattler-index, cold and no-op, on one generated channel."""
    with tempfile.TemporaryDirectory(prefix="index-bench-") as scratch:
        channel_dir = Path(scratch) / "channel"
        print(f"building {args.packages} packages with rattler-build ...", flush=True)
        started = time.perf_counter()
        build_packages(plan_channel(args.packages, DEFAULT_SUBDIRS), channel_dir)
        build_seconds = time.perf_counter() - started
        files = package_files(channel_dir)
        channel_bytes = sum(path.stat().st_size for path in files)

        with CountingS3Server() as server:
            client = _client(server.endpoint_url)
            print(f"uploading to two buckets on {server.endpoint_url} ...", flush=True)
            started = time.perf_counter()
            for bucket in (REINDEXER_BUCKET, RATTLER_BUCKET):
                client.create_bucket(Bucket=bucket)
                upload_channel(client, bucket, CHANNEL, channel_dir, threads=UPLOAD_THREADS)
            upload_seconds = time.perf_counter() - started
            results = Results(
                packages=len(files),
                jobs=args.jobs,
                channel_bytes=channel_bytes,
                build_seconds=round(build_seconds, 3),
                upload_seconds=round(upload_seconds, 3),
            )
            env = _child_env()
            reindexer = [
                *_reindexer_command(),
                "index",
                f"s3://{REINDEXER_BUCKET}/{CHANNEL}",
                "--endpoint-url",
                server.endpoint_url,
                "--force-path-style",
                "--json",
                "--jobs",
                str(args.jobs),
            ]
            rattler = [
                sys.executable,
                "-c",
                RATTLER_SCRIPT,
                server.endpoint_url,
                f"s3://{RATTLER_BUCKET}/{CHANNEL}",
            ]
            for tool, phase, command in (
                ("reindexer", "cold", reindexer),
                ("reindexer", "no-op", reindexer),
                ("rattler-index", "cold", rattler),
                ("rattler-index", "no-op", rattler),
            ):
                print(f"running {tool} ({phase}) ...", flush=True)
                server.counter.reset()
                child = run_measured(command, env)
                result = PhaseResult(
                    tool=tool,
                    phase=phase,
                    seconds=round(child.seconds, 3),
                    cpu_seconds=round(child.cpu_seconds, 3),
                    requests=server.counter.snapshot(),
                    peak_rss_mb=round(child.peak_rss_mb, 1),
                    exit_code=child.exit_code,
                    finished=child.exit_code == 0
                    or (tool == "rattler-index" and RATTLER_DONE in child.stdout),
                    stderr_tail="\n".join(child.stderr.strip().splitlines()[-5:]),
                )
                if tool == "reindexer":
                    result.tool_report = last_json_line(child.stdout)
                results.phases.append(result)
            server.counter.reset()
            results.comparison = compare_indexes(client, len(files))

    evaluate(results)
    print_results(results)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(asdict(results), indent=2) + "\n")
    print(f"\nfigures written to {RESULTS_FILE.relative_to(REPO_ROOT)}")


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


def evaluate(results: Results) -> None:
    phases = {(p.tool, p.phase): p for p in results.phases}
    cold, noop = phases[("reindexer", "cold")], phases[("reindexer", "no-op")]
    rattler_cold = phases[("rattler-index", "cold")]
    count = results.packages
    if rattler_cold.seconds > 0:
        results.cold_ratio = round(cold.seconds / rattler_cold.seconds, 3)
    for phase in results.phases:
        results.checks.append(
            Check(
                f"{phase.tool} {phase.phase} completes",
                phase.finished,
                f"exit code {phase.exit_code}"
                + (
                    "; crashed at interpreter exit after finishing"
                    if phase.finished and phase.exit_code
                    else ""
                ),
            )
        )
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
        Check(
            "reindexer cold wall time <= rattler-index cold",
            results.cold_ratio is not None and results.cold_ratio <= 1.0,
            f"ratio {results.cold_ratio}",
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
    records = results.comparison.get("records", {})
    results.checks.append(
        Check(
            "both indexes list every package, with the same fields",
            records.get("reindexer") == count
            and records.get("rattler-index") == count
            and results.comparison.get("differing_count") == 0
            and results.comparison.get("in_one_index_only_count") == 0,
            f"records {records}, differing {results.comparison.get('differing_count')}",
        ),
    )


def print_results(results: Results) -> None:
    print()
    print(
        f"channel: {results.packages} packages ({results.channel_bytes / 1e6:.1f} MB) in "
        f"{', '.join(DEFAULT_SUBDIRS)}; built in {results.build_seconds:.1f} s, "
        f"uploaded twice in {results.upload_seconds:.1f} s; reindexer --jobs {results.jobs}"
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
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * width for width in widths)
    print()
    print(
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    print(line)
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(line)
    print(
        f"(CPU s: the tool's own user+system time; {ERRORS}: responses with a 4xx/5xx status, "
        "also counted in their kind)"
    )
    for phase in results.phases:
        if phase.exit_code != 0 and phase.stderr_tail:
            print(
                f"\n{phase.tool} {phase.phase} exited {phase.exit_code}; stderr ends with:\n"
                f"{phase.stderr_tail}"
            )
    print()
    ratio = "n/a" if results.cold_ratio is None else f"{results.cold_ratio:.2f}"
    print(f"cold wall time, reindexer / rattler-index: {ratio}")
    comparison = results.comparison
    print(
        f"published records: {comparison['records']} (expected {comparison['expected']} each); "
        f"{comparison['differing_count']} differ in {'/'.join(COMPARED_FIELDS)}, "
        f"{comparison['in_one_index_only_count']} in one index only"
    )
    for text in comparison["differing"][:5] + comparison["in_one_index_only"][:5]:
        print(f"  {text}")
    print()
    print("targets:")
    for check in results.checks:
        print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}  ({check.detail})")
    failed = sum(not check.passed for check in results.checks)
    print(f"\n{'ALL TARGETS PASS' if not failed else f'{failed} TARGET(S) FAIL'}")


def _client(endpoint_url: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=UPLOAD_THREADS * 2),
    )


def _child_env() -> dict[str, str]:
    """This environment without any AWS settings of its own, plus fake credentials and loopback only."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def _reindexer_command() -> list[str]:
    script = Path(sys.executable).parent / "reindexer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reindexer.cli"]


if __name__ == "__main__":
    sys.exit(main())
