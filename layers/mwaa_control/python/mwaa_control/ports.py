"""Interfaces the domain depends on. Adapters implement them around AWS; tests use fakes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from pydantic import BaseModel, Field

from mwaa_control.models import EndpointIntent, EndpointRecord, Environment, EnvironmentRef, ManagedEndpoint


class SqsEndpoint(BaseModel):
    endpoint_id: str
    vpc_id: str = ""
    policy: dict[str, Any]
    tags: dict[str, str] = Field(default_factory=dict)


class EnvironmentDirectory(Protocol):
    """Reads environments from MWAA (the source of truth; events are only triggers)."""

    def get_environment(self, ref: EnvironmentRef) -> Environment | None:
        """The environment, or None when MWAA says it does not exist."""
        ...

    def list_environments(self, account: str | None = None) -> Iterator[EnvironmentRef]:
        """The environments of one served account (None: of every served account) in our region."""
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

    def sqs_endpoints(self, vpc_id: str) -> list[SqsEndpoint]:
        """Every live SQS interface endpoint of the VPC, opted in or not (the caller decides)."""
        ...

    def opted_in_sqs_endpoints(self) -> list[SqsEndpoint]:
        """Every live SQS interface endpoint of the account's VPCs whose owner opted in for us
        (wherever our statement for an environment may be, whatever endpoints we hold there)."""
        ...

    def replace_endpoint_policy(self, endpoint_id: str, policy: Mapping[str, Any]) -> None: ...

    def endpoint_policy(self, endpoint_id: str) -> dict[str, Any]:
        """The endpoint's policy as EC2 returns it now (to verify a write took effect)."""
        ...


class EndpointRegistry(Protocol):
    """The endpoints this deployment created, recorded when it created them (tags are only claims)."""

    def register(self, record: EndpointRecord) -> None:
        """Record an endpoint; registering the same endpoint again (idempotent re-create) is fine."""
        ...

    def lookup(self, endpoint_ids: Sequence[str]) -> dict[str, EndpointRecord]:
        """The records of those endpoints that are registered, by endpoint id."""
        ...

    def forget(self, endpoint_ids: Sequence[str]) -> None:
        """Drop the records (after EC2 accepted the deletion); unknown ids are ignored."""
        ...

    def record_intent(self, intent: EndpointIntent) -> None:
        """Record, before CreateVpcEndpoint, that we are about to create an endpoint; an intent
        already recorded under the same client token is kept (the earliest one vouches)."""
        ...

    def lookup_intents(self, client_tokens: Sequence[str]) -> dict[str, EndpointIntent]:
        """The intents recorded under those client tokens, by token."""
        ...

    def forget_intents(self, client_tokens: Sequence[str]) -> None:
        """Drop the intents (once their endpoints are registered); unknown tokens are ignored."""
        ...


class Lease(Protocol):
    """A held lease. It can be lost while held (a renewal failed and someone else took over)."""

    key: str

    def ensure(self) -> None:
        """Raise LeaseLost unless the lease is still certainly ours; call before every destructive call."""
        ...


class EnvironmentLock(Protocol):
    """A lease that serialises work on one environment (or one VPC's SQS policy) across invocations.

    The context manager raises LockNotAcquired when it cannot get the lease in time, and LeaseLost
    on exit when the lease was lost while held.
    """

    def hold(self, key: str) -> AbstractContextManager[Lease]: ...
