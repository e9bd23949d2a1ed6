"""A shared VPC laid out like the shared-VPC blog post's restrictive VPC: two private subnets in two
zones, one security group, and an SQS interface endpoint whose policy allows no queue at all.

The VPC owner opts the SQS endpoint in to policy amendments by the control plane by tagging it
``mwaa-control:amend-policy=<stack name>`` (the local cloud's stack is ``mwaa-control``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RESTRICTIVE_SQS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}],
}
LOCAL_STACK_NAME = "mwaa-control"


@dataclass
class SharedVpc:
    vpc_id: str
    subnet_ids: list[str]
    security_group_id: str
    sqs_endpoint_id: str


def build_shared_vpc(
    ec2: Any, cidr: str = "10.0", region: str = "us-east-1", amend_policy_for: str | None = LOCAL_STACK_NAME
) -> SharedVpc:
    """``amend_policy_for``: the stack allowed to amend the SQS endpoint policy (None: no one)."""
    vpc_id = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{cidr}.{i}.0/24", AvailabilityZone=f"{region}{az}")["Subnet"][
            "SubnetId"
        ]
        for i, az in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName=f"mwaa-{cidr}", Description="MWAA", VpcId=vpc_id)["GroupId"]
    tags = [{"Key": "mwaa-control:amend-policy", "Value": amend_policy_for}] if amend_policy_for else []
    sqs = ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName=f"com.amazonaws.{region}.sqs",
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        SecurityGroupIds=[sg],
        PolicyDocument=json.dumps(RESTRICTIVE_SQS_POLICY),
        **({"TagSpecifications": [{"ResourceType": "vpc-endpoint", "Tags": tags}]} if tags else {}),
    )["VpcEndpoint"]["VpcEndpointId"]
    return SharedVpc(vpc_id, subnets, sg, sqs)
