"""Review findings on the endpoint automation: adoption of endpoints tagged before the registry
existed, withdrawal of SQS statements wherever they are, intents written before CreateVpcEndpoint,
no change (and no alarm) where none is needed, late opt-ins, one broken participant, and a lease
re-checked after a policy write."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from mwaa_control.endpoints.service import EndpointService
from mwaa_control.endpoints.sqs_policy import policy_allowing_queue, statement_id
from mwaa_control.errors import LeaseLost
from mwaa_control.models import EndpointRecord, EnvironmentRef
from tests.unit.fakes import FakeDirectory, FakeLock, FakeNetwork, FakeRegistry
from tests.unit.test_endpoint_service import (
    ARN,
    DB,
    GHOST,
    QUEUE,
    RESTRICTIVE,
    SCOPE,
    WEB,
    environment,
    service_and_registry,
    tag_as_ours,
)

FULL_ACCESS = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}


def ref(arn: str = ARN) -> EnvironmentRef:
    return EnvironmentRef.from_arn(arn)


# --- 1. adoption of endpoints tagged before the registry existed ----------------------------------


def test_adoption_lists_pre_registry_endpoints_and_registers_only_those_matching_the_environment() -> None:
    # Given endpoints the old code tagged (no registry record): two of a live environment, one of
    # a gone environment, one to a service the live environment no longer uses, one AWS service
    svc, network, registry = service_and_registry(environment(Status="AVAILABLE"))
    db, web = tag_as_ours(network, DB, ARN), tag_as_ours(network, WEB, ARN)
    gone = tag_as_ours(network, DB + "5", GHOST)
    stale = tag_as_ours(network, DB + "6", ARN)
    secrets = tag_as_ours(network, "com.amazonaws.us-east-1.secretsmanager", ARN)
    # When the operator looks (dry run): every candidate is listed, nothing is registered
    candidates = {c.endpoint.endpoint_id: c for c in svc.adoption_candidates()}
    assert {i: c.verdict for i, c in candidates.items()} == {
        db: "adopt",
        web: "adopt",
        gone: "gone",
        stale: "refused",
        secrets: "refused",
    }
    assert "current" in candidates[stale].reason
    assert registry.records == {}
    # When they are adopted without --include-gone: only the two matching endpoints are registered
    adopted = svc.adopt(list(candidates.values()), include_gone=False)
    assert sorted(c.endpoint.endpoint_id for c in adopted) == sorted([db, web])
    assert set(registry.records) == {db, web}
    assert registry.records[db].environment_arn == ARN and registry.records[db].vpc_id == "vpc-1"


def test_an_adopted_endpoint_of_a_gone_environment_is_removed_by_the_next_sweep() -> None:
    svc, network, registry = service_and_registry()
    gone = tag_as_ours(network, DB, GHOST)
    # The old code opened the SQS policy for the ghost environment too
    network.sqs["vpce-sqs"].policy = policy_allowing_queue(RESTRICTIVE, GHOST, QUEUE) or {}
    adopted = svc.adopt(svc.adoption_candidates(), include_gone=True)
    assert [c.endpoint.endpoint_id for c in adopted] == [gone] and gone in registry.records
    results = svc.reconcile_fleet()
    assert [r.outcome for r in results] == ["removed"]
    assert gone not in network.endpoints and network.sqs["vpce-sqs"].policy["Statement"] == RESTRICTIVE["Statement"]


def test_adoption_never_reads_environments_out_of_scope() -> None:
    svc, network, registry = service_and_registry()
    stranger = tag_as_ours(network, DB, "arn:aws:airflow:us-east-1:999999999999:environment/etl")
    [candidate] = svc.adoption_candidates()
    assert candidate.endpoint.endpoint_id == stranger and candidate.verdict == "refused"
    assert svc._directory.reads == []  # type: ignore[attr-defined]
    assert svc.adopt([candidate], include_gone=True) == [] and registry.records == {}


def test_removal_withdraws_the_statement_from_opted_in_sqs_endpoints_of_every_vpc() -> None:
    # Given our statement for a gone environment on an opted-in SQS endpoint of a VPC where we
    # hold no endpoint of it (its endpoints predate the registry, or were deleted by hand)
    svc, network, _ = service_and_registry()
    network.add_sqs_endpoint("vpce-sqs-2", "vpc-2", policy_allowing_queue(RESTRICTIVE, GHOST, QUEUE) or {})
    network.add_sqs_endpoint(
        "vpce-sqs-3", "vpc-3", policy_allowing_queue(RESTRICTIVE, GHOST, QUEUE) or {}, opted_in_by=None
    )
    # When the gone environment is reconciled
    result = svc.reconcile(ref(GHOST))
    # Then the statement is withdrawn where we may, and reported where we may not
    assert network.sqs["vpce-sqs-2"].policy["Statement"] == RESTRICTIVE["Statement"]
    assert statement_id(GHOST) in str(network.sqs["vpce-sqs-3"].policy)
    assert result.outcome == "removed"
    assert ("sqs-policy-updated", "vpce-sqs-2") in [(a.action, a.endpoint_id) for a in result.actions]


# --- 4. an intent is written before CreateVpcEndpoint -------------------------------------------


class RegisterFailsOnce(FakeRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def register(self, record: EndpointRecord) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("DynamoDB did not answer")
        super().register(record)


def test_an_endpoint_whose_registration_failed_is_still_removed_after_mwaa_left_pending() -> None:
    # Given CreateVpcEndpoint succeeded but the registration failed, and MWAA then left PENDING
    registry = RegisterFailsOnce()
    network = FakeNetwork({"subnet-a": "vpc-1", "subnet-b": "vpc-1"})
    directory = FakeDirectory(environment(WebserverAccessMode="PUBLIC_ONLY"))
    svc = EndpointService(directory, network, FakeLock(), registry, deployment_id="stack", scope=SCOPE)
    with pytest.raises(RuntimeError):
        svc.reconcile(ref())
    assert len(network.endpoints) == 1
    assert registry.records == {} and len(registry.intents) == 1
    directory.environments[ARN] = environment(Status="AVAILABLE", WebserverAccessMode="PUBLIC_ONLY")
    svc.reconcile_fleet()
    # When the environment is deleted
    directory.environments.clear()
    result = svc.reconcile(ref())
    # Then its endpoint is removed: the intent vouched for it
    assert result.outcome == "removed" and network.endpoints == {}


def test_the_intent_is_written_before_the_endpoint_is_created_and_dropped_once_registered() -> None:
    svc, network, registry = service_and_registry(environment(WebserverAccessMode="PUBLIC_ONLY"))
    seen: list[int] = []
    create = network.create_interface_endpoint

    def create_after_intent(**kwargs: Any) -> str:
        seen.append(len(registry.intents))
        assert registry.intents[kwargs["client_token"]].service_name == kwargs["service_name"]
        return create(**kwargs)

    network.create_interface_endpoint = create_after_intent  # type: ignore[method-assign]
    svc.reconcile(ref())
    assert seen == [1] and registry.intents == {} and len(registry.records) == 1


def test_an_intent_does_not_vouch_for_an_endpoint_created_before_it() -> None:
    # Someone's endpoint, created (and tagged with our token) before we wrote the intent
    svc, network, registry = service_and_registry()
    endpoint_id = tag_as_ours(network, DB, GHOST)
    network.endpoints[endpoint_id]["tags"]["mwaa-control:client-token"] = "tok"
    network.endpoints[endpoint_id]["created_at"] = datetime(2026, 11, 1, tzinfo=UTC)
    from mwaa_control.models import EndpointIntent

    registry.record_intent(
        EndpointIntent(
            client_token="tok",
            environment_arn=GHOST,
            service_name=DB,
            vpc_id="vpc-1",
            role="database",
            created_at=datetime(2026, 11, 20, tzinfo=UTC),
        )
    )
    result = svc.reconcile(ref(GHOST))
    assert endpoint_id in network.endpoints and result.outcome == "skipped"


# --- 5. no change needed: no opt-in needed; late opt-ins are applied by the sweep ----------------


def test_an_sqs_endpoint_that_already_allows_the_queue_needs_no_opt_in() -> None:
    svc, network, _ = service_and_registry(environment())
    network.add_sqs_endpoint("vpce-sqs", "vpc-1", FULL_ACCESS, opted_in_by=None)
    result = svc.reconcile(ref())
    [action] = [a for a in result.actions if a.endpoint_id == "vpce-sqs"]
    assert action.action == "sqs-policy-ok"


def test_the_sweep_applies_a_late_opt_in_of_an_available_environment() -> None:
    # Given an AVAILABLE environment whose VPC owner opted the SQS endpoint in after it was created
    svc, network, _ = service_and_registry(environment(Status="AVAILABLE"))
    # When the fallback sweep runs
    [result] = svc.reconcile_fleet()
    # Then the statement is added; an event-driven reconcile of an AVAILABLE environment changes nothing
    assert [QUEUE] in [s.get("Resource") for s in network.sqs["vpce-sqs"].policy["Statement"]]
    assert "sqs-policy-updated" in [a.action for a in result.actions]


def test_events_of_available_environments_still_change_nothing() -> None:
    svc, network, _ = service_and_registry(environment(Status="AVAILABLE"))
    assert svc.reconcile(ref()).outcome == "no-op" and network.calls == []


def test_sqs_endpoints_not_opted_in_are_counted_apart_from_endpoints_left_alone() -> None:
    from mwaa_control.endpoints.service import left_alone_counts

    svc, network, _ = service_and_registry(environment())
    network.add_sqs_endpoint("vpce-sqs", "vpc-1", RESTRICTIVE, opted_in_by=None)
    tag_as_ours(network, DB + "4", GHOST)
    counts = left_alone_counts(svc.reconcile_fleet())
    assert (counts.endpoints, counts.sqs_endpoints_not_opted_in) == (1, 1)


# --- 7. one broken participant does not stop the sweep ----------------------------------------


def test_a_participant_whose_role_is_broken_does_not_stop_the_sweep() -> None:
    svc, _, _ = service_and_registry(environment())
    svc._directory.broken_accounts.add("222222222222")  # type: ignore[attr-defined]
    results = {r.environment_arn: r for r in svc.reconcile_fleet()}
    assert results[ARN].outcome == "provisioned"
    [failed] = [r for r in results.values() if r.outcome == "failed"]
    assert "222222222222" in failed.environment_arn and "AccessDenied" in failed.reason


# --- 3. the lease is checked again after a policy write -------------------------------------------


class SilentLease:
    """A lease that went silent (no renewal got through) during the write: not known to be lost."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.silent = False

    def ensure(self) -> None:
        if self.silent:
            raise LeaseLost(f"lease on {self.key} could not be renewed")


class SilentLock:
    def __init__(self) -> None:
        self.leases: dict[str, SilentLease] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[SilentLease]:
        lease = self.leases[key] = SilentLease(key)
        yield lease


def test_a_lease_that_went_silent_during_a_policy_write_is_reported_not_trusted() -> None:
    lock = SilentLock()
    network = FakeNetwork({"subnet-a": "vpc-1", "subnet-b": "vpc-1"})
    network.add_sqs_endpoint("vpce-sqs", "vpc-1", RESTRICTIVE)
    svc = EndpointService(
        FakeDirectory(environment()), network, lock, FakeRegistry(), deployment_id="stack", scope=SCOPE
    )
    write = network.replace_endpoint_policy

    def slow_write(endpoint_id: str, policy: Any) -> None:
        write(endpoint_id, policy)
        lock.leases["sqs-policy#vpc-1"].silent = True

    network.replace_endpoint_policy = slow_write  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        svc.reconcile(ref())
