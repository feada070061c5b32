"""The handlers' composition root: settings, a store per bucket, a clock and where events for automation go,
in one object built from the environment once per container (a test builds one from its own parts), and the
time budgets it gives work.

`LambdaEntry` is what Lambda calls by name: it builds the wiring on the first invocation, so a bad setting
fails that invocation with one clear line, and keeps it (and the stores' probed conditions) after that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..channel_events import ChannelEvent, DiscardingSink, EventBridgeSink, EventBusEndpoint, EventSink
from ..clock import SYSTEM_CLOCK, Clock
from ..config import ConfigurationError, HandlerSettings
from ..contract import EVENT_BUS_VARIABLE, Metric
from ..lease import LeaseTerms
from ..options import IndexOptions, PublishSettings
from ..storage.s3 import S3Endpoint, S3Store
from ..store import Store
from .runtime import logger, metrics, tracer

# A lease outlives the invocation that holds it, as the lease protocol requires.
LEASE_SLACK_SECONDS = 60.0

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
UseCase = Callable[[dict[str, Any], LambdaContext, "Wiring"], dict[str, Any]]


@dataclass(frozen=True)
class TimeBudget:
    """The time one piece of work may take: `seconds` from `started` (the wiring clock's monotonic time).

    No package read starts after `read_share` of it and a subdir held by another indexer is waited for at
    most `wait_share` of it; the rest is left to publish and commit. The lease lives `lease_slack` seconds
    past the budget's end.
    """

    started: float
    seconds: float
    read_share: float
    wait_share: float
    lease_slack: float = LEASE_SLACK_SECONDS

    @property
    def read_deadline(self) -> float:
        return self.started + self.seconds * self.read_share

    def seconds_left(self, clock: Clock) -> float:
        """What is left of the budget now, by `clock` (the one it was started on)."""
        return max(0.0, self.started + self.seconds - clock.monotonic())

    def lease_terms(self) -> LeaseTerms:
        return LeaseTerms(lifetime=self.seconds + self.lease_slack, wait=self.seconds * self.wait_share)


# Where events go when a wiring is given no sink: nowhere.
NO_EVENTS = DiscardingSink()
# Event bus names (and ARNs) as EventBridge accepts them.
_EVENT_BUS = re.compile(r"^[A-Za-z0-9._\-/:]{1,1600}$")


@dataclass
class Wiring:
    settings: HandlerSettings
    open_store: Callable[[str], Store]
    clock: Clock = SYSTEM_CLOCK
    lease_slack: float = LEASE_SLACK_SECONDS
    # Events for automation (reindexer.channel_events): the bus when deployed, printed lines locally.
    events: EventSink = NO_EVENTS
    _stores: dict[str, Store] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, events: EventSink | None = None) -> Wiring:
        """The deployed wiring: settings from the stack's variables, S3 stores at the SDKs' endpoint, events
        put on the bus EVENT_BUS names (none when it is unset), unless `events` says where they go."""
        settings = HandlerSettings.from_environment(environ)
        endpoint = S3Endpoint.from_environment(environ, max_connections=settings.read_jobs + 4)
        return cls(
            settings,
            lambda bucket: S3Store(bucket, endpoint, clock=SYSTEM_CLOCK),
            SYSTEM_CLOCK,
            events=events if events is not None else event_sink(environ),
        )

    def store(self, bucket: str) -> Store:
        """The bucket's store, kept for the wiring's life: what the bucket honours of conditional requests
        is probed (or read from its cached answer) once per container, not per invocation."""
        if bucket not in self._stores:
            self._stores[bucket] = self.open_store(bucket)
        return self._stores[bucket]

    def budget(self, seconds: float, read_share: float, wait_share: float) -> TimeBudget:
        """A budget of `seconds` starting now."""
        return TimeBudget(self.clock.monotonic(), max(0.0, seconds), read_share, wait_share, self.lease_slack)

    def put_events(self, events: Sequence[ChannelEvent], seconds: float | None = None) -> None:
        """Put events for automation, taking at most about `seconds`. Best effort: what cannot be put is
        logged (by the sink) and counted in EventPutFailures, and never fails the work it reports."""
        if not events:
            return
        try:
            unput = self.events.put(events, seconds=seconds)
        except Exception:  # a sink must not raise; if one does, the indexing it reports still stands
            logger.exception("events for automation not put")
            unput = len(events)
        metrics.add_metric(name=Metric.EVENT_PUT_FAILURES, unit=MetricUnit.Count, value=unput)

    def index_options(self, budget: TimeBudget, **choices: Any) -> IndexOptions:
        settings = self.settings
        return IndexOptions(
            jobs=settings.read_jobs,
            settings=PublishSettings(repodata_max_age=settings.repodata_max_age, private=settings.private),
            lease=budget.lease_terms(),
            deadline=budget.read_deadline,
            max_package_bytes=settings.max_package_bytes,
            clock=self.clock,
            repodata_patch=settings.repodata_patch,
            **choices,
        )


def event_sink(environ: Mapping[str, str]) -> EventSink:
    """EventBridge when EVENT_BUS names a bus (the stack sets "default"), reached at the SDKs' endpoint for
    EventBridge in the function's region; no events when it is unset or empty."""
    bus = environ.get(EVENT_BUS_VARIABLE, "").strip()
    if not bus:
        return NO_EVENTS
    if not _EVENT_BUS.match(bus):
        raise ConfigurationError(f"{EVENT_BUS_VARIABLE}={bus[:64]!r} is not an event bus name or ARN")
    return EventBridgeSink(EventBusEndpoint.from_environment(environ, bus))


def instrumented(handle: UseCase, wiring: Wiring) -> Handler:
    """`handle` over `wiring` as a Lambda handler, with Powertools' log context, trace and metrics flush."""

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return handle(event, context, wiring)

    return handler


class LambdaEntry:
    """A handler as Lambda calls it: built by `build` from the environment's wiring at first use, kept."""

    def __init__(self, build: Callable[[Wiring], Handler]) -> None:
        self._build = build
        self._handler: Handler | None = None

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if self._handler is None:
            try:
                wiring = Wiring.from_environment(os.environ)
            except ConfigurationError as error:
                logger.error(f"configuration error: {error}")
                raise
            self._handler = self._build(wiring)
        return self._handler(event, context)
