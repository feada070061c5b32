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
from typing import Any

import pytest

import reindexer
from tests.support.handler_probe import HANDLER_MODULES

# The environment variables Powertools reads to decide whether tracing is on.
TRACING_VARIABLES = ("POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE")
# A trace header as Lambda sets it when tracing is active.
TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_fresh(arguments: list[str], **environment: str) -> Any:
    """Runs `python -m <arguments>` in a fresh interpreter from the project root, with the tracing variables
    of this process replaced by `environment`, and returns what it printed last, as JSON."""
    env = {name: value for name, value in os.environ.items() if name not in TRACING_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(reindexer.__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(environment)
    result = subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def probe(**environment: str) -> dict[str, Any]:
    """What importing the handlers does under `environment`: the X-Ray SDK's modules it loads (observed in
    one fresh interpreter), the tracer's type and whether package_events._update is wrapped (in another)."""
    xray_modules = run_fresh(
        ["tests.support.loaded_modules", "--import", *HANDLER_MODULES, "--top-level", "aws_xray_sdk"],
        **environment,
    )
    return {
        "xray_modules": xray_modules,
        **run_fresh(["tests.support.handler_probe", "tracer"], **environment),
    }


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
    found = probe(**environment)
    assert found == {"xray_modules": [], "tracer": "Untraced", "update_wrapped": False}


def test_tracing_on_in_lambda_traces_with_powertools() -> None:
    environment = {
        "LAMBDA_TASK_ROOT": "/var/task",
        "_X_AMZN_TRACE_ID": TRACE_ID,
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    }
    found = probe(**environment)
    assert found["tracer"] == "Tracer"
    assert found["update_wrapped"]
    assert "aws_xray_sdk.core" in found["xray_modules"]
    assert run_fresh(["tests.support.handler_probe", "traced-call"], **environment) == {
        "result": 42,
        "sent": ["## __main__.double"],
    }
