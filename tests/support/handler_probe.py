"""What the handlers' tracer is in this (fresh) interpreter: `tracer` prints its type and whether
package_events._update is wrapped; `traced-call` prints a call through capture_method and the X-Ray
subsegments it sent. Run from the project root: python -m tests.support.handler_probe {tracer,traced-call}"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from typing import Any

# Both handlers, imported as Lambda imports them; either may build or wrap with the tracer.
HANDLER_MODULES = ("reindexer.handlers.full_reindex", "reindexer.handlers.package_events")


def double(value: int) -> int:
    """The method traced by `traced-call`; its subsegment is named after this module and its name."""
    return 2 * value


def tracer_report() -> dict[str, Any]:
    """The tracer the handlers were built with, and whether it wrapped a captured method."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    from reindexer.handlers import package_events, runtime

    return {
        "tracer": type(runtime.tracer).__name__,
        "update_wrapped": hasattr(package_events._update, "__wrapped__"),
    }


def traced_call_report() -> dict[str, Any]:
    """Calls `double` through the handlers' capture_method, recording the X-Ray entities sent instead of
    sending them to a daemon."""
    from aws_xray_sdk.core import xray_recorder  # type: ignore[import-untyped]

    from reindexer.handlers import runtime

    sent: list[str] = []
    xray_recorder.emitter.send_entity = lambda entity: sent.append(entity.name)
    traced = runtime.tracer.capture_method(double)
    return {"result": traced(21), "sent": sent}


REPORTS = {"tracer": tracer_report, "traced-call": traced_call_report}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.handler_probe", description=__doc__)
    parser.add_argument("report", choices=sorted(REPORTS))
    print(json.dumps(REPORTS[parser.parse_args(argv).report]()))


if __name__ == "__main__":
    main()
