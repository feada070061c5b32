"""The channel stack: one CondaChannel built from validated settings and the bundled Lambda code."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.conda_channel import CondaChannel
from infra.settings import ChannelSettings


class ChannelStack(cdk.Stack):
    """Deploys a self-indexing conda channel bucket."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: ChannelSettings,
        code: lambda_.Code,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.channel = CondaChannel(self, "Channel", settings=settings, code=code)
