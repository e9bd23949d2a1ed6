"""template.yaml: what is deployed is what the local cloud runs, and permissions stay scoped."""

from __future__ import annotations

from typing import Any

from localcloud.eventbus import rule_matches
from localcloud.template import ROOT, functions, load_template, resources_of_type
from tests.conftest import load_event

DESTRUCTIVE = ("Delete", "Modify", "Create", "Put", "Update", "Tag", "Untag", "Attach", "Detach")
# CloudWatch Logs delivery for Step Functions supports no resource-level permissions (AWS docs).
LOG_DELIVERY = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in resources_of_type(template, "AWS::IAM::ManagedPolicy").values():
        found += policy["Properties"]["PolicyDocument"]["Statement"]
    serverless = {
        **resources_of_type(template, "AWS::Serverless::Function"),
        **resources_of_type(template, "AWS::Serverless::StateMachine"),
    }
    for function in serverless.values():
        for policy in function["Properties"].get("Policies", []):
            if isinstance(policy, dict) and "Statement" in policy:
                found += policy["Statement"]
    return found


def test_no_destructive_action_is_allowed_on_everything_without_a_condition() -> None:
    for statement in statements(load_template()):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            verb = action.split(":", 1)[1]
            assert verb != "*", action
            if verb.startswith(DESTRUCTIVE) and "Condition" not in statement and action not in LOG_DELIVERY:
                assert "*" not in resources, f"{action} on {resources}"


def test_endpoint_creation_and_deletion_are_tag_scoped() -> None:
    by_sid = {s["Sid"]: s for s in statements(load_template())}
    assert "aws:RequestTag/mwaa-control:managed-by" in by_sid["CreateOnlyTaggedEndpoints"]["Condition"]["StringEquals"]
    assert "aws:ResourceTag/mwaa-control:managed-by" in by_sid["DeleteOnlyOwnEndpoints"]["Condition"]["StringEquals"]
    assert by_sid["TagOnlyOnCreate"]["Condition"]["StringEquals"]["ec2:CreateAction"] == "CreateVpcEndpoint"
    assert "ec2:VpceServiceName" in by_sid["AmendOnlySqsEndpointPolicies"]["Condition"]["StringEquals"]


def test_the_deployed_rule_matches_mwaa_status_events_only() -> None:
    [pattern] = functions(load_template())["EndpointManagerFunction"].event_patterns.values()
    assert rule_matches(pattern, load_event("mwaa_status_pending.json"))
    assert rule_matches(pattern, load_event("mwaa_status_deleted.json"))
    assert not rule_matches(pattern, load_event("foreign_ec2_state_change.json"))


def test_every_function_has_its_handler_and_a_makefile_build_target() -> None:
    template = load_template()
    for logical_id, spec in functions(template).items():
        module = spec.handler.rsplit(".", 1)[0]
        assert (spec.code_uri / f"{module}.py").is_file()
        assert f"build-{logical_id}:" in (spec.code_uri / "Makefile").read_text()
    for logical_id, layer in resources_of_type(template, "AWS::Serverless::LayerVersion").items():
        assert f"build-{logical_id}:" in (ROOT / layer["Properties"]["ContentUri"] / "Makefile").read_text()


def test_runtime_is_a_supported_python() -> None:
    runtime = load_template()["Globals"]["Function"]["Runtime"]
    assert runtime in ("python3.12", "python3.13", "python3.14")


def test_every_sample_event_is_used_by_a_test() -> None:
    tests_text = "".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    for sample in (ROOT / "events").glob("*.json"):
        assert sample.name in tests_text, f"{sample.name} is not loaded by any test"
