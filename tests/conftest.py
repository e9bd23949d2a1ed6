"""Shared fixtures: the local cloud, a shared VPC laid out like the blog's restrictive VPC, and the
sample events from events/ (the same files the documentation points at)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from localcloud import LocalCloud
from localcloud.network import RESTRICTIVE_SQS_POLICY, SharedVpc, build_shared_vpc

# No per-example deadline: a property test must fail on a wrong answer, never on a slow example of a
# shared, loaded machine (speed is measured by `make bench`, as ratios). Examples stay bounded by
# each test's max_examples.
settings.register_profile("mwaa-control", deadline=None)
settings.load_profile("mwaa-control")

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


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


__all__ = ["RESTRICTIVE_SQS_POLICY", "SharedVpc", "build_shared_vpc", "create_request", "live_endpoints", "load_event"]
