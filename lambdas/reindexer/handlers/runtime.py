"""What both handlers share: Powertools' logger, metrics and tracer, the time left of an invocation, and
quoting untrusted text.

Nothing here runs at import beyond creating the Powertools objects. The X-Ray SDK is imported only when
tracing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..contract import METRICS_NAMESPACE, SERVICE_NAME

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


logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
tracer = (
    # Nothing to patch: S3 requests go through obstore (Rust), which X-Ray cannot see into, and patching
    # botocore or every library X-Ray knows would only cost import time. The handler and the methods
    # decorated with capture_method are the trace's subsegments.
    Tracer(service=SERVICE_NAME, auto_patch=False) if not Tracer._is_tracer_disabled() else Untraced()
)
# The core logs through the standard library; give its loggers Powertools' structured output.
copy_config_to_registered_loggers(
    source_logger=logger,
    log_level=logging.WARNING,
    include={name for name in logging.root.manager.loggerDict if name.startswith("reindexer.")},
)


def seconds_left(context: LambdaContext | None) -> float:
    """The invocation's remaining time by Lambda's own clock; Lambda's longest timeout without a context."""
    return context.get_remaining_time_in_millis() / 1000 if context else MAX_INVOCATION_SECONDS


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as it may appear in a reason someone reads: repr'd, so no line break or control character
    gets through, and cut to `limit` characters, so an event cannot flood a log line or a response with
    text of its own choosing."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
