"""mwaactl endpoints adopt: the operator's one-off registration of endpoints tagged as the stack's
by a version that kept no registry (the domain logic is tested in test_endpoint_review_fixes)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from mwaa_control.endpoints.service import EndpointService
from tests.unit.fakes import FakeNetwork, FakeRegistry
from tests.unit.test_endpoint_service import ARN, DB, GHOST, environment, service_and_registry, tag_as_ours

runner = CliRunner()


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeNetwork, FakeRegistry, dict[str, str], dict[str, str]]:
    """A stack with one pre-registry endpoint of a live environment and one of a gone environment."""
    import mwaactl.endpoints

    svc, network, registry = service_and_registry(environment(Status="AVAILABLE"))
    ids = {"live": tag_as_ours(network, DB, ARN), "gone": tag_as_ours(network, DB + "5", GHOST)}
    asked: dict[str, Any] = {}

    def build_service(stack: str, region: str | None) -> EndpointService:
        asked.update(stack=stack, region=region)
        return svc

    monkeypatch.setattr(mwaactl.endpoints, "build_service", build_service)
    return network, registry, ids, asked


def adopt(*args: str) -> Any:
    from mwaactl.main import app

    return runner.invoke(app, ["endpoints", "adopt", *args])


def test_a_dry_run_lists_what_it_would_register_and_registers_nothing(deployed: Any) -> None:
    _, registry, ids, asked = deployed
    result = adopt("--dry-run", "--stack", "prod-mwaa", "--region", "us-east-1")
    assert result.exit_code == 0, result.output
    assert asked == {"stack": "prod-mwaa", "region": "us-east-1"}
    assert ids["live"] in result.output and ids["gone"] in result.output
    assert "would register 1" in result.output and "--include-gone" in result.output
    assert registry.records == {}


def test_adopt_registers_endpoints_of_live_environments_only(deployed: Any) -> None:
    _, registry, ids, _ = deployed
    result = adopt()
    assert result.exit_code == 0, result.output
    assert set(registry.records) == {ids["live"]} and "registered 1" in result.output


def test_include_gone_registers_endpoints_of_environments_that_no_longer_exist(deployed: Any) -> None:
    _, registry, ids, _ = deployed
    result = adopt("--include-gone")
    assert result.exit_code == 0, result.output
    assert set(registry.records) == {ids["live"], ids["gone"]} and "registered 2" in result.output


def test_a_stack_that_cannot_be_read_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import mwaactl.endpoints
    from mwaa_control.errors import ControlPlaneError

    def no_stack(stack: str, region: str | None) -> EndpointService:
        raise ControlPlaneError(f"stack {stack} not found")

    monkeypatch.setattr(mwaactl.endpoints, "build_service", no_stack)
    result = adopt("--stack", "missing")
    assert result.exit_code == 1 and "stack missing not found" in result.output


def test_the_service_is_configured_from_the_stack_as_its_functions_are(monkeypatch: pytest.MonkeyPatch) -> None:
    import mwaactl.endpoints
    from mwaa_control.settings import EndpointSettings

    class FakeCloudFormation:
        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            assert StackName == "prod-mwaa"
            return {
                "Stacks": [
                    {
                        "StackName": "prod-mwaa",
                        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/prod-mwaa/1f2e",
                        "Outputs": [{"OutputKey": "LockTableName", "OutputValue": "prod-mwaa-state"}],
                        "Parameters": [
                            {"ParameterKey": "ParticipantAccountIds", "ParameterValue": "222222222222,333333333333"},
                            {"ParameterKey": "ParticipantRoleName", "ParameterValue": "mwaa-control-reader"},
                        ],
                    }
                ]
            }

    built: list[EndpointSettings] = []
    monkeypatch.setattr(mwaactl.endpoints, "client", lambda service, region=None: FakeCloudFormation())
    monkeypatch.setattr(mwaactl.endpoints, "endpoint_service", built.append)
    mwaactl.endpoints.build_service("prod-mwaa", "eu-west-1")
    [settings] = built
    assert (settings.deployment_id, settings.lock_table_name, settings.region, settings.account_id) == (
        "prod-mwaa",
        "prod-mwaa-state",
        "eu-west-1",
        "123456789012",
    )
    assert settings.scope.accounts == ("123456789012", "222222222222", "333333333333")
    assert settings.participant_role_name == "mwaa-control-reader"
