"""Interfaces the domain depends on. Adapters implement them around AWS; tests use fakes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from pydantic import BaseModel

from mwaa_control.models import Environment, EnvironmentRef, ManagedEndpoint


class SqsEndpoint(BaseModel):
    endpoint_id: str
    policy: dict[str, Any]


class EnvironmentDirectory(Protocol):
    """Reads environments from MWAA (the source of truth; events are only triggers)."""

    def get_environment(self, ref: EnvironmentRef) -> Environment | None:
        """The environment, or None when MWAA says it does not exist."""
        ...

    def list_environments(self) -> Iterator[EnvironmentRef]:
        """Every environment of the control plane's own account and region."""
        ...


class EndpointNetwork(Protocol):
    """The EC2 side: the VPC, the endpoints this deployment manages, the SQS endpoint policy."""

    def vpc_of_subnets(self, subnet_ids: Sequence[str]) -> str: ...

    def managed_endpoints(self, environment_arn: str | None = None) -> list[ManagedEndpoint]:
        """Live endpoints tagged as created by this deployment (for one environment, or all)."""
        ...

    def create_interface_endpoint(
        self,
        *,
        vpc_id: str,
        service_name: str,
        subnet_ids: Sequence[str],
        security_group_ids: Sequence[str],
        tags: Mapping[str, str],
        client_token: str,
    ) -> str: ...

    def delete_endpoints(self, endpoint_ids: Sequence[str]) -> None: ...

    def sqs_endpoints(self, vpc_id: str) -> list[SqsEndpoint]: ...

    def replace_endpoint_policy(self, endpoint_id: str, policy: Mapping[str, Any]) -> None: ...


class EnvironmentLock(Protocol):
    """A lease that serialises work on one environment across concurrent invocations."""

    def hold(self, key: str) -> AbstractContextManager[None]: ...
