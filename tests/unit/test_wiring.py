"""The handlers' composition root: LambdaEntry builds the wiring from the environment at the first invocation
and keeps it; a bad setting fails that invocation in one line and the next one tries again; a wiring opens
one store per bucket; budgets and index options are on the wiring's clock."""

from __future__ import annotations

from typing import Any

import pytest

from reindexer import contract
from reindexer.clock import SYSTEM_CLOCK
from reindexer.config import ConfigurationError, HandlerSettings
from reindexer.handlers import full_reindex, package_events, runtime
from reindexer.handlers.wiring import Handler, LambdaEntry, Wiring
from reindexer.lease import LeaseTerms
from reindexer.options import PublishSettings
from reindexer.storage.memory import MemoryStore
from reindexer.storage.s3 import S3Endpoint, S3Store
from reindexer.store import Store
from reindexer_cli.lambda_events import LocalLambdaContext
from tests.support.clock import FakeClock

HANDLER_VARIABLES = (
    contract.BUCKET_VARIABLE,
    contract.MAX_AGE_VARIABLE,
    contract.JOBS_VARIABLE,
    contract.PREFIXES_VARIABLE,
    contract.MAX_PACKAGE_VARIABLE,
    contract.ACCESS_VARIABLE,
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any of the handlers' variables; set them with the monkeypatch."""
    for name in HANDLER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class Builds:
    """A `build` for LambdaEntry that records every wiring it is given; its handler answers with the
    bucket of the wiring it was built from."""

    def __init__(self) -> None:
        self.wirings: list[Wiring] = []

    def __call__(self, wiring: Wiring) -> Handler:
        self.wirings.append(wiring)

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return {"bucket": wiring.settings.bucket, "event": event}

        return handler


def test_lambda_entry_builds_its_wiring_at_the_first_call_and_keeps_it(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv(contract.BUCKET_VARIABLE, "first-bucket")
    builds = Builds()
    entry = LambdaEntry(builds)
    assert builds.wirings == []  # nothing is read or built before the first invocation

    first = entry({"n": 1}, LocalLambdaContext())
    environment.setenv(contract.BUCKET_VARIABLE, "second-bucket")
    second = entry({"n": 2}, LocalLambdaContext())

    assert len(builds.wirings) == 1
    assert first == {"bucket": "first-bucket", "event": {"n": 1}}
    assert second == {"bucket": "first-bucket", "event": {"n": 2}}  # the environment was read once
    # Another container (a new LambdaEntry) reads the environment as it is then.
    assert LambdaEntry(builds)({}, LocalLambdaContext())["bucket"] == "second-bucket"


def test_what_lambda_calls_by_name_is_a_lambda_entry() -> None:
    """Importing a handler module builds nothing: the wiring waits for the first invocation."""
    for module in (package_events, full_reindex):
        assert isinstance(module.handler, LambdaEntry)


class ErrorLog:
    """What the handlers' logger is asked to log as errors."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.messages: list[str] = []
        monkeypatch.setattr(runtime.logger, "error", self._error)

    def _error(self, message: object, *args: Any, **kwargs: Any) -> None:
        self.messages.append(str(message))


@pytest.mark.parametrize(
    ("variables", "start"),
    [
        ({}, "CHANNEL_BUCKET is not set"),
        (
            {contract.BUCKET_VARIABLE: "channel-bucket", contract.MAX_AGE_VARIABLE: "five"},
            "REPODATA_MAX_AGE=",
        ),
    ],
    ids=["no-bucket", "bad-max-age"],
)
def test_a_configuration_error_at_the_first_call_is_one_line_and_the_next_call_tries_again(
    environment: pytest.MonkeyPatch, variables: dict[str, str], start: str
) -> None:
    errors = ErrorLog(environment)
    for name, value in variables.items():
        environment.setenv(name, value)
    builds = Builds()
    entry = LambdaEntry(builds)

    with pytest.raises(ConfigurationError) as raised:
        entry({}, LocalLambdaContext())

    message = str(raised.value)
    assert message.startswith(start)
    assert "\n" not in message
    assert errors.messages == [f"configuration error: {message}"]
    assert builds.wirings == []

    # The operator fixes the setting; the same container's next invocation builds the wiring.
    environment.delenv(contract.MAX_AGE_VARIABLE, raising=False)
    environment.setenv(contract.BUCKET_VARIABLE, "fixed-bucket")

    assert entry({}, LocalLambdaContext()) == {"bucket": "fixed-bucket", "event": {}}
    assert len(builds.wirings) == 1
    assert len(errors.messages) == 1


def test_wiring_store_opens_one_store_per_bucket_and_keeps_it() -> None:
    opened: list[str] = []

    def open_store(bucket: str) -> Store:
        opened.append(bucket)
        return MemoryStore(bucket)

    wiring = Wiring(HandlerSettings(bucket="bucket-a"), open_store)

    a = wiring.store("bucket-a")
    b = wiring.store("bucket-b")

    assert a is not b
    assert wiring.store("bucket-a") is a
    assert wiring.store("bucket-b") is b
    assert opened == ["bucket-a", "bucket-b"]


def test_from_environment_reads_the_mapping_it_is_given_and_opens_s3_stores_at_its_endpoint() -> None:
    environ = {
        contract.BUCKET_VARIABLE: "channel-bucket",
        contract.JOBS_VARIABLE: "3",
        contract.ACCESS_VARIABLE: "private",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
    }

    wiring = Wiring.from_environment(environ)

    assert wiring.settings == HandlerSettings.from_environment(environ)
    assert wiring.clock is SYSTEM_CLOCK
    store = wiring.store("channel-bucket")
    assert isinstance(store, S3Store)
    assert store.bucket == "channel-bucket"
    assert store.endpoint == S3Endpoint(url="http://127.0.0.1:9", path_style=True, max_connections=3 + 4)


def test_budgets_and_index_options_are_on_the_wiring_clock() -> None:
    clock = FakeClock()
    clock.advance(100.0)
    settings = HandlerSettings(
        bucket="channel-bucket", repodata_max_age=17, read_jobs=3, max_package_mb=5, private=True
    )
    wiring = Wiring(settings, MemoryStore, clock=clock, lease_slack=7.0)

    budget = wiring.budget(50.0, read_share=0.6, wait_share=0.5)
    options = wiring.index_options(budget, force=True)

    assert budget.started == clock.monotonic() == 100.0
    assert budget.read_deadline == pytest.approx(130.0)
    assert budget.lease_terms() == LeaseTerms(lifetime=57.0, wait=25.0)
    assert options.clock is clock
    assert options.deadline == budget.read_deadline
    assert options.lease == budget.lease_terms()
    assert options.jobs == 3
    assert options.max_package_bytes == 5 * 1024 * 1024
    assert options.settings == PublishSettings(repodata_max_age=17, private=True)
    assert options.force is True
    assert wiring.budget(-3.0, 0.6, 0.5).seconds == 0.0  # no time left is no time, not less
