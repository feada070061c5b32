"""The fan-out state machine as synthesized: its definition from a template, with each function's
`Fn::GetAtt` Arn replaced by a placeholder ARN, and which handler each placeholder runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PARTITION = "aws"
REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class SynthesizedStateMachine:
    definition: dict[str, Any]
    # placeholder function ARN -> the function's handler (reindexer.contract's *_HANDLER)
    handlers: dict[str, str]
    logical_id: str


def placeholder_arn(logical_id: str) -> str:
    return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"


def state_machines(template: dict[str, Any]) -> dict[str, SynthesizedStateMachine]:
    """Every state machine of the template, by logical id, its definition made concrete."""
    resources = template["Resources"]
    handlers = {
        placeholder_arn(name): resource["Properties"]["Handler"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    return {
        name: SynthesizedStateMachine(
            json.loads(_rendered(resource["Properties"]["DefinitionString"], resources)), handlers, name
        )
        for name, resource in resources.items()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
    }


def _rendered(value: Any, resources: dict[str, Any]) -> str:
    """A definition string with its intrinsic functions resolved the way CloudFormation would, for the
    ones CDK puts there: the partition, a function's ARN, a bucket's name."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_rendered(part, resources) for part in parts)
    if value.get("Ref") == "AWS::Partition":
        return PARTITION
    if value.get("Ref") in ("AWS::Region", "AWS::AccountId"):
        return REGION if value["Ref"] == "AWS::Region" else ACCOUNT
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        kind = resources[logical_id]["Type"]
        if kind == "AWS::Lambda::Function" and attribute == "Arn":
            return placeholder_arn(logical_id)
    if "Ref" in value and resources.get(value["Ref"], {}).get("Type") == "AWS::S3::Bucket":
        return value["Ref"].lower()
    raise AssertionError(f"an intrinsic function the definition should not hold: {value}")
