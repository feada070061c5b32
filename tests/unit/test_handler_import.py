"""The handlers' import stays cheap: with tracing off, the X-Ray SDK (whose recorder builds botocore clients
at import) is not imported at all, and the tracer's decorators give back the functions themselves; with
tracing on in Lambda, the Powertools Tracer traces as before.

Each case runs in a fresh interpreter, since an import can be observed only once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import reindexer

# The environment variables Powertools reads to decide whether tracing is on.
TRACING_VARIABLES = ("POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE")
# A trace header as Lambda sets it when tracing is active.
TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

PROBE = """
import json, sys
from reindexer.handlers import full_reindex, package_events, runtime
print(json.dumps({
    "xray_modules": sorted(name for name in sys.modules if name.split(".")[0] == "aws_xray_sdk"),
    "tracer": type(runtime.tracer).__name__,
    "update_wrapped": hasattr(package_events._update, "__wrapped__"),
}))
"""

TRACED_CALL = """
import json
from aws_xray_sdk.core import xray_recorder
from reindexer.handlers import runtime
sent = []
xray_recorder.emitter.send_entity = lambda entity: sent.append(entity.name)
@runtime.tracer.capture_method
def double(value):
    return 2 * value
print(json.dumps({"result": double(21), "sent": sent}))
"""


def run_fresh(code: str, **environment: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in TRACING_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(reindexer.__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(environment)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "environment",
    [
        {"POWERTOOLS_TRACE_DISABLED": "true", "LAMBDA_TASK_ROOT": "/var/task"},
        {},  # not in Lambda
        {"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"},
    ],
    ids=["disabled-in-lambda", "outside-lambda", "sam-local"],
)
def test_tracing_off_never_imports_the_xray_sdk(environment: dict[str, str]) -> None:
    found = run_fresh(PROBE, **environment)
    assert found == {"xray_modules": [], "tracer": "Untraced", "update_wrapped": False}


def test_tracing_on_in_lambda_traces_with_powertools() -> None:
    environment = {
        "LAMBDA_TASK_ROOT": "/var/task",
        "_X_AMZN_TRACE_ID": TRACE_ID,
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    }
    found = run_fresh(PROBE, **environment)
    assert found["tracer"] == "Tracer"
    assert found["update_wrapped"]
    assert "aws_xray_sdk.core" in found["xray_modules"]
    assert run_fresh(TRACED_CALL, **environment) == {"result": 42, "sent": ["## __main__.double"]}
