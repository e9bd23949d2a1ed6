"""The EC2 adapter against moto: tags, filters, deletion, SQS policy round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localcloud import LocalCloud
from mwaa_control.endpoints.ec2 import Ec2EndpointNetwork
from mwaa_control.errors import NetworkLayoutError
from tests.conftest import RESTRICTIVE_SQS_POLICY, SharedVpc, build_shared_vpc

ENV = "arn:aws:airflow:us-east-1:123456789012:environment/etl"


def network(cloud: LocalCloud, deployment: str = "stack") -> Ec2EndpointNetwork:
    return Ec2EndpointNetwork(cloud.client("ec2"), deployment_id=deployment, region="us-east-1")


def create(net: Ec2EndpointNetwork, vpc: SharedVpc, service: str, env: str = ENV) -> str:
    return net.create_interface_endpoint(
        vpc_id=vpc.vpc_id,
        service_name=service,
        subnet_ids=vpc.subnet_ids,
        security_group_ids=[vpc.security_group_id],
        client_token="token-" + service,
        tags={
            "mwaa-control:managed-by": net._deployment_id,
            "mwaa-control:environment-arn": env,
            "mwaa-control:endpoint-role": "database",
        },
    )


def test_vpc_is_derived_from_the_subnets(cloud: LocalCloud, vpc: SharedVpc) -> None:
    assert network(cloud).vpc_of_subnets(vpc.subnet_ids) == vpc.vpc_id


def test_subnets_of_two_vpcs_are_refused(cloud: LocalCloud, vpc: SharedVpc) -> None:
    other = build_shared_vpc(cloud.client("ec2"), cidr="10.1")
    with pytest.raises(NetworkLayoutError, match="span 2 VPCs"):
        network(cloud).vpc_of_subnets([vpc.subnet_ids[0], other.subnet_ids[0]])


def test_created_endpoint_is_found_by_its_tags_with_its_subnets_and_groups(cloud: LocalCloud, vpc: SharedVpc) -> None:
    net = network(cloud)
    endpoint_id = create(net, vpc, "com.amazonaws.vpce.us-east-1.vpce-svc-db")
    [found] = net.managed_endpoints(ENV)
    assert (found.endpoint_id, found.vpc_id, found.role) == (endpoint_id, vpc.vpc_id, "database")
    raw = cloud.client("ec2").describe_vpc_endpoints(VpcEndpointIds=[endpoint_id])["VpcEndpoints"][0]
    assert raw["VpcEndpointType"] == "Interface"
    assert sorted(raw["SubnetIds"]) == sorted(vpc.subnet_ids)
    assert [g["GroupId"] for g in raw["Groups"]] == [vpc.security_group_id]


def test_endpoints_of_other_deployments_and_environments_are_not_ours(cloud: LocalCloud, vpc: SharedVpc) -> None:
    create(network(cloud, "other-stack"), vpc, "svc-a")
    create(network(cloud), vpc, "svc-b", env=ENV.replace("/etl", "/other"))
    assert network(cloud).managed_endpoints(ENV) == []
    assert [e.service_name for e in network(cloud).managed_endpoints()] == ["svc-b"]


def test_deleted_endpoints_are_no_longer_listed(cloud: LocalCloud, vpc: SharedVpc) -> None:
    net = network(cloud)
    endpoint_id = create(net, vpc, "svc-a")
    net.delete_endpoints([endpoint_id])
    assert net.managed_endpoints(ENV) == []


def test_sqs_endpoint_policy_round_trips(cloud: LocalCloud, vpc: SharedVpc) -> None:
    net = network(cloud)
    [sqs] = net.sqs_endpoints(vpc.vpc_id)
    assert sqs.endpoint_id == vpc.sqs_endpoint_id and sqs.policy == RESTRICTIVE_SQS_POLICY
    amended = {**RESTRICTIVE_SQS_POLICY, "Statement": [*RESTRICTIVE_SQS_POLICY["Statement"], {"Sid": "x"}]}
    net.replace_endpoint_policy(sqs.endpoint_id, amended)
    raw = cloud.client("ec2").describe_vpc_endpoints(VpcEndpointIds=[sqs.endpoint_id])["VpcEndpoints"][0]
    assert json.loads(raw["PolicyDocument"]) == amended


def test_sqs_endpoints_carry_their_tags_so_the_owners_opt_in_can_be_checked(cloud: LocalCloud, vpc: SharedVpc) -> None:
    opted_out = build_shared_vpc(cloud.client("ec2"), cidr="10.2", amend_policy_for=None)
    [opted_in] = network(cloud).sqs_endpoints(vpc.vpc_id)
    assert opted_in.tags == {"mwaa-control:amend-policy": "mwaa-control"}
    [untagged] = network(cloud).sqs_endpoints(opted_out.vpc_id)
    assert untagged.tags == {}


def test_endpoint_policy_reads_back_what_was_written(cloud: LocalCloud, vpc: SharedVpc) -> None:
    net = network(cloud)
    amended = {**RESTRICTIVE_SQS_POLICY, "Statement": [{"Sid": "y", "Effect": "Allow", "Action": "*"}]}
    assert net.endpoint_policy(vpc.sqs_endpoint_id) == RESTRICTIVE_SQS_POLICY
    net.replace_endpoint_policy(vpc.sqs_endpoint_id, amended)
    assert net.endpoint_policy(vpc.sqs_endpoint_id) == amended


# --- review findings -------------------------------------------------------------------------------


def test_managed_endpoints_carry_their_creation_time_and_client_token_tag(cloud: LocalCloud, vpc: SharedVpc) -> None:
    net = network(cloud)
    endpoint_id = net.create_interface_endpoint(
        vpc_id=vpc.vpc_id,
        service_name="com.amazonaws.vpce.us-east-1.vpce-svc-db",
        subnet_ids=vpc.subnet_ids,
        security_group_ids=[vpc.security_group_id],
        client_token="token-db",
        tags={
            "mwaa-control:managed-by": "stack",
            "mwaa-control:environment-arn": ENV,
            "mwaa-control:endpoint-role": "database",
            "mwaa-control:client-token": "token-db",
        },
    )
    [found] = net.managed_endpoints(ENV)
    assert found.endpoint_id == endpoint_id and found.client_token == "token-db"
    assert found.created_at is not None and found.created_at.tzinfo is not None


def test_opted_in_sqs_endpoints_are_found_in_every_vpc(cloud: LocalCloud, vpc: SharedVpc) -> None:
    other = build_shared_vpc(cloud.client("ec2"), cidr="10.1")
    build_shared_vpc(cloud.client("ec2"), cidr="10.2", amend_policy_for=None)
    net = network(cloud, "mwaa-control")
    found = {(e.vpc_id, e.endpoint_id) for e in net.opted_in_sqs_endpoints()}
    assert found == {(vpc.vpc_id, vpc.sqs_endpoint_id), (other.vpc_id, other.sqs_endpoint_id)}


class Recorder:
    """An EC2 client that only records which calls reach it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create_vpc_endpoint(self, **_: Any) -> dict[str, Any]:
        self.calls.append("CreateVpcEndpoint")
        return {"VpcEndpoint": {"VpcEndpointId": "vpce-1"}}

    def delete_vpc_endpoints(self, **_: Any) -> dict[str, Any]:
        self.calls.append("DeleteVpcEndpoints")
        return {"Unsuccessful": []}

    def modify_vpc_endpoint(self, **_: Any) -> dict[str, Any]:
        self.calls.append("ModifyVpcEndpoint")
        return {}


def test_destructive_calls_go_through_the_short_timeout_client(cloud: LocalCloud, vpc: SharedVpc) -> None:
    mutations = Recorder()
    net = Ec2EndpointNetwork(cloud.client("ec2"), deployment_id="stack", region="us-east-1", mutations=mutations)
    create(net, vpc, "svc-a")
    net.delete_endpoints(["vpce-1"])
    net.replace_endpoint_policy("vpce-1", {})
    assert mutations.calls == ["CreateVpcEndpoint", "DeleteVpcEndpoints", "ModifyVpcEndpoint"]
