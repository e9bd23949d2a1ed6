"""The snapshot a pause takes before deleting an environment, and that resume creates it from.

Three things are checked against the botocore model installed here, not against our own idea of
it: that every GetEnvironment member is either carried into CreateEnvironment or dropped on
purpose (and every CreateEnvironment member is produced or declared unrecoverable), that the
request create_request builds from a response carrying every member passes botocore's parameter
validation, and that the MWAA emulator creates an environment from it that maps back to the same
request. Storage is authenticated like a metadata backup: tampering, swapping and truncating are
refused, and the configuration options never reach the bucket in plain text."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.model import ServiceModel, Shape
from botocore.stub import Stubber
from botocore.validate import ParamValidator
from moto import mock_aws

from localcloud.clock import ManualClock
from localcloud.mwaa.emulator import MwaaEmulator
from localcloud.mwaa.http import MwaaHttpFrontend
from localcloud.network import build_shared_vpc
from mwaa_control.metadata.authentication import BackupKey
from mwaa_control.metadata.manifest import EnvelopeEntry
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import BackupStore, LocalStore, S3Store
from mwaa_control.pause.snapshot import (
    CREATABLE_AIRFLOW_VERSIONS,
    DROPPED,
    MAC_FORMAT,
    MAPPED,
    MAX_SNAPSHOT_BYTES,
    NOT_RECOVERABLE,
    SNAPSHOT_FILE,
    SNAPSHOT_MAC,
    TAGS_SOURCE,
    EnvironmentSnapshot,
    NotCreatable,
    SnapshotDamaged,
    SnapshotError,
    SnapshotExists,
    SnapshotNotAuthentic,
    SnapshotNotFound,
    creatable,
    create_request,
    differences,
    latest_snapshot,
    load_snapshot,
    save_snapshot,
    snapshot_context,
    snapshot_prefix,
    take_snapshot,
)
from mwaa_control.pause.snapshot import _mac as snapshot_mac
from tests.conftest import create_request as emulator_request

ACCOUNT, REGION, NAME = "123456789012", "eu-west-1", "etl-prod"
ARN = f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/{NAME}"
SECRET = "postgresql://airflow:s3cr3t-Pa55w0rd@db.internal:5432/warehouse"
OPTIONS = {
    "core.default_task_retries": "3",
    "secrets.backend_kwargs": '{"connections_prefix": "airflow/connections", "token": "xoxb-SECRET-TOKEN"}',
    "database.sql_alchemy_conn_cmd": SECRET,
}
TAGS = {"team": "data", "cost-center": "4711", "mwaa-control:pause-resume": "enabled"}


def log_group(module: str, name: str = NAME) -> str:
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:airflow-{name}-{module.removesuffix('Logs')}"


def full_environment(name: str = NAME) -> dict[str, Any]:
    """GetEnvironment's Environment with every member botocore's model has (checked below)."""
    arn = f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/{name}"
    return {
        "Name": name,
        "Status": "AVAILABLE",
        "Arn": arn,
        "CreatedAt": datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        "WebserverUrl": "https://0123abcd-vpce.c1.eu-west-1.airflow.amazonaws.com",
        "ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/service-role/mwaa-{name}-execution",
        "ServiceRoleArn": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/airflow.amazonaws.com/"
        "AWSServiceRoleForAmazonMWAA",
        "KmsKey": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0d2f6d3a-1b2c-4d5e-8f90-123456789abc",
        "AirflowVersion": "2.10.3",
        "SourceBucketArn": "arn:aws:s3:::acme-mwaa-etl-prod",
        "DagS3Path": "dags",
        "PluginsS3Path": "plugins.zip",
        "PluginsS3ObjectVersion": "3sL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
        "RequirementsS3Path": "requirements.txt",
        "RequirementsS3ObjectVersion": "Xb2yQ8.rL1lK0pQ_example_version_id_requirements",
        "StartupScriptS3Path": "startup.sh",
        "StartupScriptS3ObjectVersion": "null.version_of_startup_sh_example",
        "AirflowConfigurationOptions": dict(OPTIONS),
        "EnvironmentClass": "mw1.medium",
        "MaxWorkers": 10,
        "NetworkConfiguration": {
            "SubnetIds": ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"],
            "SecurityGroupIds": ["sg-0123456789abcdef0", "sg-0fedcba9876543210"],
        },
        "LoggingConfiguration": {
            module: {"Enabled": enabled, "LogLevel": level, "CloudWatchLogGroupArn": log_group(module, name)}
            for module, enabled, level in (
                ("DagProcessingLogs", True, "WARNING"),
                ("SchedulerLogs", True, "INFO"),
                ("WebserverLogs", False, "ERROR"),
                ("WorkerLogs", True, "CRITICAL"),
                ("TaskLogs", True, "DEBUG"),
            )
        },
        "LastUpdate": {
            "Status": "FAILED",
            "CreatedAt": datetime(2026, 4, 2, 10, 0, tzinfo=UTC),
            "Error": {"ErrorCode": "IncorrectSolution", "ErrorMessage": "requirements.txt failed to install"},
            "Source": "Customer",
            "WorkerReplacementStrategy": "GRACEFUL",
        },
        "WeeklyMaintenanceWindowStart": "SUN:03:30",
        "Tags": dict(TAGS),
        "WebserverAccessMode": "PRIVATE_ONLY",
        "MinWorkers": 2,
        "Schedulers": 3,
        "WebserverVpcEndpointService": f"com.amazonaws.vpce.{REGION}.vpce-svc-0123456789abcdef0",
        "DatabaseVpcEndpointService": f"com.amazonaws.vpce.{REGION}.vpce-svc-0fedcba9876543210",
        "CeleryExecutorQueue": f"arn:aws:sqs:{REGION}:999999999999:airflow-celery-0123abcd",
        "EndpointManagement": "SERVICE",
        "MinWebservers": 2,
        "MaxWebservers": 4,
        "IdentityCenterConfiguration": {
            "StartUrl": "https://acme.awsapps.com/start",
            "IdentityStoreId": "d-1234567890",
        },
        "Teams": {
            "analytics": {"SourceBucketArn": "arn:aws:s3:::acme-analytics-dags", "DagS3Path": "dags/analytics"},
            "finance": {"SourceBucketArn": "arn:aws:s3:::acme-finance-dags", "DagS3Path": "dags/finance"},
        },
    }


def cloudformation_environment() -> tuple[dict[str, Any], dict[str, str]]:
    """Created by a CloudFormation stack: aws: tags on it, no plugins or startup script, unpinned
    requirements, empty options, and an older version's partial output."""
    env = full_environment("etl-cfn")
    for member in (
        "PluginsS3Path",
        "PluginsS3ObjectVersion",
        "StartupScriptS3Path",
        "StartupScriptS3ObjectVersion",
        "RequirementsS3ObjectVersion",
        "IdentityCenterConfiguration",
        "Teams",
        "LastUpdate",
    ):
        env.pop(member)
    env["AirflowConfigurationOptions"] = {}
    tags = {
        "aws:cloudformation:stack-name": "etl-cfn",
        "aws:cloudformation:logical-id": "MwaaEnvironment",
        "aws:cloudformation:stack-id": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/etl-cfn/0a1b2c3d",
        "owner": "platform",
    }
    env["Tags"] = dict(tags)
    return env, tags


def customer_endpoints_environment() -> dict[str, Any]:
    """A shared-VPC environment: customer-managed endpoints, only a database endpoint service
    (public webserver), no tags."""
    env = full_environment("etl-shared")
    env.update(EndpointManagement="CUSTOMER", WebserverAccessMode="PUBLIC_ONLY", Status="PENDING", Tags={})
    env.pop("WebserverVpcEndpointService")
    return env


# --- the botocore model --------------------------------------------------------------------------


def mwaa_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("mwaa")


def model_paths(shape: Shape, prefix: str = "") -> Iterator[str]:
    """Dotted paths of a shape's members, as MAPPED and DROPPED write them: structures are
    recursed, maps of structures with `*` for the key; scalars, lists and maps of scalars are leaves.
    A structure is yielded as well, so a whole structure can be dropped."""
    for name, member in shape.members.items():
        path = f"{prefix}{name}"
        yield path
        if member.type_name == "structure":
            yield from model_paths(member, f"{path}.")
        elif member.type_name == "map" and member.value.type_name == "structure":
            yield from model_paths(member.value, f"{path}.*.")


def has_members(shape: Shape, path: str) -> bool:
    node: Any = shape
    for part in path.split("."):
        node = node.value if part == "*" else node.members[part]
    return bool(node.type_name == "structure" or (node.type_name == "map" and node.value.type_name == "structure"))


def unaccounted_output(model: ServiceModel) -> list[str]:
    """GetEnvironment members neither taken into the request nor dropped with a reason."""
    shape = model.operation_model("GetEnvironment").output_shape.members["Environment"]
    sources = set(MAPPED.values())
    paths = list(model_paths(shape))
    return [
        path
        for path in paths
        if path not in sources
        and not any(path == d or path.startswith(f"{d}.") for d in DROPPED)
        and not has_members(shape, path)
    ]


def unaccounted_input(model: ServiceModel) -> list[str]:
    shape = model.operation_model("CreateEnvironment").input_shape
    return [
        path
        for path in model_paths(shape)
        if path not in MAPPED and path not in NOT_RECOVERABLE and not has_members(shape, path)
    ]


def test_every_get_environment_member_is_mapped_or_dropped_with_a_reason() -> None:
    assert unaccounted_output(mwaa_model()) == []
    assert all(reason.strip() for reason in DROPPED.values())


def test_every_create_environment_member_is_produced_or_declared_unrecoverable() -> None:
    assert unaccounted_input(mwaa_model()) == []
    assert all(reason.strip() for reason in NOT_RECOVERABLE.values())


def test_the_declarations_name_only_members_the_model_has() -> None:
    model = mwaa_model()
    output = set(model_paths(model.operation_model("GetEnvironment").output_shape.members["Environment"]))
    create = set(model_paths(model.operation_model("CreateEnvironment").input_shape))
    tags = set(model_paths(model.operation_model("ListTagsForResource").output_shape))
    assert set(MAPPED) - create == set()
    assert {source for source in MAPPED.values() if source != TAGS_SOURCE} - output == set()
    assert TAGS_SOURCE.removeprefix("ListTagsForResource.") in tags
    assert set(DROPPED) - output == set()
    assert set(NOT_RECOVERABLE) - create == set()
    assert set(MAPPED.values()) & set(DROPPED) == set()


def with_new_member(structure: str, member: str, shape_name: str = "String") -> ServiceModel:
    """The installed model with one member MWAA might add tomorrow."""
    loader = botocore.session.get_session().get_component("data_loader")
    raw = copy.deepcopy(loader.load_service_model("mwaa", "service-2"))
    raw["shapes"][structure]["members"][member] = {"shape": shape_name}
    return ServiceModel(raw, service_name="mwaa")


@pytest.mark.parametrize(
    ("structure", "member", "unaccounted"),
    [
        ("Environment", "ServerlessMode", "ServerlessMode"),
        ("NetworkConfiguration", "VpcEndpointIds", "NetworkConfiguration.VpcEndpointIds"),
        ("ModuleLoggingConfiguration", "RetentionDays", "LoggingConfiguration.TaskLogs.RetentionDays"),
        ("TeamConfig", "PluginsS3Path", "Teams.*.PluginsS3Path"),
    ],
)
def test_a_member_mwaa_adds_to_get_environment_fails_the_walk(structure: str, member: str, unaccounted: str) -> None:
    assert unaccounted in unaccounted_output(with_new_member(structure, member))


@pytest.mark.parametrize(
    ("structure", "member", "unaccounted"),
    [
        ("CreateEnvironmentInput", "ServerlessMode", "ServerlessMode"),
        ("ModuleLoggingConfigurationInput", "RetentionDays", "LoggingConfiguration.WorkerLogs.RetentionDays"),
    ],
)
def test_a_member_mwaa_adds_to_create_environment_fails_the_walk(structure: str, member: str, unaccounted: str) -> None:
    assert unaccounted in unaccounted_input(with_new_member(structure, member))


def leaf_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """The paths a request or response has, written as model_paths writes them."""
    if isinstance(value, Mapping) and prefix not in ("AirflowConfigurationOptions", "Tags"):
        for key, member in value.items():
            yield from leaf_paths(member, f"{prefix}.{'*' if prefix == 'Teams' else key}".lstrip("."))
    else:
        yield prefix


def test_the_full_response_has_every_member_and_is_a_valid_get_environment_response() -> None:
    model = mwaa_model()
    shape = model.operation_model("GetEnvironment").output_shape.members["Environment"]
    leaves = {p for p in model_paths(shape) if not has_members(shape, p)}
    assert leaves - set(leaf_paths(full_environment())) == set()
    client = boto3.client("mwaa", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:  # the stubber validates a response against the output shape
        stub.add_response("get_environment", {"Environment": full_environment()}, {"Name": NAME})
        assert client.get_environment(Name=NAME)["Environment"]["Name"] == NAME


# --- the mapping ---------------------------------------------------------------------------------


def botocore_accepts(request: Mapping[str, Any]) -> str:
    """'' when botocore's parameter validation accepts a CreateEnvironment request, else its report."""
    shape = mwaa_model().operation_model("CreateEnvironment").input_shape
    report = ParamValidator().validate(dict(request), shape)
    return str(report.generate_report()) if report.has_errors() else ""


def value_at(document: Mapping[str, Any], path: str) -> list[Any]:
    nodes: list[Any] = [document]
    for part in path.split("."):
        nodes = [v for n in nodes for v in (n.values() if part == "*" else [n[part]])]
    return nodes


def test_the_full_response_maps_member_for_member_to_a_request_botocore_accepts() -> None:
    environment = full_environment()
    request = create_request(environment, TAGS)
    assert botocore_accepts(request) == ""
    assert set(leaf_paths(request)) == set(MAPPED)
    for target, source in MAPPED.items():
        expected = TAGS if source == TAGS_SOURCE else None
        assert value_at(request, target) == ([expected] if expected else value_at(environment, source)), target
    client = boto3.client("mwaa", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:  # the client's own validation, and the call shape the workflow makes
        stub.add_response("create_environment", {"Arn": ARN}, request)
        assert client.create_environment(**request)["Arn"] == ARN


def test_read_only_members_and_log_group_arns_are_dropped() -> None:
    request = create_request(full_environment(), TAGS)
    for member in ("Status", "Arn", "CreatedAt", "WebserverUrl", "ServiceRoleArn", "LastUpdate", "CeleryExecutorQueue"):
        assert member not in request
    assert "DatabaseVpcEndpointService" not in request and "WebserverVpcEndpointService" not in request
    assert request["LoggingConfiguration"]["WebserverLogs"] == {"Enabled": False, "LogLevel": "ERROR"}
    assert "log-group" not in json.dumps(request)


def test_a_cloudformation_environment_loses_its_aws_tags_and_empty_maps() -> None:
    environment, tags = cloudformation_environment()
    request = create_request(environment, tags)
    assert botocore_accepts(request) == ""
    assert request["Tags"] == {"owner": "platform"}
    assert "AirflowConfigurationOptions" not in request
    assert "RequirementsS3ObjectVersion" not in request and request["RequirementsS3Path"] == "requirements.txt"
    assert "PluginsS3Path" not in request and "Teams" not in request
    only_aws = {k: v for k, v in tags.items() if k.startswith("aws:")}
    assert "Tags" not in create_request(environment, only_aws)


def test_a_customer_endpoints_environment_keeps_its_endpoint_management() -> None:
    request = create_request(customer_endpoints_environment(), {})
    assert botocore_accepts(request) == ""
    assert request["EndpointManagement"] == "CUSTOMER" and request["WebserverAccessMode"] == "PUBLIC_ONLY"
    assert "Tags" not in request


def test_empty_strings_and_versions_without_their_path_are_not_sent() -> None:
    environment = full_environment()
    environment.update(PluginsS3Path="", StartupScriptS3Path=None, KmsKey="", WeeklyMaintenanceWindowStart="")
    request = create_request(environment, {"empty": "", "team": "data"})
    assert botocore_accepts(request) == ""
    for member in ("PluginsS3Path", "PluginsS3ObjectVersion", "StartupScriptS3ObjectVersion", "KmsKey"):
        assert member not in request
    assert "WeeklyMaintenanceWindowStart" not in request
    assert request["Tags"] == {"team": "data"}


def test_a_log_module_without_a_level_is_left_to_mwaa_and_noted() -> None:
    environment = full_environment()
    del environment["LoggingConfiguration"]["WorkerLogs"]["LogLevel"]
    request = create_request(environment, TAGS)
    assert "WorkerLogs" not in request["LoggingConfiguration"]
    assert botocore_accepts(request) == ""


@pytest.mark.parametrize("member", ["ExecutionRoleArn", "SourceBucketArn", "DagS3Path", "NetworkConfiguration"])
def test_an_environment_without_a_required_member_is_not_creatable(member: str) -> None:
    environment = full_environment()
    del environment[member]
    with pytest.raises(NotCreatable, match=member):
        create_request(environment, TAGS)


def test_creatable_versions() -> None:
    for version in ("2.7.2", "2.8.1", "2.9.2", "2.10.1", "2.10.3", "2.11.0", "2.11.2", "3.0.6", "3.2.1", "3.3.1"):
        assert creatable(version, CREATABLE_AIRFLOW_VERSIONS)
    for version in ("2.6.3", "2.5.1", "2.4.3", "1.10.12", "", "3.0"):
        assert not creatable(version, CREATABLE_AIRFLOW_VERSIONS)
    assert creatable("2.6.3", {"2.6.3"})


# --- idempotent resume ---------------------------------------------------------------------------


def test_an_identical_environment_is_adopted() -> None:
    request = create_request(full_environment(), TAGS)
    recreated = full_environment()
    recreated.update(
        Status="CREATING",
        WebserverUrl="https://ffff-vpce.c1.eu-west-1.airflow.amazonaws.com",
        CreatedAt=datetime(2026, 5, 1, tzinfo=UTC),
        CeleryExecutorQueue=f"arn:aws:sqs:{REGION}:999999999999:airflow-celery-ffff",
    )
    recreated["NetworkConfiguration"]["SubnetIds"].reverse()
    recreated.pop("LastUpdate")
    assert differences(request, recreated, {**TAGS, "aws:cloudformation:stack-name": "x"}) == []


def test_a_changed_max_workers_is_named() -> None:
    request = create_request(full_environment(), TAGS)
    other = full_environment()
    other["MaxWorkers"] = 25
    other["LoggingConfiguration"]["TaskLogs"]["LogLevel"] = "INFO"
    assert differences(request, other, TAGS) == [
        "LoggingConfiguration.TaskLogs.LogLevel: 'DEBUG' in the snapshot, 'INFO' in the environment",
        "MaxWorkers: 10 in the snapshot, 25 in the environment",
    ]


def test_changed_option_keys_are_named_without_their_values() -> None:
    request = create_request(full_environment(), TAGS)
    other = full_environment()
    options = other["AirflowConfigurationOptions"]
    options["database.sql_alchemy_conn_cmd"] = SECRET.replace("s3cr3t", "other")
    options.pop("core.default_task_retries")
    options["webserver.expose_config"] = "True"
    found = differences(request, other, {**TAGS, "team": "ml"})
    assert found == [
        "AirflowConfigurationOptions differ (keys: core.default_task_retries, database.sql_alchemy_conn_cmd, "
        "webserver.expose_config)",
        "Tags differ (keys: team)",
    ]
    assert not any(value in text for text in found for value in (SECRET, "other", "True", "3", "ml"))


def test_an_unpinned_object_accepts_whatever_version_mwaa_took() -> None:
    environment, tags = cloudformation_environment()
    request = create_request(environment, tags)
    environment["RequirementsS3ObjectVersion"] = "taken-by-mwaa"
    assert differences(request, environment, tags) == []
    pinned = create_request(full_environment(), TAGS)
    moved = full_environment()
    moved["PluginsS3ObjectVersion"] = "newer"
    assert differences(pinned, moved, TAGS)[0].startswith("PluginsS3ObjectVersion: ")


class EmulatedMwaa:
    """The MWAA emulator behind a real boto3 client (botocore serialises, validates and parses),
    over moto's EC2 for the subnets; no template, no functions, no S3 objects checked."""

    def __init__(self) -> None:
        session = boto3.session.Session(region_name="us-east-1")
        self.ec2 = session.client("ec2")
        self.clock = ManualClock()
        self.emulator = MwaaEmulator(self.clock, subnet_lookup=self._subnets, endpoints_exist=lambda *_: False)
        session._session.register("before-send.mwaa", MwaaHttpFrontend(self.emulator))
        self.mwaa = session.client("mwaa")

    def _subnets(self, region: str, subnet_ids: list[str]) -> list[dict[str, str]]:
        subnets = self.ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
        return [{k: s[k] for k in ("SubnetId", "VpcId", "AvailabilityZone")} for s in subnets]


@pytest.fixture
def emulated() -> Iterator[EmulatedMwaa]:
    with mock_aws():
        yield EmulatedMwaa()


def test_a_recreated_environment_on_the_emulator_maps_to_the_same_request(emulated: EmulatedMwaa) -> None:
    """Pause and resume on the MWAA emulator: snapshot, delete, create from the snapshot, adopt."""
    mwaa, vpc = emulated.mwaa, build_shared_vpc(emulated.ec2)
    original = emulator_request(
        "snap-src",
        vpc,
        EndpointManagement="SERVICE",
        AirflowVersion="2.10.3",
        EnvironmentClass="mw1.medium",
        MaxWorkers=6,
        MinWorkers=2,
        PluginsS3Path="plugins.zip",
        PluginsS3ObjectVersion="v1",
        AirflowConfigurationOptions=dict(OPTIONS),
        LoggingConfiguration={"WorkerLogs": {"Enabled": True, "LogLevel": "WARNING"}},
        Tags=dict(TAGS),
    )
    mwaa.create_environment(**original)
    emulated.clock.advance(timedelta(minutes=30))
    environment = mwaa.get_environment(Name="snap-src")["Environment"]
    assert environment["Status"] == "AVAILABLE"
    tags = mwaa.list_tags_for_resource(ResourceArn=environment["Arn"])["Tags"]
    request = create_request(environment, tags)
    assert botocore_accepts(request) == ""
    same = [k for k in original if k != "LoggingConfiguration"]
    assert {k: request[k] for k in same} == {k: original[k] for k in same}
    assert request["LoggingConfiguration"]["WorkerLogs"] == {"Enabled": True, "LogLevel": "WARNING"}

    mwaa.delete_environment(Name="snap-src")
    emulated.clock.advance(timedelta(minutes=20))
    assert mwaa.list_environments()["Environments"] == []
    mwaa.create_environment(**request)
    recreated = mwaa.get_environment(Name="snap-src")["Environment"]
    assert recreated["Status"] == "CREATING"
    assert differences(request, recreated, mwaa.list_tags_for_resource(ResourceArn=recreated["Arn"])["Tags"]) == []
    changed = {**request, "MaxWorkers": 3}
    assert differences(changed, recreated, tags) == ["MaxWorkers: 3 in the snapshot, 6 in the environment"]


# --- storage -------------------------------------------------------------------------------------


class Bucket:
    """What someone with write access to the store does, on either kind of store."""

    def __init__(self, store: BackupStore, s3: Any = None, bucket: str = "", prefix: str = "") -> None:
        self.store, self.s3, self.bucket, self.prefix = store, s3, bucket, prefix

    def read(self, key: str) -> bytes:
        return self.store.get_bytes(key)

    def write(self, key: str, data: bytes) -> None:
        if self.s3 is not None:
            self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)
        else:
            path = Path(self.store.url) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def delete(self, key: str) -> None:
        if self.s3 is not None:
            self.s3.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")
        else:
            (Path(self.store.url) / key).unlink()

    def everything(self) -> bytes:
        if self.s3 is None:
            return b"".join(p.read_bytes() for p in sorted(Path(self.store.url).rglob("*")) if p.is_file())
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return b"".join(self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read() for o in listed)


@pytest.fixture
def kms() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("kms", region_name=REGION)


@pytest.fixture
def keys(kms: Any) -> KmsKeyService:
    return KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])


@pytest.fixture(params=["s3", "local"])
def bucket(request: pytest.FixtureRequest, kms: Any, tmp_path: Path) -> Bucket:
    if request.param == "local":
        return Bucket(LocalStore(tmp_path / "store"))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mwaa-control-backups", CreateBucketConfiguration={"LocationConstraint": REGION})
    return Bucket(S3Store(s3, "mwaa-control-backups", "control"), s3, "mwaa-control-backups", "control")


TAKEN_AT = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


def saved(bucket: Bucket, keys: KmsKeyService, backup_id: str = "20260601T220000Z", **kwargs: Any) -> None:
    environment = kwargs.pop("environment", full_environment())
    snapshot = take_snapshot(environment, TAGS, keys, backup_id, taken_at=kwargs.pop("taken_at", TAKEN_AT))
    save_snapshot(bucket.store, keys, snapshot, backup_id)


def test_a_snapshot_round_trips_with_its_options_sealed(bucket: Bucket, keys: KmsKeyService) -> None:
    snapshot = take_snapshot(full_environment(), TAGS, keys, "b-1", taken_at=TAKEN_AT)
    assert (snapshot.environment, snapshot.account, snapshot.region) == (NAME, ACCOUNT, REGION)
    assert (snapshot.airflow_version, snapshot.status, snapshot.taken_at) == ("2.10.3", "AVAILABLE", TAKEN_AT)
    assert all(
        v.startswith("mwaa-control:sealed:v1:") for v in snapshot.create_request["AirflowConfigurationOptions"].values()
    )
    assert SECRET not in repr(snapshot) and SECRET not in snapshot.model_dump_json()
    save_snapshot(bucket.store, keys, snapshot, "b-1")

    loaded, request = load_snapshot(bucket.store, keys, NAME, "b-1")
    assert loaded == snapshot
    assert request == create_request(full_environment(), TAGS)
    stored = bucket.everything()
    secrets = [value for value in OPTIONS.values() if len(value) > 8]  # "3" is in any document
    assert stored and secrets and all(value.encode() not in stored for value in secrets)
    assert b"s3cr3t" not in stored and b"xoxb-SECRET" not in stored


def test_notes_say_what_resume_will_not_pin(bucket: Bucket, keys: KmsKeyService) -> None:
    environment, tags = cloudformation_environment()
    snapshot = take_snapshot(environment, tags, keys, "b-1")
    assert "RequirementsS3Path has no object version: the newest object will be used on resume" in snapshot.notes
    assert any("3 reserved aws: tags" in note for note in snapshot.notes)
    shared = take_snapshot(customer_endpoints_environment(), {}, keys, "b-1")
    assert any(note.startswith("EndpointManagement is CUSTOMER") for note in shared.notes)
    assert shared.status == "PENDING"


def test_snapshots_are_stored_apart_from_backups_and_never_replaced(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    assert bucket.store.exists(f"snapshots/{NAME}/b-1/{SNAPSHOT_FILE}")
    assert bucket.store.exists(f"snapshots/{NAME}/b-1/{SNAPSHOT_MAC}")
    assert bucket.store.list_prefixes(f"backups/{NAME}") == []
    with pytest.raises(SnapshotExists):
        saved(bucket, keys, "b-1")
    snapshot = take_snapshot(full_environment(), TAGS, keys, "b-2")
    with pytest.raises(SnapshotError, match="taken for backup 'b-2'"):
        save_snapshot(bucket.store, keys, snapshot, "b-3")


def flip(data: bytes, marker: bytes, offset: int | None = None) -> bytes:
    at = data.index(marker) + (len(marker) // 2 if offset is None else len(marker) + offset)
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_flipped_byte_is_refused(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    key = f"{snapshot_prefix(NAME, 'b-1')}/{SNAPSHOT_FILE}"
    raw = bucket.read(key)
    for marker, offset in (
        (b'"MaxWorkers": 10', None),
        (b"mwaa-control:sealed:v1:", 10),
        (b"service-role", None),
        (b'"status": "', 2),
        (b'"encrypted_key": "', 40),
    ):
        bucket.write(key, flip(raw, marker, offset))
        with pytest.raises(SnapshotNotAuthentic):
            load_snapshot(bucket.store, keys, NAME, "b-1")
    bucket.write(key, raw)
    assert load_snapshot(bucket.store, keys, NAME, "b-1")[1]["MaxWorkers"] == 10


def test_a_snapshot_moved_to_another_environment_or_backup_id_is_refused(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    source = snapshot_prefix(NAME, "b-1")
    for target in (snapshot_prefix("etl-staging", "b-1"), snapshot_prefix(NAME, "b-2")):
        for name in (SNAPSHOT_FILE, SNAPSHOT_MAC):
            bucket.write(f"{target}/{name}", bucket.read(f"{source}/{name}"))
    with pytest.raises(SnapshotNotAuthentic, match="KMS refused"):
        load_snapshot(bucket.store, keys, "etl-staging", "b-1")
    with pytest.raises(SnapshotNotAuthentic, match="KMS refused"):
        load_snapshot(bucket.store, keys, NAME, "b-2")


def test_a_snapshot_naming_another_environment_under_its_own_key_is_refused(
    bucket: Bucket, keys: KmsKeyService
) -> None:
    """The strongest writer: an environment that may use KMS for its own encryption context
    writes, under its own prefix and with a valid MAC, a snapshot that would recreate the victim."""
    victim = take_snapshot(full_environment(), TAGS, keys, "b-1")
    own = snapshot_key(keys, "etl-staging", "b-1")
    # Its own snapshot whose create request names the victim: refused after the MAC.
    forged = victim.model_copy(update={"environment": "etl-staging", "envelope": own.envelope})
    save_snapshot(bucket.store, keys, forged, "b-1")
    with pytest.raises(SnapshotNotAuthentic, match="create request names another environment"):
        load_snapshot(bucket.store, keys, "etl-staging", "b-1")
    # The victim's name in the document, under its own prefix, MAC recomputed with its own key.
    plant(bucket, victim, own, snapshot_prefix("etl-staging", "b-2"))
    with pytest.raises(SnapshotNotAuthentic, match="KMS refused"):  # that key is for b-1
        load_snapshot(bucket.store, keys, "etl-staging", "b-2")
    plant(bucket, victim, snapshot_key(keys, "etl-staging", "b-2"), snapshot_prefix("etl-staging", "b-2"))
    with pytest.raises(SnapshotNotAuthentic, match="names snapshot 'b-1' of 'etl-prod'"):
        load_snapshot(bucket.store, keys, "etl-staging", "b-2")


def snapshot_key(keys: KmsKeyService, environment: str, backup_id: str) -> BackupKey:
    """A data key under a snapshot's context (only the control plane's role may ask KMS for one)."""
    context = snapshot_context(environment, backup_id)
    plaintext, encrypted, key_id = keys.generate_data_key(context)
    return BackupKey(
        plaintext, EnvelopeEntry(key_id=key_id, encrypted_key=base64.b64encode(encrypted).decode(), context=context)
    )


def test_a_snapshot_under_a_backups_key_is_refused(bucket: Bucket, keys: KmsKeyService) -> None:
    """What an environment's execution role CAN do (wrap keys under its backups' context) does not
    make a snapshot: the snapshot context has one more key, which IAM keeps from those roles."""
    victim = take_snapshot(full_environment(), TAGS, keys, "b-1")
    plant(bucket, victim, BackupKey.create(keys, NAME, "b-1"), snapshot_prefix(NAME, "b-1"))
    with pytest.raises(SnapshotNotAuthentic):
        load_snapshot(bucket.store, keys, NAME, "b-1")


def plant(bucket: Bucket, snapshot: EnvironmentSnapshot, key: BackupKey, prefix: str) -> None:
    """A snapshot written by hand under `key` (as a role allowed to use KMS for it can)."""
    raw = snapshot.model_copy(update={"envelope": key.envelope}).model_dump_json(indent=2).encode()
    document = {"format": MAC_FORMAT, "algorithm": "HMAC-SHA256", "mac": snapshot_mac(key.data_key, raw)}
    bucket.write(f"{prefix}/{SNAPSHOT_MAC}", json.dumps(document).encode())
    bucket.write(f"{prefix}/{SNAPSHOT_FILE}", raw)


def test_a_missing_mac_is_refused(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    bucket.delete(f"{snapshot_prefix(NAME, 'b-1')}/{SNAPSHOT_MAC}")
    with pytest.raises(SnapshotNotAuthentic, match=r"no environment\.mac"):
        load_snapshot(bucket.store, keys, NAME, "b-1")


def test_a_mac_that_is_not_a_mac_document_is_refused(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    bucket.write(f"{snapshot_prefix(NAME, 'b-1')}/{SNAPSHOT_MAC}", b'{"format": "x"}')
    with pytest.raises(SnapshotNotAuthentic, match="not a MAC document"):
        load_snapshot(bucket.store, keys, NAME, "b-1")


def test_a_truncated_snapshot_is_refused(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    key = f"{snapshot_prefix(NAME, 'b-1')}/{SNAPSHOT_FILE}"
    raw = bucket.read(key)
    bucket.write(key, raw[: len(raw) // 2])
    with pytest.raises(SnapshotDamaged, match="no data key envelope"):
        load_snapshot(bucket.store, keys, NAME, "b-1")
    bucket.write(key, raw[:-3])  # the envelope survives: the MAC does not
    with pytest.raises(SnapshotNotAuthentic, match="does not match"):
        load_snapshot(bucket.store, keys, NAME, "b-1")


def test_huge_and_deep_files_are_refused_before_kms_or_a_parser(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    key = f"{snapshot_prefix(NAME, 'b-1')}/{SNAPSHOT_FILE}"
    bucket.write(key, b" " * (MAX_SNAPSHOT_BYTES + 1))
    with pytest.raises(SnapshotDamaged, match="more than any real snapshot"):
        load_snapshot(bucket.store, keys, NAME, "b-1")
    bucket.write(key, b"[" * 100_000)
    with pytest.raises(SnapshotDamaged, match="nested more than"):
        load_snapshot(bucket.store, keys, NAME, "b-1")


def test_a_missing_snapshot_is_not_found(bucket: Bucket, keys: KmsKeyService) -> None:
    with pytest.raises(SnapshotNotFound):
        load_snapshot(bucket.store, keys, NAME, "b-1")


def test_the_latest_authenticated_snapshot_is_chosen(bucket: Bucket, keys: KmsKeyService) -> None:
    assert latest_snapshot(bucket.store, keys, NAME) is None
    saved(bucket, keys, "b-old", taken_at=TAKEN_AT)
    saved(bucket, keys, "b-new", taken_at=TAKEN_AT + timedelta(days=1))
    assert latest_snapshot(bucket.store, keys, NAME) == "b-new"
    newest = f"{snapshot_prefix(NAME, 'b-new')}/{SNAPSHOT_FILE}"
    bucket.write(newest, flip(bucket.read(newest), b'"MaxWorkers": 10'))
    assert latest_snapshot(bucket.store, keys, NAME) == "b-old"
    # A forgery that claims to be newest is tried first, and skipped.
    forged = bucket.read(f"{snapshot_prefix(NAME, 'b-old')}/{SNAPSHOT_FILE}").replace(b"2026-06-01", b"2030-01-01")
    bucket.write(f"{snapshot_prefix(NAME, 'b-forged')}/{SNAPSHOT_FILE}", forged)
    assert latest_snapshot(bucket.store, keys, NAME) == "b-old"


def test_the_stored_document_is_the_snapshot_model(bucket: Bucket, keys: KmsKeyService) -> None:
    saved(bucket, keys, "b-1")
    document = json.loads(bucket.read(f"{snapshot_prefix(NAME, 'b-1')}/{SNAPSHOT_FILE}"))
    assert document["format"] == "mwaa-control-environment-snapshot/1"
    assert document["envelope"]["context"] == {
        "mwaa-control:environment": NAME,
        "mwaa-control:backup": "b-1",
        "mwaa-control:kind": "snapshot",
    }
    assert EnvironmentSnapshot.model_validate(document).backup_id == "b-1"
