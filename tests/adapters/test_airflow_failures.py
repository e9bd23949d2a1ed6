"""Failure paths of the CLI and REST calls on the emulator (no Airflow needed): each typed,
retried where sensible, reported with a message an on-call engineer can act on."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from botocore.config import Config

from localcloud import LocalCloud
from localcloud.mwaa.http import EmulatorWebTransport
from mwaa_control.airflow.cli import MwaaCli
from mwaa_control.airflow.errors import (
    AirflowAccessDenied,
    AirflowCommandRejected,
    AirflowForbidden,
    AirflowNotFound,
    AirflowThrottled,
    AirflowUnavailable,
    CliTokenRejected,
)
from mwaa_control.airflow.rest import MwaaRest
from mwaa_control.airflow.transport import HttpResponse
from tests.conftest import SharedVpc, create_request


@pytest.fixture
def available(cloud: LocalCloud, vpc: SharedVpc) -> LocalCloud:
    cloud.client("mwaa").create_environment(**create_request("ops", vpc, EndpointManagement="SERVICE"))
    cloud.run_for(timedelta(minutes=26))
    return cloud


class Stub:
    """Emulator transport whose answers are scripted per call; counts tokens seen."""

    def __init__(self, cloud: LocalCloud, answers: list[object]) -> None:
        self.real = EmulatorWebTransport(cloud.emulator)
        self.cloud = cloud
        self.answers = answers
        self.tokens: list[str] = []

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse:
        self.tokens.append(headers["Authorization"])
        answer = self.answers.pop(0) if self.answers else "real"
        if answer == "expire":
            self.cloud.clock.advance(timedelta(seconds=61))
            return self.real.post(url, headers=headers, body=body, timeout=timeout)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return HttpResponse(answer, b'{"message": "scripted"}')
        return HttpResponse(200, b'{"stdout": "T0s=", "stderr": ""}')  # "OK" without running Airflow


def cli(cloud: LocalCloud, transport: object, attempts: int = 4) -> MwaaCli:
    return MwaaCli(
        cloud.client("mwaa"),
        "ops",
        airflow_major=2,
        transport=transport,  # type: ignore[arg-type]
        attempts=attempts,
        sleep=lambda _: None,
    )


def test_expired_token_is_replaced_by_a_fresh_one(available: LocalCloud) -> None:
    stub = Stub(available, ["expire", "ok"])
    assert cli(available, stub).run(["version"]).stdout == "OK"
    assert len(set(stub.tokens)) == 2


def test_token_refused_every_time_is_a_typed_error(available: LocalCloud) -> None:
    with pytest.raises(CliTokenRejected, match="ops: CLI token refused"):
        cli(available, Stub(available, [403] * 4)).run(["version"])


@pytest.mark.parametrize(("status", "error"), [(503, AirflowUnavailable), (429, AirflowThrottled)])
def test_transient_statuses_are_retried_then_typed(available: LocalCloud, status: int, error: type) -> None:
    assert cli(available, Stub(available, [status, status])).run(["version"]).stdout == "OK"
    with pytest.raises(error):
        cli(available, Stub(available, [status] * 4)).run(["version"])


def test_timeouts_are_typed_as_unavailable(available: LocalCloud) -> None:
    with pytest.raises(AirflowUnavailable, match="unreachable \\(TimeoutError\\)"):
        cli(available, Stub(available, [TimeoutError("read timed out")] * 4)).run(["version"])


def test_rejected_commands_are_not_retried(available: LocalCloud) -> None:
    stub = Stub(available, [400, 400])
    with pytest.raises(AirflowCommandRejected, match="'dags trigger' refused"):
        cli(available, stub).run(["dags", "trigger", "x"])
    assert len(stub.tokens) == 1


def test_emulated_endpoint_refuses_unsupported_commands_and_bad_tokens(available: LocalCloud) -> None:
    transport = EmulatorWebTransport(available.emulator)
    with pytest.raises(AirflowCommandRejected, match="not supported"):
        cli(available, transport).run(["db", "reset"])
    host = available.client("mwaa").create_cli_token(Name="ops")["WebServerHostname"]
    forged = transport.post(
        f"https://{host}/aws_mwaa/cli", headers={"Authorization": "Bearer forged"}, body=b"version", timeout=5
    )
    assert forged.status == 403


def test_cli_token_throttling_from_the_control_plane_is_retried(available: LocalCloud) -> None:
    available.emulator.inject_fault("CreateCliToken", "ThrottlingException", status=429, times=1)
    mwaa = available.client("mwaa", config=Config(retries={"mode": "standard", "max_attempts": 3}))
    runner = MwaaCli(mwaa, "ops", airflow_major=2, transport=Stub(available, []), sleep=lambda _: None)
    assert runner.run(["version"]).stdout == "OK"


def test_web_server_unavailable_while_creating(cloud: LocalCloud, vpc: SharedVpc) -> None:
    cloud.client("mwaa").create_environment(**create_request("ops", vpc, EndpointManagement="SERVICE"))
    with pytest.raises(AirflowUnavailable, match="CreateCliToken for ops failed"):
        cli(cloud, Stub(cloud, []), attempts=1).run(["version"])


def test_rest_errors_are_typed(available: LocalCloud) -> None:
    available.emulator.inject_fault("InvokeRestApi", "RestApiServerException", status=400, times=1, message="server")
    with pytest.raises(AirflowUnavailable):
        MwaaRest(available.client("mwaa"), "ops").call("GET", "/dags")
    with pytest.raises(AirflowNotFound):
        MwaaRest(available.client("mwaa"), "gone").call("GET", "/dags")


def test_tokens_never_reach_a_log_line(available: LocalCloud, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mwaa-control")
    stub = Stub(available, [503, "expire", "ok"])
    cli(available, stub).run(["dags", "trigger", "x", "-c", '{"password": "hunter2"}'])
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "retrying Airflow CLI command" in logged
    for header in stub.tokens:
        assert header.removeprefix("Bearer ") not in logged
    assert "hunter2" not in logged


def deny(*actions: str) -> Any:
    return lambda action, resource, context=None: action not in actions


def test_iam_refusals_are_typed_not_retried_and_say_what_to_grant(available: LocalCloud) -> None:
    # Given a caller IAM refuses CreateCliToken and InvokeRestApi
    available.emulator.authorize = deny("airflow:CreateCliToken", "airflow:InvokeRestApi")
    # When it runs a CLI command, then it fails at once (no retry of a permission error)
    with pytest.raises(AirflowAccessDenied, match="airflow:CreateCliToken"):
        cli(available, Stub(available, [])).run(["version"])
    assert [c for c in available.emulator.calls if c[0] == "CreateCliToken"] == [("CreateCliToken", "ops")]
    # And a REST call names the resource InvokeRestApi is authorised against
    with pytest.raises(AirflowAccessDenied, match=r"role/ops/\{AirflowRole\}"):
        MwaaRest(available.client("mwaa"), "ops").call("GET", "/dags")


def test_airflow_refusing_the_callers_role_is_a_typed_error(available: LocalCloud) -> None:
    # Given a caller allowed the Viewer role only
    available.emulator.authorize = lambda action, resource, context: (
        action != "airflow:InvokeRestApi" or resource.endswith("role/ops/Viewer")
    )
    # When it writes a variable, then Airflow's 403 is a typed error naming the role problem
    with pytest.raises(AirflowForbidden, match="403") as raised:
        MwaaRest(available.client("mwaa"), "ops").call("POST", "/variables", body={"key": "k", "value": "v"})
    assert raised.value.status == 403
