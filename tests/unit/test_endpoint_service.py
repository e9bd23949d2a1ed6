"""Domain logic of endpoint reconciliation, with in-memory fakes (no AWS)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest

from mwaa_control.endpoints import EndpointService, client_token, required_services
from mwaa_control.errors import NetworkLayoutError
from mwaa_control.models import Environment, EnvironmentRef
from mwaa_control.ports import SqsEndpoint
from tests.unit.fakes import FakeDirectory, FakeLock, FakeNetwork

ARN = "arn:aws:airflow:us-east-1:123456789012:environment/etl"
QUEUE = "arn:aws:sqs:us-east-1:210987654321:airflow-celery-abc"


def environment(**overrides: Any) -> Environment:
    fields: dict[str, Any] = {
        "Name": "etl",
        "Arn": ARN,
        "Status": "PENDING",
        "CreatedAt": 1795280000,
        "EndpointManagement": "CUSTOMER",
        "WebserverAccessMode": "PRIVATE_ONLY",
        "NetworkConfiguration": {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]},
        "DatabaseVpcEndpointService": "com.amazonaws.vpce.us-east-1.vpce-svc-db",
        "WebserverVpcEndpointService": "com.amazonaws.vpce.us-east-1.vpce-svc-web",
        "CeleryExecutorQueue": QUEUE,
    }
    fields.update(overrides)
    return Environment.model_validate(fields)


def service(*environments: Environment) -> tuple[EndpointService, FakeNetwork]:
    network = FakeNetwork({"subnet-a": "vpc-1", "subnet-b": "vpc-1"})
    network.sqs["vpce-sqs"] = SqsEndpoint(
        endpoint_id="vpce-sqs",
        policy={"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}]},
    )
    network.sqs_vpc["vpce-sqs"] = "vpc-1"
    return EndpointService(FakeDirectory(*environments), network, FakeLock(), "stack"), network


def test_pending_private_environment_gets_database_and_webserver_endpoints() -> None:
    # Given a PENDING customer-managed environment with a private webserver
    svc, network = service(environment())
    # When it is reconciled
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    # Then one endpoint per service exists, in its subnets, with its security groups, tagged
    assert result.outcome == "provisioned"
    services = sorted(e["service_name"] for e in network.endpoints.values())
    assert services == ["com.amazonaws.vpce.us-east-1.vpce-svc-db", "com.amazonaws.vpce.us-east-1.vpce-svc-web"]
    for endpoint in network.endpoints.values():
        assert endpoint["vpc_id"] == "vpc-1"
        assert endpoint["subnet_ids"] == ["subnet-a", "subnet-b"]
        assert endpoint["security_group_ids"] == ["sg-1"]
        assert endpoint["tags"]["mwaa-control:environment-arn"] == ARN
        assert endpoint["tags"]["mwaa-control:managed-by"] == "stack"


def test_public_webserver_needs_only_the_database_endpoint() -> None:
    svc, network = service(environment(WebserverAccessMode="PUBLIC_ONLY"))
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert [e["tags"]["mwaa-control:endpoint-role"] for e in network.endpoints.values()] == ["database"]


def test_reconciling_twice_creates_nothing_more() -> None:
    svc, network = service(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    second = svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert len(network.endpoints) == 2
    assert {a.action for a in second.actions} == {"kept", "sqs-policy-ok"}


def test_sqs_endpoint_policy_is_opened_to_the_celery_queue() -> None:
    svc, network = service(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    resources = [s.get("Resource") for s in network.sqs["vpce-sqs"].policy["Statement"]]
    assert [QUEUE] in resources


@pytest.mark.parametrize(
    "status", ["CREATING", "AVAILABLE", "UPDATING", "CREATE_FAILED", "DELETING", "UNAVAILABLE", "MAINTENANCE"]
)
def test_other_statuses_change_nothing(status: str) -> None:
    svc, network = service(environment(Status=status))
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert result.outcome == "no-op"
    assert network.calls == []


def test_service_managed_endpoints_are_left_to_mwaa() -> None:
    svc, network = service(environment(EndpointManagement="SERVICE"))
    assert svc.reconcile(EnvironmentRef.from_arn(ARN)).outcome == "no-op"
    assert network.calls == []


def test_gone_environment_loses_only_its_own_endpoints() -> None:
    # Given endpoints of ours for two environments, and one of another deployment
    svc, network = service(environment())
    other_arn = ARN.replace("/etl", "/other")
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    network.create_interface_endpoint(
        vpc_id="vpc-1",
        service_name="svc-other",
        subnet_ids=[],
        security_group_ids=[],
        client_token="t",
        tags={
            "mwaa-control:managed-by": "stack",
            "mwaa-control:environment-arn": other_arn,
            "mwaa-control:endpoint-role": "database",
        },
    )
    network.create_interface_endpoint(
        vpc_id="vpc-1",
        service_name="svc-db",
        subnet_ids=[],
        security_group_ids=[],
        client_token="t",
        tags={
            "mwaa-control:managed-by": "another-stack",
            "mwaa-control:environment-arn": ARN,
            "mwaa-control:endpoint-role": "database",
        },
    )
    # When the environment is gone
    svc._directory.environments.clear()  # type: ignore[attr-defined]
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    # Then only its endpoints of this deployment are deleted and our SQS statement is withdrawn
    assert result.outcome == "removed"
    remaining = sorted(e["service_name"] for e in network.endpoints.values())
    assert remaining == ["svc-db", "svc-other"]
    assert network.sqs["vpce-sqs"].policy["Statement"] == [
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}
    ]


def test_recreated_environment_replaces_endpoints_of_the_old_generation() -> None:
    svc, network = service(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    old_ids = set(network.endpoints)
    svc._directory.environments[ARN] = environment(  # type: ignore[attr-defined]
        DatabaseVpcEndpointService="com.amazonaws.vpce.us-east-1.vpce-svc-db2",
        WebserverVpcEndpointService="com.amazonaws.vpce.us-east-1.vpce-svc-web2",
        CreatedAt=1795290000,
    )
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert not old_ids & set(network.endpoints)
    assert sorted(e["service_name"][-4:] for e in network.endpoints.values()) == ["-db2", "web2"]


def test_two_environments_in_one_vpc_both_keep_their_sqs_statement_when_reconciled_at_once() -> None:
    # Given two PENDING environments sharing a VPC, and a race window held open in the policy read
    other_arn = ARN.replace("/etl", "/other")
    svc, network = service(
        environment(),
        environment(
            Name="other",
            Arn=other_arn,
            CeleryExecutorQueue=QUEUE + "-other",
            DatabaseVpcEndpointService="svc-db-other",
            WebserverVpcEndpointService="svc-web-other",
        ),
    )
    read = threading.Barrier(2)
    original = network.sqs_endpoints

    def slow_read(vpc_id: str) -> list[SqsEndpoint]:
        found = [e.model_copy(deep=True) for e in original(vpc_id)]
        with contextlib.suppress(threading.BrokenBarrierError):
            read.wait(timeout=0.5)
        return found

    network.sqs_endpoints = slow_read  # type: ignore[method-assign]
    # When both are reconciled concurrently
    threads = [threading.Thread(target=svc.reconcile, args=(EnvironmentRef.from_arn(a),)) for a in (ARN, other_arn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then the shared SQS endpoint allows both queues
    resources = [s.get("Resource") for s in network.sqs["vpce-sqs"].policy["Statement"]]
    assert [QUEUE] in resources and [QUEUE + "-other"] in resources


def test_one_subnet_is_refused_before_anything_is_created() -> None:
    svc, network = service(environment(NetworkConfiguration={"SubnetIds": ["subnet-a"], "SecurityGroupIds": []}))
    with pytest.raises(NetworkLayoutError, match="exactly two"):
        svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert network.calls == []


def test_fleet_reconcile_covers_endpoints_of_environments_no_longer_listed() -> None:
    svc, network = service(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    svc._directory.environments.clear()  # type: ignore[attr-defined]
    results = svc.reconcile_fleet()
    assert [r.outcome for r in results] == ["removed"]
    assert network.endpoints == {}


def test_fleet_reconcile_goes_on_after_one_environment_fails() -> None:
    broken = environment(
        Name="broken",
        Arn=ARN.replace("/etl", "/broken"),
        NetworkConfiguration={"SubnetIds": ["subnet-a"], "SecurityGroupIds": []},
    )
    svc, _ = service(environment(), broken)
    outcomes = {r.environment_arn.rsplit("/", 1)[1]: r.outcome for r in svc.reconcile_fleet()}
    assert outcomes == {"broken": "failed", "etl": "provisioned"}


def test_client_token_differs_per_generation_and_service() -> None:
    a = client_token(environment(), "svc-1")
    assert a == client_token(environment(), "svc-1")
    assert a != client_token(environment(), "svc-2")
    assert a != client_token(environment(CreatedAt=1795290000), "svc-1")
    assert len(a) <= 64


def test_required_services_without_service_names_is_empty() -> None:
    env = environment(DatabaseVpcEndpointService=None, WebserverVpcEndpointService=None)
    assert required_services(env) == {}
