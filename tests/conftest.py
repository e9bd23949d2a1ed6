"""Shared fixtures: the local cloud, a shared VPC laid out like the blog's restrictive VPC, and the
sample events from events/ (the same files the documentation points at)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcloud import LocalCloud

EVENTS = Path(__file__).resolve().parent.parent / "events"
RESTRICTIVE_SQS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}],
}


def load_event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


@dataclass
class SharedVpc:
    vpc_id: str
    subnet_ids: list[str]
    security_group_id: str
    sqs_endpoint_id: str


def build_shared_vpc(ec2: Any, cidr: str = "10.0") -> SharedVpc:
    vpc_id = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{cidr}.{i}.0/24", AvailabilityZone=f"us-east-1{az}")["Subnet"][
            "SubnetId"
        ]
        for i, az in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName=f"mwaa-{cidr}", Description="MWAA", VpcId=vpc_id)["GroupId"]
    sqs = ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName="com.amazonaws.us-east-1.sqs",
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        SecurityGroupIds=[sg],
        PolicyDocument=json.dumps(RESTRICTIVE_SQS_POLICY),
    )["VpcEndpoint"]["VpcEndpointId"]
    return SharedVpc(vpc_id, subnets, sg, sqs)


def create_request(name: str, vpc: SharedVpc, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "Name": name,
        "ExecutionRoleArn": "arn:aws:iam::123456789012:role/mwaa-execution",
        "SourceBucketArn": "arn:aws:s3:::mwaa-dags",
        "DagS3Path": "dags",
        "NetworkConfiguration": {"SubnetIds": vpc.subnet_ids, "SecurityGroupIds": [vpc.security_group_id]},
        "EndpointManagement": "CUSTOMER",
        "WebserverAccessMode": "PRIVATE_ONLY",
        "AirflowVersion": "2.10.3",
    }
    request.update(overrides)
    return request


@pytest.fixture
def cloud() -> Iterator[LocalCloud]:
    with LocalCloud() as local:
        yield local


@pytest.fixture
def vpc(cloud: LocalCloud) -> SharedVpc:
    return build_shared_vpc(cloud.client("ec2"))


def live_endpoints(ec2: Any, vpc_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
        if e["State"].lower() not in ("deleted", "deleting")
    ]
