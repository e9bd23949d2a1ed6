"""The MWAA emulator itself, through the real boto3 client: lifecycle, validation, events, faults."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError
from botocore.handlers import BUILTIN_HANDLERS
from moto.sts import models as moto_sts

from localcloud import LocalCloud
from localcloud.mwaa import MwaaApiError
from mwaa_control.adapters.mwaa import MwaaDirectory
from mwaa_control.models import ControlScope, EnvironmentRef
from tests.conftest import SharedVpc, build_shared_vpc, create_request


def status(cloud: LocalCloud, name: str = "etl") -> str:
    return str(cloud.client("mwaa").get_environment(Name=name)["Environment"]["Status"])


def statuses(cloud: LocalCloud, name: str = "etl") -> list[str]:
    return [e["detail"]["status"] for e in cloud.emulator.emitted if e["detail"]["name"] == name]


@pytest.fixture
def quiet(cloud: LocalCloud) -> LocalCloud:
    """No functions subscribed: the emulator's own behaviour only."""
    cloud.emulator._subscribers.clear()
    return cloud


def test_service_managed_environment_becomes_available(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa = quiet.client("mwaa")
    arn = mwaa.create_environment(**create_request("etl", vpc, EndpointManagement="SERVICE"))["Arn"]
    assert arn == "arn:aws:airflow:us-east-1:123456789012:environment/etl"
    assert status(quiet) == "CREATING"
    quiet.clock.advance(timedelta(minutes=24))
    assert status(quiet) == "CREATING"
    quiet.clock.advance(timedelta(minutes=2))
    assert status(quiet) == "AVAILABLE"
    assert statuses(quiet) == ["CREATING", "AVAILABLE"]


def test_customer_managed_environment_waits_for_its_endpoints(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa, ec2 = quiet.client("mwaa"), quiet.client("ec2")
    mwaa.create_environment(**create_request("etl", vpc))
    quiet.clock.advance(timedelta(minutes=5))
    env = mwaa.get_environment(Name="etl")["Environment"]
    assert env["Status"] == "PENDING"
    quiet.clock.advance(timedelta(hours=10))
    assert status(quiet) == "PENDING"
    for key in ("DatabaseVpcEndpointService", "WebserverVpcEndpointService"):
        ec2.create_vpc_endpoint(
            VpcId=vpc.vpc_id, ServiceName=env[key], VpcEndpointType="Interface", SubnetIds=vpc.subnet_ids
        )
    quiet.clock.advance(timedelta(seconds=1))
    assert status(quiet) == "CREATING"
    quiet.clock.advance(timedelta(minutes=15))
    assert statuses(quiet) == ["CREATING", "PENDING", "CREATING", "AVAILABLE"]


def test_only_the_database_endpoint_is_not_enough_for_a_private_webserver(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa, ec2 = quiet.client("mwaa"), quiet.client("ec2")
    mwaa.create_environment(**create_request("etl", vpc))
    quiet.clock.advance(timedelta(minutes=5))
    env = mwaa.get_environment(Name="etl")["Environment"]
    ec2.create_vpc_endpoint(
        VpcId=vpc.vpc_id,
        ServiceName=env["DatabaseVpcEndpointService"],
        VpcEndpointType="Interface",
        SubnetIds=vpc.subnet_ids,
    )
    quiet.clock.advance(timedelta(minutes=1))
    assert status(quiet) == "PENDING"


def test_endpoints_in_another_vpc_do_not_count(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa, ec2 = quiet.client("mwaa"), quiet.client("ec2")
    other = build_shared_vpc(ec2, cidr="10.9")
    mwaa.create_environment(**create_request("etl", vpc, WebserverAccessMode="PUBLIC_ONLY"))
    quiet.clock.advance(timedelta(minutes=5))
    env = mwaa.get_environment(Name="etl")["Environment"]
    assert "WebserverVpcEndpointService" not in env
    ec2.create_vpc_endpoint(
        VpcId=other.vpc_id,
        ServiceName=env["DatabaseVpcEndpointService"],
        VpcEndpointType="Interface",
        SubnetIds=other.subnet_ids,
    )
    quiet.clock.advance(timedelta(minutes=1))
    assert status(quiet) == "PENDING"


def test_pending_for_72_hours_fails_and_can_only_be_deleted(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa = quiet.client("mwaa")
    mwaa.create_environment(**create_request("etl", vpc))
    quiet.clock.advance(timedelta(minutes=5) + timedelta(hours=72))
    assert status(quiet) == "CREATE_FAILED"
    with pytest.raises(ClientError) as error:
        mwaa.update_environment(Name="etl", MaxWorkers=3)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    mwaa.delete_environment(Name="etl")
    quiet.clock.advance(timedelta(minutes=15))
    with pytest.raises(mwaa.exceptions.ResourceNotFoundException):
        mwaa.get_environment(Name="etl")
    assert statuses(quiet)[-3:] == ["CREATE_FAILED", "DELETING", "DELETED"]


def test_get_environment_has_the_full_shape(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa = quiet.client("mwaa")
    mwaa.create_environment(**create_request("etl", vpc, Tags={"team": "data"}))
    env = mwaa.get_environment(Name="etl")["Environment"]
    for key in (
        "Arn",
        "CreatedAt",
        "WebserverUrl",
        "ServiceRoleArn",
        "CeleryExecutorQueue",
        "DatabaseVpcEndpointService",
        "WebserverVpcEndpointService",
        "LoggingConfiguration",
        "NetworkConfiguration",
        "EnvironmentClass",
        "Schedulers",
        "Tags",
    ):
        assert key in env, key
    assert env["CreatedAt"].tzinfo is not None  # parsed by botocore as a timestamp
    assert env["CeleryExecutorQueue"].startswith("arn:aws:sqs:us-east-1:")
    assert env["LoggingConfiguration"]["TaskLogs"]["CloudWatchLogGroupArn"].startswith("arn:aws:logs:")
    assert env["Tags"] == {"team": "data"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"AirflowVersion": "2.6.3"}, "no longer supported"),
        ({"AirflowVersion": "9.9.9"}, "Invalid AirflowVersion"),
        ({"Tags": {"aws:cloudformation:stack-name": "x"}}, "reserved"),
        ({"StartupScriptS3Path": ""}, "must not be empty"),
        ({"EnvironmentClass": "mw1.huge"}, "Invalid EnvironmentClass"),
        ({"MinWorkers": 5, "MaxWorkers": 2}, "MinWorkers"),
        ({"LoggingConfiguration": {"TaskLogs": {"Enabled": True}}}, "Enabled and LogLevel"),
    ],
)
def test_invalid_create_requests_are_rejected_and_create_nothing(
    quiet: LocalCloud, vpc: SharedVpc, overrides: dict[str, Any], message: str
) -> None:
    # Without client-side validation (as Step Functions calls it), so the service's own checks run.
    mwaa = quiet.client("mwaa", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as error:
        mwaa.create_environment(**create_request("etl", vpc, **overrides))
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert message in error.value.response["Error"]["Message"]
    assert mwaa.list_environments()["Environments"] == []
    assert quiet.emulator.emitted == []


def test_network_must_be_two_subnets_in_one_vpc_and_two_zones(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa, ec2 = quiet.client("mwaa", config=Config(parameter_validation=False)), quiet.client("ec2")
    other = build_shared_vpc(ec2, cidr="10.7")
    same_az = ec2.create_subnet(VpcId=vpc.vpc_id, CidrBlock="10.0.3.0/24", AvailabilityZone="us-east-1a")
    cases = [
        ([vpc.subnet_ids[0]], "exactly 2"),
        ([vpc.subnet_ids[0], other.subnet_ids[1]], "same VPC"),
        ([vpc.subnet_ids[0], same_az["Subnet"]["SubnetId"]], "two different Availability Zones"),
        ([vpc.subnet_ids[0], "subnet-0000000000000000f"], "not found"),
    ]
    for subnets, message in cases:
        request = create_request("etl", vpc)
        request["NetworkConfiguration"]["SubnetIds"] = subnets
        with pytest.raises(ClientError, match=message):
            mwaa.create_environment(**request)


def test_unknown_keys_are_rejected_by_botocore_and_by_the_service(quiet: LocalCloud, vpc: SharedVpc) -> None:
    with pytest.raises(ParamValidationError):
        quiet.client("mwaa").create_environment(**create_request("etl", vpc, Status="AVAILABLE"))
    # botocore cannot even serialise unknown keys; the service-side allow-list is checked directly.
    with pytest.raises(MwaaApiError, match="Unknown parameters"):
        quiet.emulator.call(
            "CreateEnvironment", quiet.account, quiet.region, create_request("etl", vpc, Status="AVAILABLE")
        )


def test_duplicate_names_and_the_quota_are_enforced(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa = quiet.client("mwaa")
    for i in range(10):
        mwaa.create_environment(**create_request(f"env{i}", vpc))
    with pytest.raises(ClientError, match="already exists"):
        mwaa.create_environment(**create_request("env0", vpc))
    with pytest.raises(ClientError, match="quota"):
        mwaa.create_environment(**create_request("env10", vpc))


def test_list_environments_paginates(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa = quiet.client("mwaa")
    for i in range(7):
        mwaa.create_environment(**create_request(f"env{i}", vpc))
    pages = list(mwaa.get_paginator("list_environments").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["Environments"]) for p in pages] == [3, 3, 1]
    with pytest.raises(ClientError):
        quiet.client("mwaa", config=Config(parameter_validation=False)).list_environments(MaxResults=26)


def test_environments_are_per_account(quiet: LocalCloud, vpc: SharedVpc) -> None:
    with quiet.participant("222222222222") as session:
        session.client("mwaa").create_environment(**create_request("etl", vpc))
        assert session.client("mwaa").list_environments()["Environments"] == ["etl"]
    assert quiet.client("mwaa").list_environments()["Environments"] == []
    assert quiet.emulator.emitted[0]["account"] == "222222222222"


def test_tags_round_trip(quiet: LocalCloud, vpc: SharedVpc) -> None:
    mwaa = quiet.client("mwaa")
    arn = mwaa.create_environment(**create_request("etl", vpc))["Arn"]
    mwaa.tag_resource(ResourceArn=arn, Tags={"a": "1", "b": "2"})
    mwaa.untag_resource(ResourceArn=arn, tagKeys=["a"])
    assert mwaa.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"b": "2"}


def test_status_change_events_have_the_eventbridge_shape(quiet: LocalCloud, vpc: SharedVpc) -> None:
    quiet.client("mwaa").create_environment(**create_request("etl", vpc))
    [event] = quiet.emulator.emitted
    assert event["source"] == "aws.airflow"
    assert event["detail-type"] == "MWAA Environment Status Change"
    assert event["resources"] == ["arn:aws:airflow:us-east-1:123456789012:environment/etl"]
    assert event["detail"]["status"] == "CREATING"


def test_events_can_be_dropped_or_duplicated(quiet: LocalCloud, vpc: SharedVpc) -> None:
    seen: list[str] = []
    quiet.emulator.subscribe(lambda e: seen.append(e["detail"]["name"]))
    quiet.emulator.event_mode = "drop"
    quiet.client("mwaa").create_environment(**create_request("dropped", vpc))
    quiet.emulator.event_mode = "duplicate"
    quiet.client("mwaa").create_environment(**create_request("twice", vpc))
    assert seen == ["twice", "twice"]


def test_injected_throttling_is_retried_by_botocore_standard_mode(quiet: LocalCloud, vpc: SharedVpc) -> None:
    quiet.client("mwaa").create_environment(**create_request("etl", vpc))
    quiet.emulator.inject_fault("GetEnvironment", "ThrottlingException", status=429, times=2)
    client = quiet.client("mwaa", config=Config(retries={"mode": "standard", "max_attempts": 3}))
    assert client.get_environment(Name="etl")["Environment"]["Name"] == "etl"
    assert [c for c in quiet.emulator.calls if c[0] == "GetEnvironment"] == [("GetEnvironment", "etl")] * 3


def test_injected_5xx_surfaces_as_a_typed_error_once_retries_are_spent(quiet: LocalCloud, vpc: SharedVpc) -> None:
    quiet.emulator.inject_fault("ListEnvironments", "InternalServerException", status=500, times=5, message="boom")
    client = quiet.client("mwaa", config=Config(retries={"mode": "standard", "max_attempts": 2}))
    with pytest.raises(client.exceptions.InternalServerException):
        client.list_environments()


# --- STS: assumed-role credentials expire on the local cloud's clock ------------------------------


@contextmanager
def api_calls(operation: str) -> Iterator[list[dict[str, Any]]]:
    """Parameters of every call to one operation (e.g. "sts.AssumeRole") by clients created inside."""
    seen: list[dict[str, Any]] = []

    def spy(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    entry = (f"before-parameter-build.{operation}", spy)
    BUILTIN_HANDLERS.append(entry)
    try:
        yield seen
    finally:
        BUILTIN_HANDLERS.remove(entry)


def test_requests_signed_with_expired_assumed_role_credentials_are_refused(quiet: LocalCloud) -> None:
    # Given a participant session (AssumeRole, one hour) that has been used once
    with quiet.participant("222222222222") as session:
        mwaa = session.client("mwaa")
        assert mwaa.list_environments()["Environments"] == []
        quiet.clock.advance(timedelta(minutes=59))
        assert mwaa.list_environments()["Environments"] == []
        # When the local cloud's clock passes the credentials' expiration
        quiet.clock.advance(timedelta(minutes=2))
        # Then MWAA refuses them as AWS does, while the home account's long-term keys still work
        with pytest.raises(ClientError) as error:
            mwaa.list_environments()
    assert error.value.response["Error"]["Code"] == "ExpiredTokenException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert quiet.client("mwaa").list_environments()["Environments"] == []


def test_a_warm_directory_renews_participant_credentials_before_they_expire(
    quiet: LocalCloud, vpc: SharedVpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a participant environment, and STS and the directory on one clock that moves with the local cloud's
    with quiet.participant("222222222222") as session:
        session.client("mwaa").create_environment(**create_request("etl", vpc))
    start = quiet.clock.now()
    real_utcnow = moto_sts.utcnow  # type: ignore[attr-defined]
    monkeypatch.setattr(moto_sts, "utcnow", lambda: real_utcnow() + (quiet.clock.now() - start))
    scope = ControlScope(
        partition="aws", region=quiet.region, account_id=quiet.account, participant_account_ids=("222222222222",)
    )
    directory = MwaaDirectory(
        scope=scope,
        participant_role_name="mwaa-control-reader",
        clock=lambda: datetime.now(UTC) + (quiet.clock.now() - start),
    )
    ref = EnvironmentRef(account="222222222222", region=quiet.region, name="etl")
    with api_calls("sts.AssumeRole") as assumed:
        # When the warm directory is used again after more than an hour
        assert directory.get_environment(ref) is not None
        quiet.clock.advance(timedelta(minutes=61))
        environment = directory.get_environment(ref)
    # Then it renewed its credentials (a second AssumeRole) instead of failing with ExpiredToken
    assert environment is not None and environment.name == "etl"
    assert len(assumed) == 2
