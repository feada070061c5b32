"""`reindexer local`: the deployed event pipeline on an embedded S3 + SQS (a moto server on 127.0.0.1).

It provisions what the CDK stack does — the channel bucket, package notifications filtered like the stack's,
the queue and its dead-letter queue — and a worker hands each queue batch to the very package-event handler
Lambda runs, in Lambda's SQS event shape. Two differences: the bucket is not versioned (moto sends no
notification for a delete on a versioned bucket, on either S3 route, and deletes must reach the indexer); and
the handlers' events for automation are printed on stdout, one line each (`Package Indexed
<channel>/<subdir>/<file>`), instead of being put on an EventBridge bus.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reindexer.contract import (
    ACCESS_VARIABLE,
    BUCKET_VARIABLE,
    DEFAULT_EVENT_TIMEOUT_SECONDS,
    LOCAL_BUCKET,
    LOCAL_PORT,
    MAX_AGE_VARIABLE,
    MAX_RECEIVE_COUNT,
    METRICS_NAMESPACE_VARIABLE,
    NOTIFIED_EVENTS,
    PREFIXES_VARIABLE,
    VISIBILITY_TIMEOUT_FACTOR,
    join_key,
    notification_filters,
)

from .embedded_s3 import EmbeddedS3

if TYPE_CHECKING:
    from reindexer.handlers.wiring import Wiring

QUEUE_NAME = "reindexer-package-events"
DEAD_LETTER_QUEUE_NAME = "reindexer-package-events-dlq"
# The stack's figures for its default function timeout.
VISIBILITY_TIMEOUT_SECONDS = VISIBILITY_TIMEOUT_FACTOR * DEFAULT_EVENT_TIMEOUT_SECONDS
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
REGION = "us-east-1"


@dataclass(frozen=True)
class LocalSettings:
    bucket: str = LOCAL_BUCKET
    access: str = "private"
    channel_prefixes: tuple[str, ...] = ()
    repodata_max_age: int = 60


@dataclass(frozen=True)
class LocalStack:
    endpoint_url: str
    bucket: str
    queue_url: str
    dead_letter_queue_url: str
    # The handlers' wiring while the stack runs (settings from handler_environment, stores on the endpoint,
    # events printed).
    wiring: Wiring | None = None


def public_read_policy(bucket: str) -> dict[str, Any]:
    """Anonymous read and list, as the stack's public mode grants.

    moto also checks an `s3:HeadObject` action for HEAD requests (real S3 governs HEAD by s3:GetObject
    and refuses that action name), and without it rattler silently skips repodata.json.zst.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:HeadObject"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
            },
        ],
    }


def provision(endpoint_url: str, settings: LocalSettings) -> LocalStack:
    """Create the bucket, the queues and the notification route on the embedded endpoint."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=REGION)
    s3.create_bucket(Bucket=settings.bucket)
    if settings.access == "public":
        s3.put_bucket_policy(Bucket=settings.bucket, Policy=json.dumps(public_read_policy(settings.bucket)))
    dead_letters = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE_NAME)["QueueUrl"]
    dead_letters_arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=QUEUE_NAME,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dead_letters_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=settings.bucket,
        NotificationConfiguration={
            "QueueConfigurations": notification_rules(queue_arn, settings.channel_prefixes)
        },
    )
    return LocalStack(endpoint_url, settings.bucket, queue, dead_letters)


def notification_rules(queue_arn: str, channel_prefixes: Sequence[str]) -> list[Any]:
    """One rule per channel prefix, package suffix and event type, as the CDK stack configures them."""
    rules: list[Any] = []
    for prefix, suffix in notification_filters(tuple(channel_prefixes)):
        filters = [{"Name": "suffix", "Value": suffix}]
        if prefix:
            filters.insert(0, {"Name": "prefix", "Value": prefix})
        for event in NOTIFIED_EVENTS:
            rules.append(
                {"QueueArn": queue_arn, "Events": [event], "Filter": {"Key": {"FilterRules": filters}}}
            )
    return rules


def handler_environment(endpoint_url: str, settings: LocalSettings) -> dict[str, str]:
    """What the handlers read, as the stack sets it, pointed at the embedded endpoint through boto3's own
    variable."""
    environment = {
        "AWS_ENDPOINT_URL_S3": endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        BUCKET_VARIABLE: settings.bucket,
        ACCESS_VARIABLE: settings.access,
        MAX_AGE_VARIABLE: str(settings.repodata_max_age),
        "POWERTOOLS_TRACE_DISABLED": "true",
        METRICS_NAMESPACE_VARIABLE: "ReindexerLocal",
    }
    if settings.channel_prefixes:
        environment[PREFIXES_VARIABLE] = ",".join(settings.channel_prefixes)
    return environment


@contextmanager
def running(settings: LocalSettings, port: int = LOCAL_PORT) -> Iterator[LocalStack]:
    """Start the endpoint, provision it and run the worker until the block ends; then stop everything.

    The process environment holds the handlers' settings and placeholder credentials meanwhile (the AWS
    credential chain and Powertools read it there) and is given back as it was at the end.
    """
    with _environment(LOCAL_CREDENTIALS, keep_existing=True), EmbeddedS3(port) as server:
        stack = provision(server.endpoint_url, settings)
        with _environment(handler_environment(server.endpoint_url, settings)):
            yield from _serve(stack, server.endpoint_url)


def _serve(stack: LocalStack, endpoint_url: str) -> Iterator[LocalStack]:
    """Run the package-event worker on the provisioned stack until the caller's block ends."""
    import boto3

    from reindexer.channel_events import PrintingSink
    from reindexer.handlers import package_events
    from reindexer.handlers.wiring import Wiring

    from .sqs_worker import run_worker

    wiring = Wiring.from_environment(os.environ, events=PrintingSink())
    sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=REGION)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(stop, sqs, stack.queue_url, package_events.build_handler(wiring)),
        kwargs={"wait_seconds": 1},
        name="package-events-worker",
        daemon=True,
    )
    worker.start()
    try:
        yield replace(stack, wiring=wiring)
    finally:
        stop.set()
        worker.join(timeout=15)


@contextmanager
def _environment(values: Mapping[str, str], *, keep_existing: bool = False) -> Iterator[None]:
    """Set `values` in os.environ (not overriding what is set, with keep_existing) for the block."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if not (keep_existing and name in os.environ):
            os.environ[name] = value
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def run_full_reindex(stack: LocalStack, channel: str) -> dict[str, Any]:
    """The full-reindex handler, invoked as the Lambda console would, against the running stack."""
    from reindexer.handlers import full_reindex

    from .lambda_events import LocalLambdaContext

    if stack.wiring is None:
        raise RuntimeError("the local stack is not running")
    handler = full_reindex.build_handler(stack.wiring)
    result: dict[str, Any] = handler({"channel": channel}, LocalLambdaContext(function_name="full-reindex"))
    return result


def describe(stack: LocalStack, settings: LocalSettings, channel: str, say: Callable[[str], None]) -> None:
    """Where the channel is and how to publish to it, for a person at the terminal."""
    channel_url = f"s3://{join_key(stack.bucket, channel)}"
    say(f"embedded S3 + SQS endpoint: {stack.endpoint_url} (bucket {stack.bucket}, access {settings.access})")
    say("pixi.toml:")
    say(f'  channels = ["{channel_url}"]')
    say(f"  [workspace.s3-options.{stack.bucket}]")
    say(f'  endpoint-url = "{stack.endpoint_url}"')
    say(f'  region = "{REGION}"')
    say("  force-path-style = true")
    if settings.access == "public":
        public_url = f"{stack.endpoint_url}/{join_key(stack.bucket, channel)}"
        say(f'  # or, without credentials: channels = ["{public_url}"]')
    say("upload:")
    say(f"  pixi upload s3 --channel {channel_url} --endpoint-url {stack.endpoint_url} --region {REGION} \\")
    say("      --addressing-style path my-package-1.0-h0_0.conda")
    say(f"  aws --endpoint-url {stack.endpoint_url} s3 cp my-package-1.0-h0_0.conda {channel_url}/linux-64/")
    say("credentials: any AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (moto accepts all)")
