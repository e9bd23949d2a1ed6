"""The deployed event path on the local cloud: emulator event -> rule pattern from template.yaml ->
real handler -> EC2 (moto) -> the emulator leaves PENDING. Also redelivery, concurrency, malformed
and foreign events, cleanup, the polling fallback and the shared-VPC (cross-account) layout."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.handlers import BUILTIN_HANDLERS

from localcloud import LocalCloud
from mwaa_control.endpoints.ec2 import Ec2EndpointNetwork
from tests.conftest import (
    RESTRICTIVE_SQS_POLICY,
    SharedVpc,
    build_shared_vpc,
    create_request,
    live_endpoints,
    load_event,
)

MANAGER = "EndpointManagerFunction"
RECONCILER = "EndpointReconcilerFunction"
STACK = "mwaa-control"
PARTICIPANTS = {"ParticipantRoleName": "mwaa-control-reader", "ParticipantAccountIds": "222222222222"}


def status(cloud: LocalCloud, name: str = "etl-shared", session: Any = None) -> str:
    client = session.client("mwaa") if session else cloud.client("mwaa")
    return str(client.get_environment(Name=name)["Environment"]["Status"])


def sqs_policy(cloud: LocalCloud, vpc: SharedVpc) -> dict[str, Any]:
    raw = cloud.client("ec2").describe_vpc_endpoints(VpcEndpointIds=[vpc.sqs_endpoint_id])["VpcEndpoints"][0]
    loaded: dict[str, Any] = json.loads(raw["PolicyDocument"])
    return loaded


def test_pending_environment_gets_its_endpoints_and_becomes_available(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # Given a customer-managed environment in a restrictive shared VPC
    mwaa = cloud.client("mwaa")
    mwaa.create_environment(**create_request("etl-shared", vpc))
    # When MWAA reaches PENDING and emits its status-change event
    cloud.clock.advance(timedelta(minutes=5))
    # Then the deployed rule delivered it, the handler created exactly the two endpoints...
    env = mwaa.get_environment(Name="etl-shared")["Environment"]
    services = sorted(e["ServiceName"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id))
    assert services == sorted(
        ["com.amazonaws.us-east-1.sqs", env["DatabaseVpcEndpointService"], env["WebserverVpcEndpointService"]]
    )
    # ...opened the SQS endpoint policy to the Celery queue, and MWAA resumed creation
    assert any(s.get("Resource") == [env["CeleryExecutorQueue"]] for s in sqs_policy(cloud, vpc)["Statement"])
    assert env["Status"] == "CREATING"
    cloud.clock.advance(timedelta(minutes=15))
    assert status(cloud) == "AVAILABLE"
    pending = [d for d in cloud.events.deliveries if d.detail_status == "PENDING"]
    assert [(d.function, d.rule, d.outcome["outcome"]) for d in pending] == [(MANAGER, "StatusChange", "provisioned")]


def test_deletion_removes_only_our_endpoints(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # Given an available environment with our endpoints, and endpoints that are not ours
    ec2 = cloud.client("ec2")
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.run_for(timedelta(minutes=30))
    assert status(cloud) == "AVAILABLE"
    foreign = ec2.create_vpc_endpoint(
        VpcId=vpc.vpc_id,
        ServiceName="com.amazonaws.us-east-1.s3",
        VpcEndpointType="Interface",
        SubnetIds=vpc.subnet_ids,
    )
    ours = {e["VpcEndpointId"] for e in live_endpoints(ec2, vpc.vpc_id)} - {
        vpc.sqs_endpoint_id,
        foreign["VpcEndpoint"]["VpcEndpointId"],
    }
    assert len(ours) == 2
    # When the environment is deleted
    cloud.client("mwaa").delete_environment(Name="etl-shared")
    cloud.clock.advance(timedelta(minutes=15))
    # Then our endpoints are gone, the others are untouched and the SQS policy is the owner's again
    remaining = {e["VpcEndpointId"] for e in live_endpoints(ec2, vpc.vpc_id)}
    assert remaining == {vpc.sqs_endpoint_id, foreign["VpcEndpoint"]["VpcEndpointId"]}
    assert sqs_policy(cloud, vpc) == RESTRICTIVE_SQS_POLICY


def test_same_event_delivered_five_times_yields_one_endpoint_per_service(cloud: LocalCloud, vpc: SharedVpc) -> None:
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    assert status(cloud) == "PENDING"
    event = load_event("mwaa_status_pending.json")
    results = [cloud.events.publish(copy.deepcopy(event))[0] for _ in range(5)]
    # The first delivery provisions; once MWAA sees the endpoints it resumes CREATING, so the
    # redeliveries find nothing to do. Either way: one endpoint per service.
    assert results[0].outcome["outcome"] == "provisioned"
    assert {r.outcome["outcome"] for r in results[1:]} <= {"provisioned", "no-op"}
    created = [a for r in results for a in r.outcome["actions"] if a["action"] == "created"]
    assert len(created) == 2
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 3


def test_concurrent_deliveries_yield_one_endpoint_per_service(
    cloud: LocalCloud, vpc: SharedVpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five concurrent deliveries, and a race window held open: every invocation that has
    # looked up the existing endpoints waits (up to 1 s) for the others to have looked too. Without
    # the per-environment lease all five would see none and create ten endpoints.
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    looked = threading.Barrier(5)
    original = Ec2EndpointNetwork.managed_endpoints

    def slow_lookup(self: Ec2EndpointNetwork, environment_arn: str | None = None) -> Any:
        found = original(self, environment_arn)
        with contextlib.suppress(threading.BrokenBarrierError):
            looked.wait(timeout=1)
        return found

    monkeypatch.setattr(Ec2EndpointNetwork, "managed_endpoints", slow_lookup)
    event = load_event("mwaa_status_pending.json")
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def deliver() -> None:
        start.wait()
        try:
            cloud.lambdas.invoke(MANAGER, copy.deepcopy(event))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    # When they run at once
    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one endpoint per service exists
    assert errors == []
    endpoints = live_endpoints(cloud.client("ec2"), vpc.vpc_id)
    assert len(endpoints) == 3
    assert len({e["ServiceName"] for e in endpoints}) == 3


def test_duplicated_events_from_the_emulator_change_nothing_more(cloud: LocalCloud, vpc: SharedVpc) -> None:
    cloud.emulator.event_mode = "duplicate"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    assert len([d for d in cloud.events.deliveries if d.detail_status == "PENDING"]) == 2
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 3


@pytest.mark.parametrize(
    "sample",
    [
        "foreign_ec2_state_change.json",
        "malformed_conflicting_names.json",
        "malformed_no_environment.json",
        "malformed_not_eventbridge.json",
    ],
)
def test_malformed_or_foreign_events_log_a_reason_and_touch_nothing(
    cloud: LocalCloud, vpc: SharedVpc, sample: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    calls_before = len(cloud.emulator.calls)
    caplog.clear()
    result = cloud.lambdas.invoke(MANAGER, load_event(sample))
    assert result["outcome"] == "ignored"
    assert any(r.getMessage() == "ignored event" and getattr(r, "reason", "") for r in caplog.records)
    assert len(cloud.emulator.calls) == calls_before  # not even GetEnvironment
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1


def test_foreign_events_do_not_match_the_deployed_rule(cloud: LocalCloud) -> None:
    assert cloud.events.publish(load_event("foreign_ec2_state_change.json")) == []


def test_the_event_body_is_not_trusted_over_get_environment(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # A stale PENDING event for a customer-managed environment that is AVAILABLE now creates nothing.
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.run_for(timedelta(minutes=30))
    assert status(cloud) == "AVAILABLE"
    before = {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)}
    [delivery] = cloud.events.publish(load_event("mwaa_status_pending.json"))
    assert (delivery.outcome["outcome"], delivery.outcome["status"]) == ("no-op", "AVAILABLE")
    assert {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)} == before


def test_polling_fallback_recovers_missed_events(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # Given every event is lost
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1
    # When the scheduled reconciler runs, the environment gets its endpoints
    result = cloud.lambdas.invoke("EndpointReconcilerFunction", load_event("scheduled_reconcile.json"))
    assert [r["outcome"] for r in result["results"]] == ["provisioned"]
    cloud.run_for(timedelta(minutes=16))
    assert status(cloud) == "AVAILABLE"
    # And after a deletion nobody heard of, the next run removes them
    cloud.client("mwaa").delete_environment(Name="etl-shared")
    cloud.run_for(timedelta(minutes=16))
    result = cloud.lambdas.invoke("EndpointReconcilerFunction", load_event("scheduled_reconcile.json"))
    assert [r["outcome"] for r in result["results"]] == ["removed"]
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1


def test_transient_mwaa_errors_are_retried_inside_the_handler(cloud: LocalCloud, vpc: SharedVpc) -> None:
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    cloud.emulator.inject_fault("GetEnvironment", "ThrottlingException", status=429, times=1)
    cloud.emulator.inject_fault("GetEnvironment", "ServiceUnavailableException", status=503, times=1)
    [delivery] = cloud.events.publish(load_event("mwaa_status_pending.json"))
    assert delivery.error is None and delivery.outcome["outcome"] == "provisioned"


def test_persistent_errors_fail_the_invocation_and_dead_letter_the_event(cloud: LocalCloud, vpc: SharedVpc) -> None:
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    cloud.emulator.inject_fault(
        "GetEnvironment", "AccessDeniedException", status=403, times=100, message="not authorized"
    )
    [delivery] = cloud.events.publish(load_event("mwaa_status_pending.json"))
    assert delivery.error is not None and "AccessDenied" in delivery.error
    assert (
        cloud.events.dead_letters and cloud.events.dead_letters[0]["id"] == load_event("mwaa_status_pending.json")["id"]
    )
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1


def test_recreated_environment_gets_fresh_endpoints_and_old_ones_go(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # Pause/resume deletes and recreates under the same name: new service names every time.
    mwaa, ec2 = cloud.client("mwaa"), cloud.client("ec2")
    mwaa.create_environment(**create_request("etl-shared", vpc))
    cloud.run_for(timedelta(minutes=30))
    first = {e["VpcEndpointId"] for e in live_endpoints(ec2, vpc.vpc_id)}
    cloud.emulator.event_mode = "drop"  # the deletion goes unheard
    mwaa.delete_environment(Name="etl-shared")
    cloud.run_for(timedelta(minutes=16))
    cloud.emulator.event_mode = "deliver"
    mwaa.create_environment(**create_request("etl-shared", vpc))
    cloud.run_for(timedelta(minutes=30))
    assert status(cloud) == "AVAILABLE"
    second = {e["VpcEndpointId"] for e in live_endpoints(ec2, vpc.vpc_id)}
    assert first & second == {vpc.sqs_endpoint_id}
    assert len(second) == 3


def test_shared_vpc_participant_environment_is_served_by_the_owner_account() -> None:
    # Given the owner account runs the stack with a participant account and its role configured
    with LocalCloud(parameters=PARTICIPANTS) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.events.forwarding_accounts.add("222222222222")
        # When the participant creates a customer-managed environment in the owner's subnets
        with cloud.participant("222222222222") as participant:
            participant.client("mwaa").create_environment(**create_request("etl-shared", vpc))
            cloud.clock.advance(timedelta(minutes=5))
            # Then its forwarded event makes the owner create the endpoints in the owner's VPC
            assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 3
            cloud.run_for(timedelta(minutes=16))
            assert status(cloud, session=participant) == "AVAILABLE"
            [pending] = [d for d in cloud.events.deliveries if d.detail_status == "PENDING"]
            assert pending.outcome["environment_arn"].split(":")[4] == "222222222222"


def test_polling_fallback_finds_participant_environments_whose_events_were_lost() -> None:
    # Given the owner's stack knows its participant accounts, and every event is lost
    params = {"ParticipantRoleName": "mwaa-control-reader", "ParticipantAccountIds": "222222222222,333333333333"}
    with LocalCloud(parameters=params) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.emulator.event_mode = "drop"
        with cloud.participant("222222222222") as participant:
            participant.client("mwaa").create_environment(**create_request("etl-shared", vpc))
            cloud.run_for(timedelta(minutes=10))
            assert status(cloud, session=participant) == "PENDING"
            # When the scheduled reconciler runs
            result = cloud.lambdas.invoke("EndpointReconcilerFunction", load_event("scheduled_reconcile.json"))
            # Then it listed the participant's environments and provisioned the PENDING one
            assert [(r["environment_arn"].split(":")[4], r["outcome"]) for r in result["results"]] == [
                ("222222222222", "provisioned")
            ]
            cloud.run_for(timedelta(minutes=16))
            assert status(cloud, session=participant) == "AVAILABLE"


def test_participant_event_without_a_participant_role_is_ignored_with_a_reason() -> None:
    # Given a participant account configured, but no role to read its environments
    with LocalCloud(parameters={"ParticipantAccountIds": "222222222222"}) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.events.forwarding_accounts.add("222222222222")
        with cloud.participant("222222222222") as participant:
            participant.client("mwaa").create_environment(**create_request("etl-shared", vpc))
            cloud.clock.advance(timedelta(minutes=5))
        [pending] = [d for d in cloud.events.deliveries if d.detail_status == "PENDING"]
        assert pending.outcome["outcome"] == "ignored" and "ParticipantRoleName" in pending.outcome["reason"]
        assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1


def test_events_of_accounts_that_do_not_forward_never_arrive(cloud: LocalCloud, vpc: SharedVpc) -> None:
    with cloud.participant("333333333333") as participant:
        participant.client("mwaa").create_environment(**create_request("etl-shared", vpc))
        cloud.clock.advance(timedelta(minutes=5))
    assert cloud.events.deliveries == []


def test_no_log_line_carries_airflow_configuration_values(
    cloud: LocalCloud, vpc: SharedVpc, caplog: pytest.LogCaptureFixture
) -> None:
    # Given configuration options (sensitive in MWAA's API model) and our logger at DEBUG
    secret = "s3cr3t-smtp-password-value"
    caplog.set_level(logging.DEBUG, logger="mwaa-control")
    cloud.client("mwaa").create_environment(
        **create_request("etl-shared", vpc, AirflowConfigurationOptions={"smtp.smtp_password": secret})
    )
    # When the whole lifecycle runs through the handlers
    cloud.run_for(timedelta(minutes=30))
    cloud.client("mwaa").delete_environment(Name="etl-shared")
    cloud.run_for(timedelta(minutes=16))
    # Then the handlers logged plenty (message and structured extras), and never the value
    ours = [r for r in caplog.records if r.name == "mwaa-control"]
    assert any(r.getMessage() == "reconciled endpoints" for r in ours)
    assert not [r for r in ours if secret in json.dumps(r.__dict__, default=str)]


# --- the automation never acts on what it does not own -------------------------------------------


@contextlib.contextmanager
def api_calls(operation: str) -> Iterator[list[dict[str, Any]]]:
    """Parameters of every call to one API operation (e.g. "sts.AssumeRole") made while inside,
    by any client created inside (the handlers create theirs on first use)."""
    seen: list[dict[str, Any]] = []

    def spy(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    entry = (f"before-parameter-build.{operation}", spy)
    BUILTIN_HANDLERS.append(entry)
    try:
        yield seen
    finally:
        BUILTIN_HANDLERS.remove(entry)


def tagged_as_ours(cloud: LocalCloud, vpc: SharedVpc, service_name: str, environment_arn: str) -> str:
    """An endpoint someone else created and tagged as ours (anyone with ec2:CreateTags can)."""
    return str(
        cloud.client("ec2").create_vpc_endpoint(
            VpcId=vpc.vpc_id,
            ServiceName=service_name,
            VpcEndpointType="Interface",
            SubnetIds=vpc.subnet_ids,
            TagSpecifications=[
                {
                    "ResourceType": "vpc-endpoint",
                    "Tags": [
                        {"Key": "mwaa-control:managed-by", "Value": STACK},
                        {"Key": "mwaa-control:environment-arn", "Value": environment_arn},
                        {"Key": "mwaa-control:endpoint-role", "Value": "database"},
                    ],
                }
            ],
        )["VpcEndpoint"]["VpcEndpointId"]
    )


def skipped_reasons(result: dict[str, Any], endpoint_id: str) -> list[str]:
    return [
        str(a.get("reason"))
        for r in result["results"]
        for a in r["actions"]
        if a["action"] == "skipped" and a["endpoint_id"] == endpoint_id
    ]


GHOST = "arn:aws:airflow:us-east-1:123456789012:environment/ghost"
MWAA_LIKE_SERVICE = "com.amazonaws.vpce.us-east-1.vpce-svc-0a1b2c3d4e5f60718"


def test_reconciler_leaves_a_tagged_aws_service_endpoint_alone(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # Given an unrelated Secrets Manager endpoint tagged as ours, naming an environment that never existed
    secrets = tagged_as_ours(cloud, vpc, "com.amazonaws.us-east-1.secretsmanager", GHOST)
    # When the scheduled reconciler runs
    with api_calls("ec2.DeleteVpcEndpoints") as deletions:
        result = cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
    # Then it is reported as skipped with a reason, never deleted, and the sweep succeeds
    assert deletions == []
    assert secrets in {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)}
    [reason] = skipped_reasons(result, secrets)
    assert "not an MWAA PrivateLink service" in reason


def test_reconciler_leaves_a_tagged_but_unregistered_privatelink_endpoint_alone(
    cloud: LocalCloud, vpc: SharedVpc
) -> None:
    # Given a PrivateLink endpoint tagged as ours that this deployment never created
    foreign = tagged_as_ours(cloud, vpc, MWAA_LIKE_SERVICE, GHOST)
    # When the scheduled reconciler runs
    with api_calls("ec2.DeleteVpcEndpoints") as deletions:
        result = cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
    # Then it survives: tags are not ownership, the registry of what we created is
    assert deletions == []
    assert foreign in {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)}
    [reason] = skipped_reasons(result, foreign)
    assert "registry" in reason


def test_endpoint_tagged_with_another_accounts_environment_makes_no_assume_role() -> None:
    # Given a stack with a participant role, and an endpoint tagged with an unconfigured account's environment
    with LocalCloud(parameters=PARTICIPANTS) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        stranger = tagged_as_ours(
            cloud, vpc, MWAA_LIKE_SERVICE, "arn:aws:airflow:us-east-1:999999999999:environment/etl"
        )
        # When the scheduled reconciler runs
        with api_calls("sts.AssumeRole") as assumed:
            result = cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
        # Then no role was assumed in that account and the endpoint is reported, not touched
        assert not [p for p in assumed if ":999999999999:" in p["RoleArn"]]
        [reason] = skipped_reasons(result, stranger)
        assert "999999999999" in reason and "not configured" in reason
        assert stranger in {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)}


def test_a_malformed_tag_does_not_stop_the_fallback(cloud: LocalCloud, vpc: SharedVpc) -> None:
    # Given an endpoint tagged environment-arn=not-an-arn, and a PENDING environment whose events were lost
    bad = tagged_as_ours(cloud, vpc, MWAA_LIKE_SERVICE, "not-an-arn")
    cloud.emulator.event_mode = "drop"
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    assert status(cloud) == "PENDING"
    # When the scheduled reconciler runs
    result = cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
    # Then the environment got its endpoints and the bad tag was reported with a reason
    outcomes = {r["environment_arn"]: r["outcome"] for r in result["results"]}
    assert outcomes["arn:aws:airflow:us-east-1:123456789012:environment/etl-shared"] == "provisioned"
    [reason] = skipped_reasons(result, bad)
    assert "not-an-arn" in reason
    cloud.run_for(timedelta(minutes=16))
    assert status(cloud) == "AVAILABLE"


def test_event_whose_account_differs_from_the_arn_account_is_ignored() -> None:
    # Given a participant's PENDING environment (its events lost) and a stack that serves the participant
    with LocalCloud(parameters=PARTICIPANTS) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.emulator.event_mode = "drop"
        with cloud.participant("222222222222") as participant:
            participant.client("mwaa").create_environment(**create_request("etl-shared", vpc))
        cloud.clock.advance(timedelta(minutes=5))
        calls_before = len(cloud.emulator.calls)
        # When an event from the owner account names the participant's environment
        event = load_event("mwaa_status_account_mismatch.json")
        with api_calls("sts.AssumeRole") as assumed:
            result = cloud.lambdas.invoke(MANAGER, event)
        # Then it is ignored with a reason, before any call
        assert result["outcome"] == "ignored" and "account" in result["reason"]
        assert assumed == [] and len(cloud.emulator.calls) == calls_before
        assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1


def test_event_of_an_unconfigured_account_changes_nothing() -> None:
    # Given an account the stack does not serve (not in ParticipantAccountIds) with a PENDING environment
    with LocalCloud(parameters=PARTICIPANTS) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.emulator.event_mode = "drop"
        with cloud.participant("333333333333") as stranger:
            stranger.client("mwaa").create_environment(**create_request("etl-shared", vpc))
        cloud.clock.advance(timedelta(minutes=5))
        policy_before = sqs_policy(cloud, vpc)
        # When its (well-formed, self-consistent) status-change event reaches the handler
        event = load_event("mwaa_status_unconfigured_account.json")
        with api_calls("sts.AssumeRole") as assumed:
            result = cloud.lambdas.invoke(MANAGER, event)
        # Then nothing changes: no role assumed, no endpoint, no SQS policy change
        assert result["outcome"] == "ignored" and "333333333333" in result["reason"]
        assert assumed == []
        assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 1
        assert sqs_policy(cloud, vpc) == policy_before


def test_event_with_an_invalid_region_in_its_arn_is_ignored(cloud: LocalCloud) -> None:
    result = cloud.lambdas.invoke(MANAGER, load_event("malformed_region_in_arn.json"))
    assert result["outcome"] == "ignored"


def test_an_sqs_endpoint_the_vpc_owner_did_not_opt_in_is_reported_and_left_alone(cloud: LocalCloud) -> None:
    # Given a VPC whose SQS endpoint is not tagged mwaa-control:amend-policy=<stack>
    vpc = build_shared_vpc(cloud.client("ec2"), amend_policy_for=None)
    # When a customer-managed environment in it goes PENDING
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    # Then its endpoints are created, the SQS policy is untouched and the reason is reported
    assert sqs_policy(cloud, vpc) == RESTRICTIVE_SQS_POLICY
    [pending] = [d for d in cloud.events.deliveries if d.detail_status == "PENDING"]
    [action] = [a for a in pending.outcome["actions"] if a["endpoint_id"] == vpc.sqs_endpoint_id]
    assert action["action"] == "sqs-endpoint-not-opted-in"
    assert len(live_endpoints(cloud.client("ec2"), vpc.vpc_id)) == 3


# --- review findings ---------------------------------------------------------------------------------


def forget_registry(cloud: LocalCloud) -> list[str]:
    """Make the table look as it did before the endpoint registry existed: no endpoint# items."""
    dynamodb, table = cloud.client("dynamodb"), cloud.physical["LockTable"]
    keys = [i["pk"]["S"] for i in dynamodb.scan(TableName=table)["Items"] if i["pk"]["S"].startswith("endpoint#")]
    for key in keys:
        dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}})
    return keys


def test_endpoints_tagged_before_the_registry_are_removed_once_the_operator_adopts_them(
    cloud: LocalCloud, vpc: SharedVpc
) -> None:
    from mwaa_control.composition import endpoint_service
    from mwaa_control.settings import EndpointSettings

    # Given an environment whose endpoints the previous version created (tagged, not registered)
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.run_for(timedelta(minutes=30))
    assert status(cloud) == "AVAILABLE" and forget_registry(cloud)
    ours = {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)} - {vpc.sqs_endpoint_id}
    # When it is deleted, its endpoints are left alone (not registered) but its SQS statement is
    # withdrawn (found on the opted-in SQS endpoints, not through our endpoints' VPCs)
    cloud.client("mwaa").delete_environment(Name="etl-shared")
    cloud.run_for(timedelta(minutes=16))
    assert {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)} >= ours
    assert sqs_policy(cloud, vpc) == RESTRICTIVE_SQS_POLICY
    # And every sweep reports them until they are adopted
    result = cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
    assert all(skipped_reasons(result, endpoint_id) for endpoint_id in ours)
    # And once the operator adopts them (mwaactl endpoints adopt --include-gone), the next sweep deletes them
    service = endpoint_service(
        EndpointSettings(
            deployment_id=STACK,
            lock_table_name=cloud.physical["LockTable"],
            region="us-east-1",
            account_id="123456789012",
        )
    )
    candidates = service.adoption_candidates()
    assert {c.endpoint.endpoint_id: c.verdict for c in candidates} == dict.fromkeys(ours, "gone")
    assert len(service.adopt(candidates, include_gone=True)) == len(ours)
    result = cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
    assert [r["outcome"] for r in result["results"]] == ["removed"]
    assert {e["VpcEndpointId"] for e in live_endpoints(cloud.client("ec2"), vpc.vpc_id)} == {vpc.sqs_endpoint_id}


FULL_ACCESS_SQS_POLICY = {
    "Version": "2008-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}],
}


def test_an_sqs_endpoint_with_the_default_policy_needs_no_opt_in_and_raises_no_alarm(cloud: LocalCloud) -> None:
    # Given a VPC whose SQS endpoint keeps the default full-access policy and is not opted in
    vpc = build_shared_vpc(cloud.client("ec2"), amend_policy_for=None)
    cloud.client("ec2").modify_vpc_endpoint(
        VpcEndpointId=vpc.sqs_endpoint_id, PolicyDocument=json.dumps(FULL_ACCESS_SQS_POLICY)
    )
    # When an environment in it goes PENDING
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.clock.advance(timedelta(minutes=5))
    # Then no change was needed: nothing is reported as not opted in
    [pending] = [d for d in cloud.events.deliveries if d.detail_status == "PENDING"]
    [action] = [a for a in pending.outcome["actions"] if a["endpoint_id"] == vpc.sqs_endpoint_id]
    assert action["action"] == "sqs-policy-ok"


def test_the_sweep_applies_an_opt_in_made_after_the_environment_became_available(cloud: LocalCloud) -> None:
    # Given an AVAILABLE environment in a VPC whose owner had not opted the SQS endpoint in
    ec2 = cloud.client("ec2")
    vpc = build_shared_vpc(ec2, amend_policy_for=None)
    cloud.client("mwaa").create_environment(**create_request("etl-shared", vpc))
    cloud.run_for(timedelta(minutes=30))
    assert status(cloud) == "AVAILABLE" and sqs_policy(cloud, vpc) == RESTRICTIVE_SQS_POLICY
    # When the owner opts in and the scheduled reconciler runs
    ec2.create_tags(Resources=[vpc.sqs_endpoint_id], Tags=[{"Key": "mwaa-control:amend-policy", "Value": STACK}])
    cloud.lambdas.invoke(RECONCILER, load_event("scheduled_reconcile.json"))
    # Then the environment's queue is allowed
    queue = cloud.client("mwaa").get_environment(Name="etl-shared")["Environment"]["CeleryExecutorQueue"]
    assert any(s.get("Resource") == [queue] for s in sqs_policy(cloud, vpc)["Statement"])


def _emitted(captured: str, name: str) -> list[float]:
    """Values of one metric in the EMF documents a handler printed (Powertools' output)."""
    values: list[float] = []
    for line in captured.splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict) and "_aws" in document and name in document:
                value = document[name]
                values += [float(v) for v in value] if isinstance(value, list) else [float(value)]
    return values


def test_the_sweep_reports_an_environment_stuck_in_pending(
    cloud: LocalCloud, vpc: SharedVpc, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two customer-managed environments whose PENDING events were lost: one created two hours
    # and ten minutes ago, one twenty minutes ago (times on the local cloud's clock, which the
    # in-process functions read too: on the wall clock both would look days old)
    cloud.emulator.event_mode = "drop"
    mwaa = cloud.client("mwaa")
    mwaa.create_environment(**create_request("etl-old", vpc))
    cloud.clock.advance(timedelta(hours=1, minutes=50))
    mwaa.create_environment(**create_request("etl-new", vpc))
    cloud.clock.advance(timedelta(minutes=20))
    assert {mwaa.get_environment(Name=n)["Environment"]["Status"] for n in ("etl-old", "etl-new")} == {"PENDING"}
    capsys.readouterr()
    # When the sweep runs (it provisions both now)
    cloud.run_schedule("EndpointReconcilerFunction")
    # Then only the one PENDING for more than two hours counts as stuck
    assert _emitted(capsys.readouterr().out, "EnvironmentsStuck") == [1.0]
