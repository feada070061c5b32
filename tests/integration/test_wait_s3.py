"""`reindexer wait` against moto over HTTP while the package-event handler indexes the upload in another
thread, as a CI job waits after `pixi upload s3`: exit 0 once indexed, 1 with the reason once rejected."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from reindexer.config import HandlerSettings
from reindexer.contract import join_key
from reindexer.handlers import package_events
from reindexer.handlers.wiring import Wiring
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer_cli.cli import main
from reindexer_cli.lambda_events import LocalLambdaContext, s3_message, sqs_event, sqs_record
from tests.integration.conftest import MOTO_BUCKET
from tests.support.archives import index_json, package_bytes
from tests.support.stores import s3_store

CHANNEL = "dev"
SUBDIR = "linux-64"
INDEXED_FIRST = {
    "a-1.0-h0_0.conda": package_bytes("a-1.0-h0_0.conda", index_json("a", "1.0")),
    "b-1.0-h0_0.tar.bz2": package_bytes("b-1.0-h0_0.tar.bz2", index_json("b", "1.0")),
}
NEW = "c-1.0-h0_0.conda"
BROKEN = "d-1.0-h0_0.conda"
# Long enough for the waiter to poll a few times (with --interval 0.1) before the event arrives.
DELIVERY_DELAY = 1.0


def deliver_later(endpoint: str, key: str, results: list[dict[str, Any]]) -> threading.Thread:
    """The package-event function, invoked with the upload's notification after DELIVERY_DELAY."""
    wiring = Wiring(HandlerSettings(bucket=MOTO_BUCKET), lambda bucket: s3_store(bucket, endpoint))
    handler = package_events.build_handler(wiring)

    def deliver() -> None:
        time.sleep(DELIVERY_DELAY)
        event = sqs_event(sqs_record(s3_message(MOTO_BUCKET, key), message_id="m1"))
        results.append(handler(event, LocalLambdaContext(timeout=600)))

    thread = threading.Thread(target=deliver, name="package-event-function")
    thread.start()
    return thread


def wait_command(endpoint: str, key: str) -> list[str]:
    return [
        "wait",
        f"s3://{MOTO_BUCKET}/{key}",
        "--endpoint-url",
        endpoint,
        "--force-path-style",
        "--region",
        "us-east-1",
        "--timeout",
        "60",
        "--interval",
        "0.1",
    ]


def ours(out: str) -> list[str]:
    """The command's lines on stdout, without the handler's (Powertools logs and metrics, one JSON each)."""
    return [line for line in out.splitlines() if not line.startswith("{")]


@pytest.fixture
def channel(moto_client: Any, moto_endpoint: str) -> Any:
    for name, data in INDEXED_FIRST.items():
        moto_client.put_object(Bucket=MOTO_BUCKET, Key=join_key(CHANNEL, SUBDIR, name), Body=data)
    assert index_channel(s3_store(MOTO_BUCKET, moto_endpoint), CHANNEL, IndexOptions()).ok
    return moto_client


def test_wait_returns_0_once_the_event_handler_indexed_the_upload_and_1_once_it_rejected_one(
    channel: Any, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = join_key(CHANNEL, SUBDIR, NEW)
    channel.put_object(Bucket=MOTO_BUCKET, Key=key, Body=package_bytes(NEW, index_json("c", "1.0")))
    results: list[dict[str, Any]] = []
    capsys.readouterr()

    handler = deliver_later(moto_endpoint, key, results)
    started = time.monotonic()
    code = main(wait_command(moto_endpoint, key))
    waited = time.monotonic() - started
    handler.join(timeout=60)

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    (line,) = ours(out)
    assert line.startswith(f"indexed s3://{MOTO_BUCKET}/{key} (ETag ")
    assert results == [{"batchItemFailures": []}]
    assert DELIVERY_DELAY <= waited < 30

    broken = join_key(CHANNEL, SUBDIR, BROKEN)
    channel.put_object(Bucket=MOTO_BUCKET, Key=broken, Body=b"not a zip archive")
    handler = deliver_later(moto_endpoint, broken, results)
    code = main(wait_command(moto_endpoint, broken))
    handler.join(timeout=60)

    out, err = capsys.readouterr()
    assert code == 1 and ours(out) == []
    assert err.startswith(f"reindexer: rejected s3://{MOTO_BUCKET}/{broken}: ") and "zip" in err
    assert len(err.splitlines()) == 1
