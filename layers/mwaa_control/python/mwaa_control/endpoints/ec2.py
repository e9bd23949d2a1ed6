"""EC2 adapter: subnets, the interface endpoints we manage, and SQS endpoint policies."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mwaa_control.endpoints.service import (
    TAG_AMEND_POLICY,
    TAG_CLIENT_TOKEN,
    TAG_ENDPOINT_ROLE,
    TAG_ENVIRONMENT_ARN,
    TAG_MANAGED_BY,
)
from mwaa_control.errors import EndpointDeletionFailed, NetworkLayoutError
from mwaa_control.models import ManagedEndpoint
from mwaa_control.ports import SqsEndpoint

# Endpoints in these states are gone or going; they neither satisfy MWAA nor need deleting.
_GONE = {"deleting", "deleted", "rejected", "failed", "expired"}


class Ec2EndpointNetwork:
    def __init__(self, ec2: Any, *, deployment_id: str, region: str, mutations: Any = None) -> None:
        """``mutations``: the client of Create/Delete/ModifyVpcEndpoint, made under a lease. Its
        timeouts and retries must end within the lease's safety margin (clients.DESTRUCTIVE_CONFIG);
        reads use ``ec2`` with the ordinary retry policy."""
        self._ec2 = ec2
        self._mutations = mutations if mutations is not None else ec2
        self._deployment_id = deployment_id
        self._region = region

    def vpc_of_subnets(self, subnet_ids: Sequence[str]) -> str:
        subnets = self._ec2.describe_subnets(SubnetIds=list(subnet_ids))["Subnets"]
        vpcs = {s["VpcId"] for s in subnets}
        if len(vpcs) != 1:
            raise NetworkLayoutError(f"subnets {list(subnet_ids)} span {len(vpcs)} VPCs ({sorted(vpcs)})")
        return str(vpcs.pop())

    def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        paginator = self._ec2.get_paginator("describe_vpc_endpoints")
        found: list[dict[str, Any]] = []
        for page in paginator.paginate(Filters=filters):
            found += [e for e in page["VpcEndpoints"] if e["State"].lower() not in _GONE]
        return found

    def managed_endpoints(self, environment_arn: str | None = None) -> list[ManagedEndpoint]:
        filters = [{"Name": f"tag:{TAG_MANAGED_BY}", "Values": [self._deployment_id]}]
        if environment_arn:
            filters.append({"Name": f"tag:{TAG_ENVIRONMENT_ARN}", "Values": [environment_arn]})
        result = []
        for endpoint in self._describe(filters):
            tags = {t["Key"]: t["Value"] for t in endpoint.get("Tags", [])}
            # Filters narrow the call; the tags are checked again so a filter the API ignored
            # can never make us delete someone else's endpoint.
            if tags.get(TAG_MANAGED_BY) != self._deployment_id or TAG_ENVIRONMENT_ARN not in tags:
                continue
            if environment_arn and tags[TAG_ENVIRONMENT_ARN] != environment_arn:
                continue
            result.append(
                ManagedEndpoint(
                    endpoint_id=endpoint["VpcEndpointId"],
                    vpc_id=endpoint["VpcId"],
                    service_name=endpoint["ServiceName"],
                    state=endpoint["State"],
                    environment_arn=tags[TAG_ENVIRONMENT_ARN],
                    role=tags.get(TAG_ENDPOINT_ROLE, "unknown"),
                    created_at=_aware(endpoint.get("CreationTimestamp")),
                    client_token=tags.get(TAG_CLIENT_TOKEN),
                )
            )
        return result

    def create_interface_endpoint(
        self,
        *,
        vpc_id: str,
        service_name: str,
        subnet_ids: Sequence[str],
        security_group_ids: Sequence[str],
        tags: Mapping[str, str],
        client_token: str,
    ) -> str:
        response = self._mutations.create_vpc_endpoint(
            VpcEndpointType="Interface",
            VpcId=vpc_id,
            ServiceName=service_name,
            SubnetIds=list(subnet_ids),
            SecurityGroupIds=list(security_group_ids),
            PrivateDnsEnabled=False,
            ClientToken=client_token,
            TagSpecifications=[
                {"ResourceType": "vpc-endpoint", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        return str(response["VpcEndpoint"]["VpcEndpointId"])

    def delete_endpoints(self, endpoint_ids: Sequence[str]) -> None:
        if not endpoint_ids:
            return
        response = self._mutations.delete_vpc_endpoints(VpcEndpointIds=list(endpoint_ids))
        failed = [u for u in response.get("Unsuccessful", []) if "NotFound" not in u["Error"]["Code"]]
        if failed:
            raise EndpointDeletionFailed(f"EC2 refused to delete endpoints: {failed}")

    def _sqs_endpoints(self, filters: list[dict[str, Any]]) -> list[SqsEndpoint]:
        sqs_service = f"com.amazonaws.{self._region}.sqs"
        endpoints = self._describe([{"Name": "service-name", "Values": [sqs_service]}, *filters])
        return [
            SqsEndpoint(
                endpoint_id=e["VpcEndpointId"],
                vpc_id=e["VpcId"],
                policy=json.loads(e.get("PolicyDocument") or "{}"),
                tags={t["Key"]: t["Value"] for t in e.get("Tags", [])},
            )
            for e in endpoints
            # Checked again, whatever the filters did.
            if e.get("VpcEndpointType", "Interface") == "Interface" and e["ServiceName"] == sqs_service
        ]

    def sqs_endpoints(self, vpc_id: str) -> list[SqsEndpoint]:
        return [e for e in self._sqs_endpoints([{"Name": "vpc-id", "Values": [vpc_id]}]) if e.vpc_id == vpc_id]

    def opted_in_sqs_endpoints(self) -> list[SqsEndpoint]:
        found = self._sqs_endpoints([{"Name": f"tag:{TAG_AMEND_POLICY}", "Values": [self._deployment_id]}])
        return [e for e in found if e.tags.get(TAG_AMEND_POLICY) == self._deployment_id]

    def replace_endpoint_policy(self, endpoint_id: str, policy: Mapping[str, Any]) -> None:
        self._mutations.modify_vpc_endpoint(VpcEndpointId=endpoint_id, PolicyDocument=json.dumps(policy))

    def endpoint_policy(self, endpoint_id: str) -> dict[str, Any]:
        [endpoint] = self._ec2.describe_vpc_endpoints(VpcEndpointIds=[endpoint_id])["VpcEndpoints"]
        policy: dict[str, Any] = json.loads(endpoint.get("PolicyDocument") or "{}")
        return policy


def _aware(value: Any) -> datetime | None:
    """EC2's CreationTimestamp as an aware UTC datetime (botocore parses it; naive means UTC)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
