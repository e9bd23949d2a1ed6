"""IAM on the emulated MWAA API: CreateCliToken and GetEnvironment are authorised against the
environment ARN, InvokeRestApi against the Airflow role resource role/{environment}/{AirflowRole};
the most privileged role the caller may use picks what Airflow lets it do (a coarse Airflow RBAC).
The policies here are explicit hooks; the local cloud wires the template's policies the same way."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from localcloud import LocalCloud
from tests.conftest import SharedVpc, create_request

ENV_ARN = "arn:aws:airflow:us-east-1:123456789012:environment/ops"
ROLE_ARN = "arn:aws:airflow:us-east-1:123456789012:role/ops/{}"


def policy(*statements: tuple[str, str]) -> Callable[[str, str, object], bool]:
    """Allow (action pattern, resource pattern) pairs, with IAM's * wildcards; deny the rest."""

    def authorize(action: str, resource: str, context: object = None) -> bool:
        seen.append((action, resource))
        return any(fnmatch.fnmatchcase(action, a) and fnmatch.fnmatchcase(resource, r) for a, r in statements)

    seen: list[tuple[str, str]] = []
    authorize.seen = seen  # type: ignore[attr-defined]
    return authorize


ENVIRONMENT_ONLY = policy(
    ("airflow:GetEnvironment", "arn:aws:airflow:*:*:environment/*"),
    ("airflow:CreateCliToken", "arn:aws:airflow:*:*:environment/*"),
    ("airflow:InvokeRestApi", "arn:aws:airflow:*:*:environment/*"),
)


def as_role(*roles: str) -> Callable[[str, str, object], bool]:
    return policy(
        ("airflow:GetEnvironment", ENV_ARN),
        ("airflow:CreateCliToken", ENV_ARN),
        *(("airflow:InvokeRestApi", ROLE_ARN.format(role)) for role in roles),
    )


class StubAirflow:
    """The environment's Airflow, answering 200 to whatever reaches it (no real Airflow needed)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []

    def rest(self, method: str, path: str, query: Any, body: Any) -> tuple[int, str]:
        self.received.append((method, path))
        return 200, '{"ok": true}'

    def schedule_runs(self) -> None:
        """A trigger pokes the scheduler; nothing runs behind the stub."""


@pytest.fixture
def ops(cloud: LocalCloud, vpc: SharedVpc, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalCloud, StubAirflow]:
    cloud.client("mwaa").create_environment(**create_request("ops", vpc, EndpointManagement="SERVICE"))
    cloud.run_for(timedelta(minutes=26))
    airflow = StubAirflow()
    monkeypatch.setattr(cloud.emulator, "airflow", lambda *_: airflow)
    return cloud, airflow


def invoke(cloud: LocalCloud, method: str, path: str, body: Any = None) -> dict[str, Any]:
    request: dict[str, Any] = {"Name": "ops", "Method": method, "Path": path}
    if body is not None:
        request["Body"] = body
    return dict(cloud.client("mwaa").invoke_rest_api(**request))


def refused(cloud: LocalCloud, method: str, path: str, body: Any = None) -> dict[str, Any]:
    with pytest.raises(ClientError) as error:
        invoke(cloud, method, path, body)
    return dict(error.value.response)


def test_invoke_rest_api_is_refused_for_a_caller_allowed_only_environment_resources(
    ops: tuple[LocalCloud, StubAirflow],
) -> None:
    # Given a caller whose policy grants InvokeRestApi on environment/* (the wrong resource)
    cloud, airflow = ops
    cloud.emulator.authorize = ENVIRONMENT_ONLY
    # When it calls the REST API, then MWAA refuses it as AWS does, and Airflow never sees the call
    response = refused(cloud, "GET", "/dags")
    assert response["Error"]["Code"] == "AccessDeniedException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert airflow.received == []
    # And every Airflow role resource was asked about, none granted
    asked = {r for a, r in ENVIRONMENT_ONLY.seen if a == "airflow:InvokeRestApi"}  # type: ignore[attr-defined]
    assert asked == {ROLE_ARN.format(r) for r in ("Admin", "Op", "User", "Viewer", "Public")}
    # While the environment-level calls are authorised against the environment ARN
    assert cloud.client("mwaa").get_environment(Name="ops")["Environment"]["Name"] == "ops"
    assert cloud.client("mwaa").create_cli_token(Name="ops")["CliToken"]


def test_the_user_role_may_read_trigger_and_pause_but_not_write_variables(
    ops: tuple[LocalCloud, StubAirflow],
) -> None:
    cloud, airflow = ops
    cloud.emulator.authorize = as_role("User")
    # Reads, triggering and patching runs, pausing DAGs: allowed
    for method, path, body in (
        ("GET", "/dags", None),
        ("GET", "/dags/hello/dagRuns/mwaactl__1", None),
        ("POST", "/dags/hello/dagRuns", {"dag_run_id": "r1", "conf": {}}),
        ("PATCH", "/dags/hello/dagRuns/r1", {"state": "failed"}),
        ("PATCH", "/dags/hello", {"is_paused": True}),
        ("POST", "/dags/~/dagRuns/list", {"page_limit": 10}),
    ):
        assert invoke(cloud, method, path, body)["RestApiStatusCode"] == 200, (method, path)
    allowed = list(airflow.received)
    # Configuration writes: refused by Airflow with 403, before anything changes
    for method, path, body in (
        ("POST", "/variables", {"key": "k", "value": "v"}),
        ("PATCH", "/variables/k", {"key": "k", "value": "v"}),
        ("DELETE", "/variables/k", None),
        ("POST", "/connections", {"connection_id": "c", "conn_type": "http"}),
        ("PATCH", "/pools/default_pool", {"slots": 1}),
        ("PATCH", "/dags/hello/dagRuns/r1/../../../../variables/k", {"value": "v"}),
    ):
        response = refused(cloud, method, path, body)
        assert response["Error"]["Code"] == "RestApiClientException", (method, path)
        assert response["RestApiStatusCode"] == 403, (method, path)
    assert airflow.received == allowed


def test_viewer_and_public_may_only_read(ops: tuple[LocalCloud, StubAirflow]) -> None:
    cloud, airflow = ops
    for role in ("Viewer", "Public"):
        cloud.emulator.authorize = as_role(role)
        assert invoke(cloud, "GET", "/dags/hello")["RestApiStatusCode"] == 200
        assert refused(cloud, "POST", "/dags/hello/dagRuns", {"dag_run_id": "r2"})["RestApiStatusCode"] == 403
        assert refused(cloud, "PATCH", "/dags/hello", {"is_paused": False})["RestApiStatusCode"] == 403
    assert [m for m, _ in airflow.received] == ["GET", "GET"]


def test_the_most_privileged_allowed_role_is_used(ops: tuple[LocalCloud, StubAirflow]) -> None:
    cloud, _ = ops
    cloud.emulator.authorize = as_role("Viewer", "Op")
    assert invoke(cloud, "POST", "/variables", {"key": "k", "value": "v"})["RestApiStatusCode"] == 200
    assert refused(cloud, "POST", "/users", {"username": "x"})["RestApiStatusCode"] == 403  # Admin only
    cloud.emulator.authorize = as_role("Admin")
    assert invoke(cloud, "POST", "/users", {"username": "x"})["RestApiStatusCode"] == 200


def test_cli_tokens_and_get_environment_need_the_environment_resource(ops: tuple[LocalCloud, StubAirflow]) -> None:
    cloud, _ = ops
    cloud.emulator.authorize = policy(("airflow:InvokeRestApi", ROLE_ARN.format("*")))
    mwaa = cloud.client("mwaa")
    for operation in ("create_cli_token", "get_environment"):
        with pytest.raises(ClientError) as error:
            getattr(mwaa, operation)(Name="ops")
        assert error.value.response["Error"]["Code"] == "AccessDeniedException"
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert ("airflow:CreateCliToken", ENV_ARN) in cloud.emulator.authorize.seen  # type: ignore[attr-defined]
    assert ("airflow:GetEnvironment", ENV_ARN) in cloud.emulator.authorize.seen  # type: ignore[attr-defined]
    # While the Airflow role resources are still what InvokeRestApi is authorised against
    assert invoke(cloud, "GET", "/dags")["RestApiStatusCode"] == 200


def test_an_unknown_environment_is_refused_before_it_is_looked_up(ops: tuple[LocalCloud, StubAirflow]) -> None:
    # AWS authorises before it looks the resource up: a denied caller learns nothing about names.
    cloud, _ = ops
    cloud.emulator.authorize = as_role("User")
    with pytest.raises(ClientError) as error:
        cloud.client("mwaa").get_environment(Name="secret-env")
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
