"""Reads template.yaml (with cfn-lint's loader, which understands !Ref/!Sub/!GetAtt) so the local
cloud is built from the same definitions that are deployed: functions, their EventBridge rules,
schedules and tables."""

from __future__ import annotations

import copy
import functools
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    environment: dict[str, Any]
    timeout: int
    event_patterns: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return copy.deepcopy(_parsed(path, path.stat().st_mtime))


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, mtime: float) -> dict[str, Any]:
    loaded: dict[str, Any] = cfn_yaml.load(str(path))
    return loaded


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == resource_type}


def functions(template: dict[str, Any]) -> dict[str, FunctionSpec]:
    globals_ = template.get("Globals", {}).get("Function", {})
    specs = {}
    for logical_id, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        props = resource["Properties"]
        env = dict(globals_.get("Environment", {}).get("Variables", {}))
        env.update(props.get("Environment", {}).get("Variables", {}))
        spec = FunctionSpec(
            logical_id=logical_id,
            code_uri=ROOT / props["CodeUri"],
            handler=props["Handler"],
            environment=env,
            timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
        )
        for event_id, event in props.get("Events", {}).items():
            if event["Type"] in ("EventBridgeRule", "CloudWatchEvent"):
                spec.event_patterns[event_id] = event["Properties"]["Pattern"]
            elif event["Type"] in ("Schedule", "ScheduleV2"):
                spec.schedules[event_id] = event["Properties"]["ScheduleExpression"]
        specs[logical_id] = spec
    return specs


def stack_id(partition: str, region: str, account: str, stack_name: str) -> str:
    """AWS::StackId of a local deployment: a stack ARN ending in a UUID, as CloudFormation's does
    (stable per stack name, so names derived from it are stable across runs)."""
    unique = uuid.uuid5(uuid.NAMESPACE_URL, f"{account}/{region}/{stack_name}")
    return f"arn:{partition}:cloudformation:{region}:{account}:stack/{stack_name}/{unique}"
