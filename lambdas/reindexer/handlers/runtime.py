"""What both handlers share: Powertools logger, metrics and tracer, settings, S3 stores, time budgets,
and quoting untrusted text.

Nothing here runs at import beyond creating the Powertools objects: settings are read and clients created on
first use, so a bad setting fails the invocation with one clear line. The X-Ray SDK is imported only when
tracing is on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from ..config import ConfigurationError, HandlerSettings
from ..indexer import IndexOptions
from ..lease import LeaseTerms
from ..publication import PublishSettings
from ..storage.s3 import S3Endpoint, S3Store

SERVICE = "reindexer"
METRICS_NAMESPACE = "Reindexer"
# A lease outlives the invocation that holds it, as the lease protocol requires.
LEASE_SLACK_SECONDS = 60.0
MAX_INVOCATION_SECONDS = 900.0
# The most characters of text from an event or a request that a reason quotes.
QUOTE_LIMIT = 64

F = TypeVar("F", bound=Callable[..., Any])


class Untraced:
    """The tracer when tracing is off (POWERTOOLS_TRACE_DISABLED, or not in Lambda): its decorators give
    back the function itself. Powertools' Tracer would import the X-Ray SDK even then, and the SDK's recorder
    builds two botocore clients outside Lambda: about 0.3 s of a handler's import, for nothing."""

    @staticmethod
    def capture_lambda_handler(handler: F) -> F:
        return handler

    @staticmethod
    def capture_method(method: F) -> F:
        return method


logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
tracer = (
    # Nothing to patch: S3 requests go through obstore (Rust), which X-Ray cannot see into, and patching
    # botocore or every library X-Ray knows would only cost import time. The handler and the methods
    # decorated with capture_method are the trace's subsegments.
    Tracer(service=SERVICE, auto_patch=False) if not Tracer._is_tracer_disabled() else Untraced()
)
# The core logs through the standard library; give its loggers Powertools' structured output.
copy_config_to_registered_loggers(
    source_logger=logger,
    log_level=logging.WARNING,
    include={name for name in logging.root.manager.loggerDict if name.startswith("reindexer.")},
)


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@cache
def settings() -> HandlerSettings:
    try:
        return HandlerSettings.from_environment(os.environ)
    except ConfigurationError as error:
        logger.error(f"configuration error: {error}")
        raise


@cache
def store_for(bucket: str) -> S3Store:
    """The bucket's store, kept for the container's life: what the bucket honours of conditional requests
    is probed (or read from its cached answer) once per cold start, not per invocation."""
    return S3Store(bucket, S3Endpoint.from_environment(max_connections=settings().read_jobs + 4))


def seconds_left(context: LambdaContext | None) -> float:
    """The invocation's remaining time by Lambda's own clock; Lambda's longest timeout without a context."""
    return context.get_remaining_time_in_millis() / 1000 if context else MAX_INVOCATION_SECONDS


@dataclass(frozen=True)
class TimeBudget:
    """The time one piece of work may take: `seconds` from `started` (time.monotonic()).

    No package read starts after `read_share` of it and a subdir held by another indexer is waited for at
    most `wait_share` of it; the rest is left to publish and commit. The lease lives past the budget's end.
    """

    started: float
    seconds: float
    read_share: float
    wait_share: float

    @classmethod
    def starting_now(cls, seconds: float, read_share: float, wait_share: float) -> TimeBudget:
        return cls(time.monotonic(), max(0.0, seconds), read_share, wait_share)

    @property
    def read_deadline(self) -> float:
        return self.started + self.seconds * self.read_share

    def lease_terms(self) -> LeaseTerms:
        return LeaseTerms(lifetime=self.seconds + LEASE_SLACK_SECONDS, wait=self.seconds * self.wait_share)


def index_options(budget: TimeBudget, **choices: Any) -> IndexOptions:
    current = settings()
    return IndexOptions(
        jobs=current.read_jobs,
        settings=PublishSettings(repodata_max_age=current.repodata_max_age, private=current.private),
        lease=budget.lease_terms(),
        deadline=budget.read_deadline,
        max_package_bytes=current.max_package_bytes,
        **choices,
    )


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as it may appear in a reason someone reads: repr'd, so no line break or control character
    gets through, and cut to `limit` characters, so an event cannot flood a log line or a response with
    text of its own choosing."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
