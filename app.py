#!/usr/bin/env python3
"""CDK entry point: builds the channel stack from cdk.json context (`cdk synth`, `cdk deploy`)."""

import aws_cdk as cdk

from infra.channel_stack import ChannelStack

app = cdk.App()
ChannelStack(app, "CondaChannel", bucket_name=app.node.try_get_context("bucket_name") or None)
app.synth()
