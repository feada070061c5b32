"""The `reindexer` console command: `reindexer index TARGET` for a channel on S3 or in a local folder."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from reindexer import __version__
from reindexer.contract import (
    ACCESS_MODES,
    DEFAULT_MAX_PACKAGE_MB,
    DEFAULT_READ_JOBS,
    DEFAULT_SHARD_RETENTION_DAYS,
    LOCAL_BUCKET,
    LOCAL_PORT,
    MAX_PACKAGE_MB_LIMIT,
    MAX_SHARD_RETENTION_DAYS,
    SECONDS_PER_DAY,
    channel_prefix_problem,
    package_name_problem,
)
from reindexer.indexer import index_channel
from reindexer.layout import KNOWN_SUBDIRS
from reindexer.options import DEFAULT_REPODATA_MAX_AGE, IndexOptions, PublishSettings, no_progress
from reindexer.reports import ChannelReport
from reindexer.store import StoreError

if TYPE_CHECKING:
    pass

from . import operator_commands, status_commands
from .targets import add_s3_options, open_store, parse_target, s3_store

logger = logging.getLogger("reindexer")
USAGE_ERROR = 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MEBIBYTE = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reindexer", description="Index conda channels on S3 or on disk.")
    parser.add_argument("--version", action="version", version=f"reindexer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser(
        "index",
        help="write repodata.json, repodata.json.zst and sharded repodata for a channel",
        description="Bring a channel's index in line with its packages; only new or changed ones are read.",
    )
    index.add_argument("target", metavar="TARGET", help="s3://BUCKET/PREFIX or a local channel folder")
    add_s3_options(index)
    index.add_argument(
        "--single-writer",
        action="store_true",
        help="index a store that ignores conditional writes (s3rver, ...) anyway. Only safe if no other "
        "indexer, Lambda or person ever writes this channel's index at the same time: two would overwrite "
        "each other's repodata and lose packages",
    )
    index.add_argument("--force", action="store_true", help="re-read every package and rewrite every output")
    index.add_argument("--dry-run", action="store_true", help="print the planned changes and write nothing")
    index.add_argument("--jobs", type=_positive_int, default=DEFAULT_READ_JOBS, help="parallel package reads")
    index.add_argument(
        "--subdir",
        action="append",
        dest="subdirs",
        metavar="NAME",
        type=_subdir,
        help="index only this subdir (repeatable; noarch is always included)",
    )
    index.add_argument("--base-url", help="where clients fetch packages from (writes repodata_version 2)")
    index.add_argument(
        "--repodata-max-age",
        type=_non_negative_int,
        default=DEFAULT_REPODATA_MAX_AGE,
        metavar="SECONDS",
        help=f"Cache-Control max-age of repodata files (default {DEFAULT_REPODATA_MAX_AGE})",
    )
    index.add_argument(
        "--private",
        action="store_true",
        help="Cache-Control private for channels that need credentials (shared caches must not keep them)",
    )
    index.add_argument(
        "--max-package-size",
        type=_package_size,
        default=DEFAULT_MAX_PACKAGE_MB,
        metavar="MB",
        help=f"reject package files larger than this unread (default {DEFAULT_MAX_PACKAGE_MB}, "
        f"at most {MAX_PACKAGE_MB_LIMIT})",
    )
    index.add_argument(
        "--shard-retention-days",
        type=_retention_days,
        default=DEFAULT_SHARD_RETENTION_DAYS,
        metavar="DAYS",
        help=f"delete shards no index has named for this long (default {DEFAULT_SHARD_RETENTION_DAYS})",
    )
    index.add_argument(
        "--repodata-patch",
        type=_package_name,
        metavar="NAME",
        help="a noarch package whose newest version holds <subdir>/patch_instructions.json, applied before "
        "each subdir's own patch_instructions.json",
    )
    index.add_argument("--json", action="store_true", help="print one machine-readable summary on stdout")
    index.add_argument("-v", "--verbose", action="store_true", help="log more detail on stderr")

    probe = commands.add_parser(
        "probe",
        help="find out which conditional requests an S3 store honours (and cache the answer in the bucket)",
        description="Send a few requests to a scratch key under .reindexer/ and print what the store "
        "honours: create-only PUT, If-Match PUT (quoted or unquoted ETag), If-Match DELETE. The answer is "
        "written to .reindexer/store-conditions.json, which every later run reads instead of probing.",
    )
    probe.add_argument("target", metavar="TARGET", help="s3://BUCKET")
    add_s3_options(probe)
    probe.add_argument("--json", action="store_true", help="print the answer as JSON")

    operator_commands.add_parsers(commands)
    status_commands.add_parsers(commands)

    local = commands.add_parser(
        "local",
        help="run the event-driven pipeline on an embedded S3 + SQS on 127.0.0.1 (no AWS account needed)",
        description="Start a moto S3 + SQS endpoint on 127.0.0.1, provision the channel bucket, the package "
        "notifications and the queue as the CDK stack does, and index every upload and delete with the "
        "package-event handler. Prints 'ready: <endpoint>' once it is polling; Ctrl-C stops everything.",
    )
    local.add_argument("--port", type=_port, default=LOCAL_PORT, help=f"default {LOCAL_PORT}")
    local.add_argument("--bucket", default=LOCAL_BUCKET, help=f"default {LOCAL_BUCKET}")
    local.add_argument("--access", choices=ACCESS_MODES, default="private", help="default private")
    local.add_argument(
        "--channel",
        action="append",
        dest="channels",
        metavar="PREFIX",
        help="a channel prefix to index (repeatable); default: any channel in the bucket",
    )
    local.add_argument("--reindex", action="store_true", help="run the full-reindex handler on start")
    local.add_argument(
        "--repodata-max-age",
        type=_non_negative_int,
        default=DEFAULT_REPODATA_MAX_AGE,
        metavar="SECONDS",
        help=f"Cache-Control max-age of repodata files (default {DEFAULT_REPODATA_MAX_AGE})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "local":
        if args.reindex and not args.channels:
            parser.error("--reindex needs the channels to reindex: give at least one --channel")
        for channel in args.channels or ():
            if problem := channel_prefix_problem(channel.strip("/")):
                parser.error(f"--channel {channel!r} {problem}")
        return run_local(args)
    if args.command == "probe":
        return run_probe(args)
    if args.command in ("yank", "unyank"):
        return operator_commands.run_yank(args, back=args.command == "unyank")
    if args.command == "patch":
        return operator_commands.run_patch(args)
    if args.command == "status":
        return status_commands.run_status(args)
    if args.command == "wait":
        return status_commands.run_wait(args)
    # The human summary already lists rejections; the log carries them when stdout is machine-readable.
    quiet_level = logging.WARNING if args.json else logging.ERROR
    logging.basicConfig(
        level=logging.INFO if args.verbose else quiet_level, format="%(levelname)s: %(message)s"
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        target = parse_target(args.target)
        if target.bucket is not None and (problem := channel_prefix_problem(target.prefix)):
            # The same rule as the handlers' and the stack's: a channel they would refuse is not made here.
            print(f"reindexer: error: channel prefix {target.prefix!r} {problem}", file=sys.stderr)
            return USAGE_ERROR
        store = open_store(target, args)
        options = IndexOptions(
            subdirs=args.subdirs,
            force=args.force,
            dry_run=args.dry_run,
            jobs=args.jobs,
            settings=PublishSettings(
                base_url=args.base_url, repodata_max_age=args.repodata_max_age, private=args.private
            ),
            progress=_progress_bar if _shows_progress(args) else no_progress,
            max_package_bytes=args.max_package_size * MEBIBYTE,
            shard_retention=args.shard_retention_days * SECONDS_PER_DAY,
            repodata_patch=args.repodata_patch,
        )
        report = index_channel(store, target.prefix, options)
    except (StoreError, ValueError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reindexer: interrupted; the index was left as it was before this run", file=sys.stderr)
        return 130
    if args.json:
        _log_problems(report)
        print(json.dumps(report.to_dict()))
    else:
        print_report(report)
    if not report.ok:
        failed = sorted(name for name, subdir in report.subdirs.items() if subdir.error)
        print(f"reindexer: error: could not index {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run_probe(args: argparse.Namespace) -> int:
    """Probe the bucket's conditional requests now and print the answer."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        target = parse_target(args.target)
        if target.bucket is None:
            raise ValueError("a local folder needs no probe: its writes are checked under a file lock")
        conditions = s3_store(target.bucket, args).conditional.reprobe()
    except (StoreError, ValueError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(conditions.to_dict()))
    else:
        print(f"s3://{target.bucket}: {conditions.summary()}")
        if limitation := conditions.limitation():
            print(f"  it {limitation}: reindexer refuses to write there unless run with --single-writer")
    return 0


def run_local(args: argparse.Namespace) -> int:
    """Serve the local stack until SIGINT or SIGTERM."""
    from .local_stack import LocalSettings, describe, run_full_reindex, running

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    channels = tuple(channel.strip("/") for channel in args.channels or ())
    settings = LocalSettings(
        bucket=args.bucket,
        access=args.access,
        channel_prefixes=channels,
        repodata_max_age=args.repodata_max_age,
    )
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    try:
        with running(settings, args.port) as stack:
            describe(stack, settings, channels[0] if channels else "my-channel", print)
            if args.reindex:
                for channel in channels:
                    result = run_full_reindex(stack, channel)
                    print(
                        f"full reindex of {channel or 'the bucket root'}: complete={result.get('complete')}"
                    )
            print(f"ready: {stack.endpoint_url}", flush=True)
            stop.wait()
    except (RuntimeError, StoreError, OSError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("stopped", flush=True)
    return 0


def print_report(report: ChannelReport) -> None:
    verb = "would " if report.dry_run else ""
    print(f"{'Planned' if report.dry_run else 'Indexed'} {report.target}")
    for name, subdir in sorted(report.subdirs.items()):
        if subdir.error:
            print(f"  {name}: FAILED: {subdir.error}")
            continue
        counts = (
            f"{verb}add {len(subdir.added)}, {verb}update {len(subdir.updated)}, "
            f"{verb}remove {len(subdir.removed)}, unchanged {subdir.unchanged}, "
            f"rejected {len(subdir.rejected)}"
        )
        outcome = "" if report.dry_run else ("written" if subdir.written else "nothing to write")
        print(f"  {name}: {counts}{'; ' + outcome if outcome else ''}")
        for rejection in subdir.rejected:
            print(f"    rejected {rejection.file}: {rejection.reason}")
        for failure in subdir.failed:
            print(f"    not read (retried next run) {failure.file}: {failure.reason}")
        for problem in subdir.patch_problems:
            print(f"    {problem}")
        if subdir.shards_deleted:
            print(f"    deleted {subdir.shards_deleted} superseded shard(s)")
        if report.dry_run:
            for label, names in (
                ("add", subdir.added),
                ("update", subdir.updated),
                ("remove", subdir.removed),
            ):
                for filename in names:
                    print(f"    {verb}{label} {filename}")
    for rejection in report.rejected:
        print(f"  rejected {rejection.file}: {rejection.reason}")
    if report.channel_files is not None:
        files = report.channel_files
        if files.error:
            print(f"  channel files: NOT MADE: {files.error}")
        else:
            print(f"  channel files: {', '.join(files.written) if files.written else 'unchanged'}")
    requests = ", ".join(f"{kind} {count}" for kind, count in sorted(report.requests.items()))
    print(f"{sum(report.requests.values())} requests ({requests or 'none'}) in {report.seconds:.2f} s")


def _log_problems(report: ChannelReport) -> None:
    """With --json on stdout, stderr carries one line per refused or unreadable file."""
    for rejection in report.rejected:
        logger.warning("rejected %s: %s", rejection.file, rejection.reason)
    for name, subdir in sorted(report.subdirs.items()):
        for rejection in subdir.rejected:
            logger.warning("rejected %s/%s: %s", name, rejection.file, rejection.reason)
        for failure in subdir.failed:
            logger.warning("could not read %s/%s (retried next run): %s", name, failure.file, failure.reason)
        for problem in subdir.patch_problems:
            logger.warning("%s: %s", name, problem)
        if subdir.error:
            logger.error("could not index %s: %s", name, subdir.error)
    if report.channel_files is not None and report.channel_files.error:
        logger.warning("channel files not made: %s", report.channel_files.error)


def _shows_progress(args: argparse.Namespace) -> bool:
    """A bar on a terminal, unless -v logs instead or tqdm (the `local` extra) is not installed."""
    return sys.stderr.isatty() and not args.verbose and importlib.util.find_spec("tqdm") is not None


@contextmanager
def _progress_bar(label: str, total: int) -> Iterator[Callable[[], None]]:
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit="pkg", file=sys.stderr, leave=False) as bar:

        def advance() -> None:
            bar.update(1)

        yield advance


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _package_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PACKAGE_MB_LIMIT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PACKAGE_MB_LIMIT} (MB)")
    return value


def _retention_days(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SHARD_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SHARD_RETENTION_DAYS} (days)")
    return value


def _package_name(text: str) -> str:
    if problem := package_name_problem(text):
        raise argparse.ArgumentTypeError(f"{text[:64]!r} {problem}")
    return text


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (1-65535)")
    return value


def _subdir(text: str) -> str:
    if text not in KNOWN_SUBDIRS:
        raise argparse.ArgumentTypeError(
            f"unknown subdir {text!r}; known: {', '.join(sorted(KNOWN_SUBDIRS))}"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
