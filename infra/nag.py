"""cdk-nag acknowledgments: each deliberate finding acknowledged on the resource it concerns, with its reason
and, for wildcard grants, for exactly the ARNs named."""

from __future__ import annotations

import json
from collections.abc import Iterable

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))


def acknowledge_wildcards(scope: IConstruct, arns: Iterable[str], reason: str) -> None:
    """Acknowledge cdk-nag's wildcard finding for exactly these resources, nothing broader."""
    for arn in arns:
        acknowledge(scope, f"AwsSolutions-IAM5[Resource::{nag_reference(scope, arn)}]", reason)


def nag_reference(scope: IConstruct, arn: str) -> str:
    """How cdk-nag names an ARN in a finding: `<LogicalId.Attribute>` and `<Ref>` for references, other
    intrinsic functions as compact JSON."""
    resolved = cdk.Stack.of(scope).resolve(arn)
    if isinstance(resolved, str):
        return resolved
    rendered = []
    for part in resolved.get("Fn::Join", ["", []])[1]:
        if isinstance(part, str):
            rendered.append(part)
        elif "Fn::GetAtt" in part:
            logical_id, attribute = part["Fn::GetAtt"]
            rendered.append(f"<{logical_id}.{attribute}>")
        elif "Ref" in part:
            rendered.append(f"<{part['Ref']}>")
        else:
            rendered.append(json.dumps(part, separators=(",", ":")))
    return "".join(rendered)
