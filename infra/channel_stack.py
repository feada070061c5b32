"""The channel stack: for now the channel bucket itself, versioned, private and TLS-only.

Notifications, the queue and the indexer functions are added by the deployment issue.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct


class ChannelStack(cdk.Stack):
    """A stack holding one private, versioned bucket for conda channels."""

    def __init__(
        self, scope: Construct, construct_id: str, *, bucket_name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.bucket = s3.Bucket(
            self,
            "ChannelBucket",
            bucket_name=bucket_name,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        cdk.CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
