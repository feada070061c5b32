#!/usr/bin/env python3
"""CDK entry point: the channel stack from validated context, checked by cdk-nag's AwsSolutions rules.

`cdk synth` / `cdk deploy` pass cdk.json and `-c key=value` context; `python app.py` reads cdk.json itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.channel_stack import ChannelStack
from infra.lambda_code import lambda_code
from infra.settings import CONTEXT_KEYS, ChannelSettings, SettingsError

ROOT = Path(__file__).resolve().parent
DEFAULT_STACK_NAME = "CondaChannel"


def build_app(context: dict[str, Any] | None = None) -> cdk.App:
    """The app with its one stack; SettingsError when a context value is wrong."""
    if context is None and "CDK_CONTEXT_JSON" not in os.environ:
        context = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
    app = cdk.App(context=context)
    settings = ChannelSettings.from_context({key: app.node.try_get_context(key) for key in CONTEXT_KEYS})
    ChannelStack(
        app,
        app.node.try_get_context("stack_name") or DEFAULT_STACK_NAME,
        settings=settings,
        code=lambda_code(ROOT),
        description="Self-indexing conda channel on S3 (reindexer)",
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
        ),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> int:
    try:
        app = build_app()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
