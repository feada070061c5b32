"""What both handlers share: Powertools logger, metrics and tracer, settings, S3 stores, time budgets.

Nothing here runs at import beyond creating the Powertools objects: settings are read and clients created on
first use, so a bad setting fails the invocation with one clear line.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from ..config import ConfigurationError, HandlerSettings
from ..indexer import IndexOptions
from ..lease import LeaseTerms
from ..publication import PublishSettings
from ..storage.s3 import S3Store, create_s3_client

SERVICE = "reindexer"
METRICS_NAMESPACE = "Reindexer"
# A lease outlives the invocation that holds it, as the lease protocol requires.
LEASE_SLACK_SECONDS = 60.0

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
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
def _client() -> Any:
    return create_s3_client(max_connections=settings().read_jobs + 4)


@cache
def store_for(bucket: str) -> S3Store:
    return S3Store(bucket, _client())


@dataclass(frozen=True)
class TimeBudget:
    """How an invocation spends its remaining time: reading stops at `read_deadline`, leaving room to
    publish and commit; the lease lives past the end of the invocation."""

    started: float
    remaining: float
    read_share: float
    wait_share: float

    @classmethod
    def of(cls, context: LambdaContext | None, read_share: float, wait_share: float) -> TimeBudget:
        remaining = context.get_remaining_time_in_millis() / 1000 if context else 900.0
        return cls(time.monotonic(), remaining, read_share, wait_share)

    @property
    def read_deadline(self) -> float:
        return self.started + self.remaining * self.read_share

    def lease_terms(self) -> LeaseTerms:
        return LeaseTerms(
            lifetime=self.remaining + LEASE_SLACK_SECONDS, wait=self.remaining * self.wait_share
        )


def index_options(budget: TimeBudget, **choices: Any) -> IndexOptions:
    current = settings()
    return IndexOptions(
        jobs=current.read_jobs,
        settings=PublishSettings(repodata_max_age=current.repodata_max_age),
        lease=budget.lease_terms(),
        deadline=budget.read_deadline,
        **choices,
    )
