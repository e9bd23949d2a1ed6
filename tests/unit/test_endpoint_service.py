"""Domain logic of endpoint reconciliation, with in-memory fakes (no AWS)."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from mwaa_control.endpoints.service import EndpointService, client_token, is_mwaa_privatelink_service, required_services
from mwaa_control.errors import EndpointPolicyNotApplied, LeaseLost, NetworkLayoutError
from mwaa_control.models import ControlScope, EndpointRecord, Environment, EnvironmentRef
from mwaa_control.ports import SqsEndpoint
from tests.unit.fakes import FakeDirectory, FakeLock, FakeNetwork, FakeRegistry

ARN = "arn:aws:airflow:us-east-1:123456789012:environment/etl"
QUEUE = "arn:aws:sqs:us-east-1:210987654321:airflow-celery-abc"
DB = "com.amazonaws.vpce.us-east-1.vpce-svc-0db00000000000001"
WEB = "com.amazonaws.vpce.us-east-1.vpce-svc-0eb00000000000002"
SCOPE = ControlScope(
    partition="aws", region="us-east-1", account_id="123456789012", participant_account_ids=("222222222222",)
)
RESTRICTIVE = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}]}


def environment(**overrides: Any) -> Environment:
    fields: dict[str, Any] = {
        "Name": "etl",
        "Arn": ARN,
        "Status": "PENDING",
        "CreatedAt": 1795280000,
        "EndpointManagement": "CUSTOMER",
        "WebserverAccessMode": "PRIVATE_ONLY",
        "NetworkConfiguration": {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]},
        "DatabaseVpcEndpointService": DB,
        "WebserverVpcEndpointService": WEB,
        "CeleryExecutorQueue": QUEUE,
    }
    fields.update(overrides)
    return Environment.model_validate(fields)


def service(*environments: Environment) -> tuple[EndpointService, FakeNetwork]:
    svc, network, _ = service_and_registry(*environments)
    return svc, network


def service_and_registry(
    *environments: Environment, sleeps: list[float] | None = None
) -> tuple[EndpointService, FakeNetwork, FakeRegistry]:
    network = FakeNetwork({"subnet-a": "vpc-1", "subnet-b": "vpc-1"})
    network.add_sqs_endpoint("vpce-sqs", "vpc-1", RESTRICTIVE)
    registry = FakeRegistry()
    svc = EndpointService(
        FakeDirectory(*environments),
        network,
        FakeLock(),
        registry,
        deployment_id="stack",
        scope=SCOPE,
        sleep=(sleeps if sleeps is not None else []).append,
    )
    return svc, network, registry


def test_pending_private_environment_gets_database_and_webserver_endpoints() -> None:
    # Given a PENDING customer-managed environment with a private webserver
    svc, network = service(environment())
    # When it is reconciled
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    # Then one endpoint per service exists, in its subnets, with its security groups, tagged
    assert result.outcome == "provisioned"
    services = sorted(e["service_name"] for e in network.endpoints.values())
    assert services == [DB, WEB]
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
        client_token="t-other",
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
        client_token="t-another-stack",
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
        DatabaseVpcEndpointService=DB + "2", WebserverVpcEndpointService=WEB + "2", CreatedAt=1795290000
    )
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert not old_ids & set(network.endpoints)
    assert sorted(e["service_name"] for e in network.endpoints.values()) == [DB + "2", WEB + "2"]


def test_two_environments_in_one_vpc_both_keep_their_sqs_statement_when_reconciled_at_once() -> None:
    # Given two PENDING environments sharing a VPC, and a race window held open in the policy read
    other_arn = ARN.replace("/etl", "/other")
    svc, network = service(
        environment(),
        environment(
            Name="other",
            Arn=other_arn,
            CeleryExecutorQueue=QUEUE + "-other",
            DatabaseVpcEndpointService=DB + "3",
            WebserverVpcEndpointService=WEB + "3",
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


# --- the automation never acts on what it does not own -------------------------------------------

GHOST = "arn:aws:airflow:us-east-1:123456789012:environment/ghost"


def tag_as_ours(network: FakeNetwork, service_name: str, environment_arn: str, deployment: str = "stack") -> str:
    """An endpoint someone else created and tagged as ours."""
    return network.create_interface_endpoint(
        vpc_id="vpc-1",
        service_name=service_name,
        subnet_ids=[],
        security_group_ids=[],
        client_token=f"not-ours-{service_name}-{environment_arn}",
        tags={
            "mwaa-control:managed-by": deployment,
            "mwaa-control:environment-arn": environment_arn,
            "mwaa-control:endpoint-role": "database",
        },
    )


def test_mwaa_privatelink_services_are_told_from_aws_service_endpoints() -> None:
    assert is_mwaa_privatelink_service(DB, "us-east-1")
    assert not is_mwaa_privatelink_service("com.amazonaws.us-east-1.secretsmanager", "us-east-1")
    assert not is_mwaa_privatelink_service("com.amazonaws.vpce.us-west-2.vpce-svc-0db00000000000001", "us-east-1")
    assert not is_mwaa_privatelink_service("com.amazonaws.vpce.us-east-1.vpce-svc-0db0.evil", "us-east-1")


def test_created_endpoints_are_registered_and_deleted_ones_forgotten() -> None:
    svc, network, registry = service_and_registry(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert set(registry.records) == set(network.endpoints)
    record = registry.records[next(iter(registry.records))]
    assert (record.environment_arn, record.vpc_id) == (ARN, "vpc-1")
    svc._directory.environments.clear()  # type: ignore[attr-defined]
    assert svc.reconcile(EnvironmentRef.from_arn(ARN)).outcome == "removed"
    assert network.endpoints == {} and registry.records == {}


def test_an_endpoint_created_but_never_registered_is_registered_by_the_retry() -> None:
    # Given a crash between CreateVpcEndpoint and the registry write
    svc, network, registry = service_and_registry(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    lost = next(iter(registry.records))
    registry.forget([lost])
    # When the retry re-creates it (same ClientToken: EC2 returns the same endpoint)
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    # Then it is registered again, and still one endpoint per service exists
    assert lost in registry.records and len(network.endpoints) == 2


def test_gone_environment_keeps_a_privatelink_endpoint_tagged_as_ours_that_we_did_not_create() -> None:
    svc, network, _ = service_and_registry()
    foreign = tag_as_ours(network, DB, GHOST)
    result = svc.reconcile(EnvironmentRef.from_arn(GHOST))
    assert foreign in network.endpoints
    assert result.outcome == "skipped"
    [action] = result.actions
    assert action.action == "skipped" and action.endpoint_id == foreign and "registry" in str(action.reason)


def test_a_registered_endpoint_of_an_aws_service_is_still_never_deleted() -> None:
    svc, network, registry = service_and_registry()
    secrets = tag_as_ours(network, "com.amazonaws.us-east-1.secretsmanager", GHOST)
    registry.register(
        EndpointRecord(
            endpoint_id=secrets,
            environment_arn=GHOST,
            service_name="com.amazonaws.us-east-1.secretsmanager",
            vpc_id="vpc-1",
            created_at=datetime(2026, 11, 21, 9, tzinfo=UTC),
        )
    )
    result = svc.reconcile(EnvironmentRef.from_arn(GHOST))
    assert secrets in network.endpoints and "not an MWAA PrivateLink service" in str(result.actions[0].reason)


def test_an_endpoint_retagged_to_another_environment_is_left_alone() -> None:
    # Given our endpoint of 'etl', re-tagged by someone to name 'ghost', which does not exist
    svc, network, _ = service_and_registry(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    endpoint_id = next(iter(network.endpoints))
    network.endpoints[endpoint_id]["tags"]["mwaa-control:environment-arn"] = GHOST
    # When 'ghost' is reconciled, nothing is deleted: the registry says it belongs to 'etl'
    result = svc.reconcile(EnvironmentRef.from_arn(GHOST))
    assert endpoint_id in network.endpoints
    assert "disagree with the registry" in str(result.actions[0].reason)


def test_fleet_reports_tagged_endpoints_it_will_not_act_on_and_reads_no_environment_for_them() -> None:
    svc, network, _ = service_and_registry()
    unregistered = tag_as_ours(network, DB, GHOST)
    stranger = tag_as_ours(network, DB + "9", "arn:aws:airflow:us-east-1:999999999999:environment/etl")
    other_region = tag_as_ours(network, DB + "8", "arn:aws:airflow:eu-west-1:123456789012:environment/etl")
    results = {r.actions[0].endpoint_id: r for r in svc.reconcile_fleet()}
    assert {i: r.outcome for i, r in results.items()} == {
        unregistered: "skipped",
        stranger: "skipped",
        other_region: "skipped",
    }
    assert "999999999999 is not configured" in results[stranger].reason
    assert "region eu-west-1" in results[other_region].reason
    assert svc._directory.reads == []  # type: ignore[attr-defined]
    assert len(network.endpoints) == 3


def test_one_malformed_tag_does_not_stop_the_fleet_reconcile() -> None:
    # Given an endpoint tagged environment-arn=not-an-arn and a PENDING environment whose events were lost
    svc, network, _ = service_and_registry(environment())
    bad = tag_as_ours(network, DB + "7", "not-an-arn")
    # When the fallback runs
    results = {r.environment_arn: r for r in svc.reconcile_fleet()}
    # Then the environment is provisioned and the bad endpoint reported with a reason
    assert results[ARN].outcome == "provisioned"
    assert results["not-an-arn"].outcome == "skipped"
    assert results["not-an-arn"].actions[0].endpoint_id == bad
    assert "not an MWAA environment ARN" in results["not-an-arn"].reason


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:airflow:us-east-1:999999999999:environment/etl",  # unconfigured account
        "arn:aws:airflow:eu-west-1:123456789012:environment/etl",  # another region
        "arn:aws-cn:airflow:us-east-1:123456789012:environment/etl",  # another partition
    ],
)
def test_environments_out_of_scope_are_ignored_before_any_call(arn: str) -> None:
    svc, network, _ = service_and_registry(environment())
    result = svc.reconcile(EnvironmentRef.from_arn(arn))
    assert result.outcome == "ignored" and result.reason
    assert svc._directory.reads == [] and network.calls == []  # type: ignore[attr-defined]


# --- SQS endpoints: only where the VPC owner opted in, and verified -----------------------------


def test_an_sqs_endpoint_not_opted_in_is_reported_and_left_alone() -> None:
    svc, network, _ = service_and_registry(environment())
    network.add_sqs_endpoint("vpce-sqs", "vpc-1", RESTRICTIVE, opted_in_by=None)
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert network.sqs["vpce-sqs"].policy == RESTRICTIVE
    [action] = [a for a in result.actions if a.endpoint_id == "vpce-sqs"]
    assert action.action == "sqs-endpoint-not-opted-in" and "mwaa-control:amend-policy=stack" in str(action.reason)


def test_an_sqs_endpoint_opted_in_for_another_stack_is_left_alone() -> None:
    svc, network, _ = service_and_registry(environment())
    network.add_sqs_endpoint("vpce-sqs", "vpc-1", RESTRICTIVE, opted_in_by="another-stack")
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert network.sqs["vpce-sqs"].policy == RESTRICTIVE and "policy vpce-sqs" not in network.calls


def test_our_statement_on_an_endpoint_no_longer_opted_in_is_reported_on_removal() -> None:
    svc, network, _ = service_and_registry(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    network.sqs["vpce-sqs"].tags.clear()
    svc._directory.environments.clear()  # type: ignore[attr-defined]
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert "sqs-endpoint-not-opted-in" in [a.action for a in result.actions]
    assert network.sqs["vpce-sqs"].policy != RESTRICTIVE  # left as it was: not ours to change any more


def test_a_policy_write_that_reads_back_late_is_accepted_after_short_retries() -> None:
    sleeps: list[float] = []
    svc, network, _ = service_and_registry(environment(), sleeps=sleeps)
    network.stale_policy_reads = 2
    result = svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert "sqs-policy-updated" in [a.action for a in result.actions]
    assert len(sleeps) == 2


def test_a_policy_write_that_never_reads_back_fails_clearly() -> None:
    sleeps: list[float] = []
    svc, network, _ = service_and_registry(environment(), sleeps=sleeps)
    network.stale_policy_reads = None
    with pytest.raises(EndpointPolicyNotApplied, match="vpce-sqs"):
        svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert len(sleeps) == 3


def test_the_withdrawal_of_our_statement_is_verified_too() -> None:
    svc, network, _ = service_and_registry(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    svc._directory.environments.clear()  # type: ignore[attr-defined]
    network.stale_policy_reads = None
    with pytest.raises(EndpointPolicyNotApplied, match="withdraw"):
        svc.reconcile(EnvironmentRef.from_arn(ARN))


# --- a lost lease stops destructive calls ----------------------------------------------------------


def test_a_lost_lease_stops_the_deletion_of_endpoints() -> None:
    # Given our endpoints of an environment that is gone, and a lease lost while GetEnvironment ran
    svc, network, registry = service_and_registry(environment())
    svc.reconcile(EnvironmentRef.from_arn(ARN))
    lock: FakeLock = svc._lock  # type: ignore[assignment]
    directory: FakeDirectory = svc._directory  # type: ignore[assignment]
    directory.environments.clear()

    def lose_lease(ref: EnvironmentRef) -> None:
        lock.leases[ref.arn].lost = True

    directory.get_environment = lose_lease  # type: ignore[method-assign]
    network.calls.clear()
    # When it is reconciled, then LeaseLost stops it before any deletion or policy change
    with pytest.raises(LeaseLost):
        svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert network.calls == [] and len(network.endpoints) == 2 and len(registry.records) == 2


def test_a_lost_lease_stops_the_sqs_policy_change() -> None:
    svc, network, _ = service_and_registry(environment())
    lock: FakeLock = svc._lock  # type: ignore[assignment]
    original = network.sqs_endpoints

    def read_then_lose(vpc_id: str) -> list[SqsEndpoint]:
        lock.leases[f"sqs-policy#{vpc_id}"].lost = True
        return original(vpc_id)

    network.sqs_endpoints = read_then_lose  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        svc.reconcile(EnvironmentRef.from_arn(ARN))
    assert network.sqs["vpce-sqs"].policy == RESTRICTIVE
