"""The channel bucket's safety settings, checked on the synthesized template."""

import aws_cdk as cdk
from aws_cdk.assertions import Match, Template

from infra.channel_stack import ChannelStack


def synthesize() -> Template:
    app = cdk.App()
    return Template.from_stack(ChannelStack(app, "Test"))


def test_bucket_is_versioned_private_and_encrypted():
    template = synthesize()
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": Match.any_value(),
        },
    )


def test_bucket_denies_requests_without_tls():
    template = synthesize()
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_bucket_is_retained_when_the_stack_is_deleted():
    template = synthesize()
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})
