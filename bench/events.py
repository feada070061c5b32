"""Event-path benchmark: what one package upload costs the package-event Lambda handler, by subdir size.

On one counting moto S3 server, three subdirs are prepared and then receive one new package each:
- `small/linux-64`: ~100 real packages, indexed by `reindexer index`;
- `channel/linux-64`: 10,000 real packages, indexed by `reindexer index` (and, in a second bucket, by
  rattler-index, whose no-op run is the yardstick for the handler's wall time);
- `large/linux-64`: 100,000 synthetic records, published in-process through the real publication path.
For each, the handler (reindexer.handlers.package_events.handler) runs in a child process on an SQS-shaped
event (bench.handler_child), so its wall time, the S3 requests it sends and its own peak RSS (os.wait4, see
bench.launcher) can be measured.
The figures are printed and written to .bench/events-bench.json; a missed target prints FAIL but the exit
code stays 0 (this is a report).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import handler_child
from bench.children import ChildRun, last_json_line, module_command, positive_int, run_child, run_measured
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
from bench.report import Check, add_results_argument, print_checks, print_table, tail, write_results
from bench.s3_access import REGION, UPLOAD_THREADS, child_env, s3_client
from bench.tools import rattler_index_command, rattler_index_finished, reindexer_command
from devtools.channel_bucket import upload_channel
from devtools.sample_channel import SamplePackage, build_packages, plan_channel
from reindexer.contract import REPODATA_JSON, join_key
from reindexer.indexer import index_channel
from reindexer.lease import Lease
from reindexer.options import IndexOptions
from reindexer.publication import commit_state, publish_outputs, run_transaction
from reindexer.record_schema import RECORD_SCHEMA
from reindexer.records import encode_record, sort_record
from reindexer.reports import SubdirReport
from reindexer.state import IndexedPackage, SubdirState
from reindexer.storage.s3 import S3Credentials, S3Endpoint, S3Store
from reindexer.subdir_ref import SubdirRef
from reindexer_cli.lambda_events import s3_message, sqs_event, sqs_record

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RESULTS_NAME = "events-bench.json"
REINDEXER_BUCKET = "events-reindexer"
RATTLER_BUCKET = "events-rattler"
SUBDIR = "linux-64"
SMALL_CHANNEL = "small"
CHANNEL = "channel"
LARGE_CHANNEL = "large"
HANDLER_TIMEOUT = 60.0  # the fake context's remaining time
CHILD_TIMEOUT = 600.0
PUBLISH_JOBS = 16
BUILD_CHUNK = 500
# Lease PUT and DELETE, state GET and PUT, the package GET, one shard, the shard index, repodata.json and
# .zst, run_exports.json (issue 12), and the cached store conditions once per process: 11. Then the channel
# files (issue 12), made again from every subdir's state: the channel lease PUT and DELETE, the channel
# state GET and PUT, the state GET of each subdir (noarch and linux-64 here), channeldata.json and
# index.html: 8.
MAX_REQUESTS = 19
MAX_HANDLER_RATIO = 0.25
MAX_RSS_MB = 512.0
LAMBDA_MEMORY_MB = 512  # what the fake context reports; the handler only logs it
TABLE_KINDS = (LIST, GET_PACKAGE, GET_OTHER, "HEAD", PUT, DELETE)

# Realistic ingredients for the synthetic records (the shapes conda-forge's linux-64 records have).
COMMON_DEPENDS = (
    "libgcc >=13",
    "libstdcxx >=13",
    "__glibc >=2.17,<3.0.a0",
    "python >=3.12,<3.13.0a0",
    "python_abi 3.12.* *_cp312",
    "libzlib >=1.3.1,<2.0a0",
    "openssl >=3.4.0,<4.0a0",
    "numpy >=1.23,<3",
    "libblas >=3.9.0,<4.0a0",
    "zstd >=1.5.6,<1.6.0a0",
)
LICENSES = {
    "MIT": "MIT",
    "BSD-3-Clause": "BSD",
    "Apache-2.0": "APACHE",
    "GPL-3.0-or-later": "GPL3",
    "LGPL-2.1-or-later": "LGPL",
    "MPL-2.0": "OTHER",
}
NAME_WORDS = ("core", "utils", "tools", "python", "cpp", "dev", "data", "io", "sdk", "cli", "plugin", "lib")
SYNTHETIC_EPOCH_MS = 1_672_531_200_000  # 2023-01-01


@dataclass
class HandlerRun:
    scenario: str
    records: int
    handler_seconds: float | None
    child_seconds: float
    import_seconds: float | None
    requests: dict[str, int]
    request_total: int
    handler_counted: dict[str, int]
    peak_rss_mb: float
    rss_before_handler_mb: float | None
    own_high_water_mb: float | None
    exit_code: int
    response: Any
    published: bool
    stderr_tail: str = ""
    profile: str = ""


@dataclass
class RattlerRun:
    phase: str
    records: int
    seconds: float
    requests: dict[str, int]
    request_total: int
    peak_rss_mb: float
    exit_code: int
    finished: bool
    stderr_tail: str = ""


@dataclass
class EventResults:
    setup: dict[str, Any] = field(default_factory=dict)
    handler_runs: list[HandlerRun] = field(default_factory=list)
    rattler_runs: list[RattlerRun] = field(default_factory=list)
    handler_ratio: float | None = None
    checks: list[Check] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("events benchmark")
    group.add_argument(
        "--event-packages",
        type=positive_int,
        default=10_000,
        help="real packages in the large real subdir (default 10000)",
    )
    group.add_argument(
        "--small-packages",
        type=positive_int,
        default=100,
        help="real packages in the small subdir (default 100)",
    )
    group.add_argument(
        "--synthetic-records",
        type=positive_int,
        default=100_000,
        help="records of the synthetic subdir for the memory figure (default 100000)",
    )
    group.add_argument(
        "--versions-per-name",
        type=positive_int,
        default=10,
        help="synthetic records per package name, i.e. per shard (default 10)",
    )
    group.add_argument(
        "--rattler-after-upload",
        action="store_true",
        help="also time rattler-index on the same one upload (a full run; adds about 40 s)",
    )
    group.add_argument(
        "--profile", action="store_true", help="profile each handler call with cProfile and print hot spots"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    add_results_argument(parser)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    results = EventResults()
    setup = results.setup
    with tempfile.TemporaryDirectory(prefix="events-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        plans = {
            CHANNEL: linux_plan(args.event_packages, seed=0),
            SMALL_CHANNEL: linux_plan(args.small_packages, seed=1),
        }
        names = synthetic_names(args.synthetic_records, args.versions_per_name)
        # One new version of an existing name per subdir: the update re-renders one shard of several records.
        uploads = {
            SMALL_CHANNEL: new_package(plans[SMALL_CHANNEL][0].name, "small"),
            CHANNEL: new_package(plans[CHANNEL][0].name, "channel"),
            LARGE_CHANNEL: new_package(names[0], "large"),
        }
        upload_files = {
            channel: build_packages([package], scratch / "uploads" / channel)[0]
            for channel, package in uploads.items()
        }
        setup["packages"] = {channel: len(plan) for channel, plan in plans.items()}

        with CountingS3Server() as server:
            client = s3_client(server.endpoint_url)
            for bucket in (REINDEXER_BUCKET, RATTLER_BUCKET):
                client.create_bucket(Bucket=bucket)
            total = sum(len(plan) for plan in plans.values())
            print(
                f"building {total} packages (all {SUBDIR}) with rattler-build and uploading them "
                f"to {server.endpoint_url} ...",
                flush=True,
            )
            started = time.perf_counter()
            build_and_upload(
                client,
                scratch,
                [
                    (CHANNEL, plans[CHANNEL], (REINDEXER_BUCKET, RATTLER_BUCKET)),
                    (SMALL_CHANNEL, plans[SMALL_CHANNEL], (REINDEXER_BUCKET,)),
                ],
            )
            setup["build_and_upload_seconds"] = round(time.perf_counter() - started, 3)

            env = child_env()
            for channel in (SMALL_CHANNEL, CHANNEL):
                print(f"indexing s3://{REINDEXER_BUCKET}/{channel} with reindexer ...", flush=True)
                child = run_child(_index_command(server.endpoint_url, channel), env)
                report = last_json_line(child.stdout) or {}
                setup[f"reindexer_index_{channel}"] = {
                    "seconds": round(child.seconds, 3),
                    "exit_code": child.exit_code,
                    "indexed": len(report.get("subdirs", {}).get(SUBDIR, {}).get("added", [])),
                    "complete": report.get("complete"),
                }
            print(f"indexing s3://{RATTLER_BUCKET}/{CHANNEL} with rattler-index (cold) ...", flush=True)
            server.counter.reset()
            cold = run_measured(_rattler_command(server.endpoint_url), env)
            results.rattler_runs.append(_rattler_run("cold", len(plans[CHANNEL]), cold, server))

            print(
                f"publishing {args.synthetic_records} synthetic records ({len(names)} names) to "
                f"s3://{REINDEXER_BUCKET}/{LARGE_CHANNEL}/{SUBDIR} ...",
                flush=True,
            )
            setup["synthetic"] = publish_synthetic(
                S3Store(
                    REINDEXER_BUCKET,
                    S3Endpoint(server.endpoint_url, REGION, path_style=True),
                    # This process has no AWS settings of its own; moto takes any keys.
                    credentials=S3Credentials("testing", "testing"),
                ),
                names,
                args.synthetic_records,
                args.versions_per_name,
            )

            handler_env = {
                **env,
                "AWS_ENDPOINT_URL_S3": server.endpoint_url,
                "CHANNEL_BUCKET": REINDEXER_BUCKET,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "Bench",
            }
            for scenario, channel, records in (
                (
                    f"one upload, {len(plans[SMALL_CHANNEL])} records",
                    SMALL_CHANNEL,
                    len(plans[SMALL_CHANNEL]),
                ),
                (f"one upload, {len(plans[CHANNEL])} records", CHANNEL, len(plans[CHANNEL])),
                (f"one upload, {args.synthetic_records} synthetic", LARGE_CHANNEL, args.synthetic_records),
            ):
                print(f"package-event handler: {scenario} ...", flush=True)
                results.handler_runs.append(
                    run_handler(
                        client,
                        server,
                        handler_env,
                        scenario,
                        records,
                        channel,
                        upload_files[channel],
                        scratch,
                        profile=args.profile,
                    )
                )

            print("running rattler-index (no-op) ...", flush=True)
            server.counter.reset()
            noop = run_measured(_rattler_command(server.endpoint_url), env)
            results.rattler_runs.append(_rattler_run("no-op", len(plans[CHANNEL]), noop, server))
            if args.rattler_after_upload:
                # For comparison only: what rattler-index must do for the same one upload (a full run).
                key = join_key(CHANNEL, SUBDIR, upload_files[CHANNEL].name)
                client.put_object(Bucket=RATTLER_BUCKET, Key=key, Body=upload_files[CHANNEL].read_bytes())
                print("running rattler-index (after one upload) ...", flush=True)
                server.counter.reset()
                after = run_measured(_rattler_command(server.endpoint_url), env)
                results.rattler_runs.append(
                    _rattler_run("one upload", len(plans[CHANNEL]) + 1, after, server)
                )

    evaluate(results, args)
    print_results(results)
    write_results(args.results_dir / RESULTS_NAME, asdict(results))
    return 0


def build_and_upload(
    client: S3Client, scratch: Path, channels: list[tuple[str, list[SamplePackage], tuple[str, ...]]]
) -> None:
    """Build each channel's packages in chunks in a worker process while this one uploads the chunks
    already built (building and moto's server each keep one core busy)."""
    context = multiprocessing.get_context("spawn")  # no fork: the S3 server's threads run in this process
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        chunks = [
            (pool.submit(build_packages, plan[start : start + BUILD_CHUNK], folder), channel, folder, buckets)
            for channel, plan, buckets in channels
            for start in range(0, len(plan), BUILD_CHUNK)
            for folder in [scratch / channel / f"chunk-{start // BUILD_CHUNK:04d}"]
        ]
        for built, channel, folder, buckets in chunks:
            built.result()
            for bucket in buckets:
                upload_channel(client, bucket, channel, folder, threads=UPLOAD_THREADS)


def linux_plan(count: int, seed: int) -> list[SamplePackage]:
    """`count` sample packages, all in linux-64.

    plan_channel needs noarch among its subdirs (dependencies may point there), so the plan is made for
    noarch and linux-64 and every package moved to linux-64: dependencies stay satisfiable, within one subdir.
    """
    return [replace(package, subdir=SUBDIR) for package in plan_channel(count, ("noarch", SUBDIR), seed=seed)]


def new_package(name: str, tag: str) -> SamplePackage:
    """The package one upload adds: a new version of an existing name; '+' in the version makes the
    notification's key URL-encoded, as S3 sends it."""
    return SamplePackage(
        subdir=SUBDIR,
        name=name,
        version="99.0.0+event",
        build=f"hevent{tag}_0",
        archive=".conda",
        depends=("libfake >=1",),
        timestamp=datetime.now(UTC).replace(microsecond=0),
        payload=f"uploaded by the events benchmark ({tag})\n",
    )


def synthetic_names(records: int, versions_per_name: int) -> list[str]:
    count = -(-records // versions_per_name)
    rng = random.Random(7)
    return [f"synth{number:05d}-{rng.choice(NAME_WORDS)}" for number in range(count)]


def synthetic_state(names: list[str], records: int, versions_per_name: int, seed: int = 11) -> SubdirState:
    """A linux-64 state of `records` realistic records (`versions_per_name` per name), made exactly as the
    indexer stores records: key-sorted compact JSON text from reindexer.records.encode_record."""
    rng = random.Random(seed)
    # Written under today's record rules, as a current indexer leaves it (an older state would first be
    # checked again in full, a one-time cost measured apart from an update's).
    state = SubdirState(schema=RECORD_SCHEMA)
    for number in range(records):
        name = names[number // versions_per_name]
        release = number % versions_per_name
        build_number = rng.randrange(3)
        python_build = rng.random() < 0.3
        build = f"{'py312' if python_build else ''}h{rng.getrandbits(32):08x}_{build_number}"
        version = f"{1 + release // 4}.{release % 4}.{rng.randrange(20)}"
        extension = ".conda" if rng.random() < 0.8 else ".tar.bz2"
        others = rng.sample(names, 3)
        depends = sorted(
            {
                *rng.sample(COMMON_DEPENDS, rng.randint(1, 3)),
                *(f"{other} >={rng.randrange(1, 4)}.{rng.randrange(10)}" for other in others),
            }
        )[: rng.randint(3, 6)]
        constrains = ([f"{rng.choice(names)} >={rng.randrange(1, 4)}.0"] if rng.random() < 0.3 else []) + (
            ["__cuda >=12"] if rng.random() < 0.05 else []
        )
        license_name = rng.choice(list(LICENSES))
        md5 = rng.randbytes(16).hex()
        size = min(int(rng.lognormvariate(12, 1.5)), 500_000_000)
        record = sort_record(
            {
                "arch": "x86_64",
                "build": build,
                "build_number": build_number,
                "constrains": constrains,
                "depends": depends,
                "license": license_name,
                "license_family": LICENSES[license_name],
                "md5": md5,
                "name": name,
                "platform": "linux",
                "sha256": rng.randbytes(32).hex(),
                "size": size,
                "subdir": SUBDIR,
                "timestamp": SYNTHETIC_EPOCH_MS + number * 60_000 + rng.randrange(60_000),
                "version": version,
            }
        )
        # A single-part upload's ETag is the MD5 of its bytes.
        state.packages[f"{name}-{version}-{build}{extension}"] = IndexedPackage(
            md5, size, encode_record(record)
        )
    return state


def publish_synthetic(
    store: S3Store, names: list[str], records: int, versions_per_name: int
) -> dict[str, Any]:
    """Publish a synthetic subdir through the real path: lease, shards, shard index, repodata.json(.zst),
    then the state committed with a conditional write, as an indexer run would leave it.

    None of these records' package files exist in the bucket. That does not matter to what is measured:
    the event path never lists the subdir nor looks at files the notification does not name; it only
    reads the state, reads the one uploaded package, and rewrites the outputs and the state.
    """
    started = time.perf_counter()
    state = synthetic_state(names, records, versions_per_name)
    generated = time.perf_counter() - started
    subdir = SubdirRef(store, LARGE_CHANNEL, SUBDIR)
    # The handler's publish settings (PublishSettings with its default max-age) and lease terms, so the
    # outputs are what it would have written itself.
    options = IndexOptions(jobs=PUBLISH_JOBS)

    def publish(lease: Lease) -> SubdirReport:
        publish_outputs(subdir, state, SubdirState(), options)
        commit_state(subdir, state, None, lease)
        return SubdirReport(SUBDIR, added=sorted(state.packages), written=True)

    report = run_transaction(subdir, options, publish)
    if report.error:
        raise RuntimeError(f"could not publish the synthetic subdir: {report.error}")
    # noarch and the channel files, as `reindexer index` leaves the other two channels: so one upload costs
    # the same requests in all three.
    rest = index_channel(store, LARGE_CHANNEL, replace(options, subdirs=["noarch"]))
    if not rest.ok or rest.channel_files is None or rest.channel_files.error:
        raise RuntimeError(f"could not publish noarch and the channel files: {rest.to_dict()}")
    head = store.head(subdir.key(REPODATA_JSON))
    state_bytes = len(state.to_bytes())
    average = sum(len(package.record) for package in state.packages.values()) / max(1, len(state.packages))
    return {
        "records": len(state.packages),
        "names": len(state.shards),
        "versions_per_name": versions_per_name,
        "shards_written": len(set(state.shards.values())),
        "average_record_bytes": round(average),
        "repodata_json_bytes": head.size if head else None,
        "state_bytes": state_bytes,
        "generate_seconds": round(generated, 3),
        "publish_seconds": round(time.perf_counter() - started - generated, 3),
    }


def run_handler(
    client: S3Client,
    server: CountingS3Server,
    env: dict[str, str],
    scenario: str,
    records: int,
    channel: str,
    package: Path,
    scratch: Path,
    *,
    profile: bool,
) -> HandlerRun:
    """Upload one package, then run the package-event handler on its notification in a child process."""
    key = join_key(channel, SUBDIR, package.name)
    uploaded = client.put_object(Bucket=REINDEXER_BUCKET, Key=key, Body=package.read_bytes())
    notice = s3_message(REINDEXER_BUCKET, key, size=package.stat().st_size, etag=uploaded["ETag"].strip('"'))
    event = sqs_event(sqs_record(notice))
    event_file = scratch / f"event-{channel}.json"
    result_file = scratch / f"result-{channel}.json"
    event_file.write_text(json.dumps(event))
    command = module_command(
        handler_child.__name__,
        str(event_file),
        str(result_file),
        "1" if profile else "0",
        str(LAMBDA_MEMORY_MB),
        str(HANDLER_TIMEOUT),
    )
    server.counter.reset()
    child = run_measured(command, env)
    requests = server.counter.snapshot()
    server.counter.reset()
    outcome: dict[str, Any] = {}
    if child.exit_code == 0 and result_file.exists():
        outcome = json.loads(result_file.read_text())
    return HandlerRun(
        scenario=scenario,
        records=records,
        handler_seconds=_rounded(outcome.get("handler_seconds")),
        child_seconds=round(child.seconds, 3),
        import_seconds=_rounded(outcome.get("import_seconds")),
        requests=requests,
        request_total=_total(requests),
        handler_counted=outcome.get("requests", {}),
        peak_rss_mb=round(child.peak_rss_mb, 1),
        rss_before_handler_mb=_rounded(outcome.get("rss_before_handler_mb"), 1),
        own_high_water_mb=_rounded(outcome.get("rss_after_handler_mb"), 1),
        exit_code=child.exit_code,
        response=outcome.get("response"),
        published=_published(client, channel, package.name),
        stderr_tail=tail(child.stderr) if child.exit_code else "",
        profile=outcome.get("profile", ""),
    )


def evaluate(results: EventResults, args: argparse.Namespace) -> None:
    runs = results.handler_runs
    small, medium, large = runs
    rattler = {run.phase: run for run in results.rattler_runs}
    noop = rattler["no-op"]
    if medium.handler_seconds is not None and noop.seconds > 0:
        results.handler_ratio = round(medium.handler_seconds / noop.seconds, 4)
    checks = results.checks
    for channel in (SMALL_CHANNEL, CHANNEL):
        index = results.setup[f"reindexer_index_{channel}"]
        checks.append(
            Check(
                f"setup: reindexer indexes {channel}/{SUBDIR} completely",
                index["exit_code"] == 0 and index["complete"] is True,
                f"exit code {index['exit_code']}, {index['indexed']} packages indexed",
            )
        )
    for run in runs:
        failures = (run.response or {}).get("batchItemFailures") if isinstance(run.response, dict) else None
        checks.append(
            Check(
                f"{run.scenario}: handler succeeds and publishes the package",
                run.exit_code == 0 and failures == [] and run.published,
                f"exit code {run.exit_code}, batch item failures {failures}, "
                f"in repodata.json: {run.published}",
            )
        )
    for phase, rattler_run in rattler.items():
        checks.append(
            Check(
                f"rattler-index {phase} completes", rattler_run.finished, f"exit code {rattler_run.exit_code}"
            )
        )
    checks += [
        Check(
            f"requests for one upload: the same for {small.records} and {medium.records} records",
            small.requests == medium.requests,
            f"{_kinds(small.requests)} vs {_kinds(medium.requests)}",
        ),
        Check(
            f"requests for one upload: the same for {args.synthetic_records} synthetic records",
            large.requests == medium.requests,
            f"{_kinds(large.requests)}",
        ),
        Check(
            f"requests for one upload <= {MAX_REQUESTS}",
            all(run.request_total <= MAX_REQUESTS for run in runs),
            ", ".join(f"{run.records}: {run.request_total}" for run in runs),
        ),
        Check(
            "one upload: no LIST, one package GET",
            all(run.requests[LIST] == 0 and run.requests[GET_PACKAGE] == 1 for run in runs),
            ", ".join(f"LIST {run.requests[LIST]} / GET pkg {run.requests[GET_PACKAGE]}" for run in runs),
        ),
        Check(
            f"handler wall time <= 1/4 of rattler-index no-op ({medium.records} records)",
            results.handler_ratio is not None and results.handler_ratio <= MAX_HANDLER_RATIO,
            f"{medium.handler_seconds} s / {noop.seconds} s = ratio {results.handler_ratio}",
        ),
        Check(
            f"handler peak RSS <= {MAX_RSS_MB:.0f} MB ({large.records} synthetic records)",
            large.exit_code == 0 and large.peak_rss_mb <= MAX_RSS_MB,
            f"{large.peak_rss_mb:.0f} MB",
        ),
    ]
    for run in runs:
        # The handler's S3 client counts what it sent (retries included); the server counts what arrived.
        sent = sum(run.handler_counted.values())
        checks.append(
            Check(
                f"{run.scenario}: the handler's own request count matches the server's",
                sent == run.request_total,
                f"handler {sent}, server {run.request_total}",
            )
        )


def print_results(results: EventResults) -> None:
    setup = results.setup
    synthetic = setup["synthetic"]
    print()
    print(
        f"subdirs ({SUBDIR}): {setup['packages'][SMALL_CHANNEL]} and {setup['packages'][CHANNEL]} real "
        f"packages, built and uploaded (the larger one to both buckets) in "
        f"{setup['build_and_upload_seconds']:.1f} s; indexed by reindexer in "
        f"{setup[f'reindexer_index_{SMALL_CHANNEL}']['seconds']:.1f} s and "
        f"{setup[f'reindexer_index_{CHANNEL}']['seconds']:.1f} s"
    )
    print(
        f"synthetic subdir: {synthetic['records']} records ({synthetic['average_record_bytes']} bytes of "
        f"JSON each), {synthetic['names']} names x {synthetic['versions_per_name']} versions = "
        f"{synthetic['shards_written']} shards, repodata.json "
        f"{synthetic['repodata_json_bytes'] / 1e6:.1f} MB, "
        f"state {synthetic['state_bytes'] / 1e6:.1f} MB; generated in {synthetic['generate_seconds']:.1f} s, "
        f"published in {synthetic['publish_seconds']:.1f} s"
    )
    headers = ["scenario", "records", "handler s", "child s", *TABLE_KINDS, "total", "RSS MB"]
    rows = [
        [
            run.scenario,
            str(run.records),
            "-" if run.handler_seconds is None else f"{run.handler_seconds:.3f}",
            f"{run.child_seconds:.2f}",
            *(str(_kind(run.requests, kind)) for kind in TABLE_KINDS),
            str(run.request_total),
            f"{run.peak_rss_mb:.0f}",
        ]
        for run in results.handler_runs
    ] + [
        [
            f"rattler-index {run.phase}",
            str(run.records),
            "-",
            f"{run.seconds:.2f}",
            *(str(_kind(run.requests, kind)) for kind in TABLE_KINDS),
            str(run.request_total),
            f"{run.peak_rss_mb:.0f}",
        ]
        for run in results.rattler_runs
    ]
    print_table(headers, rows, left=range(1))
    print(
        "(handler s: the handler call timed inside the child; child s: the whole child process, interpreter "
        "start and imports included;\n HEAD: package and other objects; total: every request the server "
        "received, errors included;\n RSS: the child's own peak RSS, from wait4 in a small launcher process)"
    )
    for run in results.handler_runs:
        if run.import_seconds is not None:
            print(
                f"  {run.scenario}: imports {run.import_seconds:.2f} s; peak RSS (VmHWM) before the handler "
                f"call {run.rss_before_handler_mb:.0f} MB, after it {run.own_high_water_mb:.0f} MB; "
                f"errors {run.requests[ERRORS]}, "
                f"other {run.requests[OTHER] + run.requests[POST]}"
            )
        if run.exit_code != 0 and run.stderr_tail:
            print(f"\n{run.scenario} exited {run.exit_code}; stderr ends with:\n{run.stderr_tail}")
    for rattler_run in results.rattler_runs:
        if not rattler_run.finished and rattler_run.stderr_tail:
            print(
                f"\nrattler-index {rattler_run.phase} exited {rattler_run.exit_code}; stderr ends with:\n"
                f"{rattler_run.stderr_tail}"
            )
    print()
    ratio = "n/a" if results.handler_ratio is None else f"{results.handler_ratio:.3f}"
    records = setup["packages"][CHANNEL]
    print(f"handler wall time / rattler-index no-op wall time ({records} records): {ratio}")
    for run in results.handler_runs:
        if run.profile:
            print(f"\ncProfile of the handler call, {run.scenario}:\n{run.profile}")
    print()
    print_checks(results.checks)
    failed = sum(not check.passed for check in results.checks)
    print(f"\n{'ALL TARGETS PASS' if not failed else f'{failed} TARGET(S) FAIL'}")


def _index_command(endpoint_url: str, channel: str) -> list[str]:
    return [
        *reindexer_command(),
        "index",
        f"s3://{REINDEXER_BUCKET}/{channel}",
        "--endpoint-url",
        endpoint_url,
        "--force-path-style",
        "--json",
    ]


def _rattler_command(endpoint_url: str) -> list[str]:
    return rattler_index_command(endpoint_url, f"s3://{RATTLER_BUCKET}/{CHANNEL}")


def _rattler_run(phase: str, records: int, child: ChildRun, server: CountingS3Server) -> RattlerRun:
    requests = server.counter.snapshot()
    server.counter.reset()
    return RattlerRun(
        phase=phase,
        records=records,
        seconds=round(child.seconds, 3),
        requests=requests,
        request_total=_total(requests),
        peak_rss_mb=round(child.peak_rss_mb, 1),
        exit_code=child.exit_code,
        # py-rattler may crash at interpreter exit after finishing (see bench.rattler_index_child).
        finished=rattler_index_finished(child),
        stderr_tail=tail(child.stderr),
    )


def _published(client: S3Client, channel: str, filename: str) -> bool:
    """Whether the channel's repodata.json now lists the uploaded file."""
    try:
        body = client.get_object(Bucket=REINDEXER_BUCKET, Key=join_key(channel, SUBDIR, REPODATA_JSON))[
            "Body"
        ].read()
    except client.exceptions.NoSuchKey:
        return False
    return json.dumps(filename).encode() + b":" in body


def _kind(requests: dict[str, int], kind: str) -> int:
    return requests[HEAD_PACKAGE] + requests[HEAD_OTHER] if kind == "HEAD" else requests[kind]


def _kinds(requests: dict[str, int]) -> str:
    return ", ".join(f"{kind} {_kind(requests, kind)}" for kind in TABLE_KINDS if _kind(requests, kind))


def _total(requests: dict[str, int]) -> int:
    return sum(count for kind, count in requests.items() if kind != ERRORS)


def _rounded(value: Any, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


if __name__ == "__main__":
    sys.exit(main())
