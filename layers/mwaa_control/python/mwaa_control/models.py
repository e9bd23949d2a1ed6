"""Pydantic models of the MWAA domain shared by handlers, adapters and the CLI."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mwaa_control.errors import InvalidEnvironmentReference

# Every model here is built (its validator compiled) on first use, not at import (defer_build):
# a function's cold start then pays only for the models it validates.

# One spelling of each part, shared by the ARN pattern and EnvironmentRef's fields: an ARN the
# pattern accepts must never fail the model (an Availability Zone such as us-east-1a is no region).
PARTITION = r"aws(?:-[a-z]+)*"
REGION = r"[a-z]{2}(?:-[a-z]+)+-\d"
ACCOUNT = r"\d{12}"
# MWAA environment names: a letter, then letters, digits, '-' or '_'; at most 80 characters.
NAME = r"[A-Za-z][0-9A-Za-z_-]{0,79}"
ENVIRONMENT_NAME = re.compile(rf"^{NAME}$")
ENVIRONMENT_ARN = re.compile(
    rf"^arn:(?P<partition>{PARTITION}):airflow:(?P<region>{REGION}):(?P<account>{ACCOUNT}):environment/(?P<name>{NAME})$"
)


class EnvironmentStatus(StrEnum):
    CREATING = "CREATING"
    CREATE_FAILED = "CREATE_FAILED"
    AVAILABLE = "AVAILABLE"
    PENDING = "PENDING"
    UPDATING = "UPDATING"
    CREATING_SNAPSHOT = "CREATING_SNAPSHOT"
    ROLLING_BACK = "ROLLING_BACK"
    UPDATE_FAILED = "UPDATE_FAILED"
    UNAVAILABLE = "UNAVAILABLE"
    DELETING = "DELETING"
    DELETED = "DELETED"
    MAINTENANCE = "MAINTENANCE"


class EndpointManagement(StrEnum):
    CUSTOMER = "CUSTOMER"
    SERVICE = "SERVICE"


class WebserverAccessMode(StrEnum):
    PRIVATE_ONLY = "PRIVATE_ONLY"
    PUBLIC_ONLY = "PUBLIC_ONLY"


class EnvironmentRef(BaseModel):
    """Identifies one environment: account, region and name (the ARN's parts)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    account: str = Field(pattern=rf"^{ACCOUNT}$")
    region: str = Field(pattern=rf"^{REGION}$")
    name: str
    partition: str = Field(default="aws", pattern=rf"^{PARTITION}$")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not ENVIRONMENT_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid MWAA environment name")
        return value

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:airflow:{self.region}:{self.account}:environment/{self.name}"

    @classmethod
    def from_arn(cls, arn: str) -> EnvironmentRef:
        match = ENVIRONMENT_ARN.match(arn)
        if not match:
            raise InvalidEnvironmentReference(f"{arn!r} is not an MWAA environment ARN")
        try:
            return cls(**match.groupdict())
        except ValidationError as error:
            raise InvalidEnvironmentReference(
                f"{arn!r} is not an MWAA environment ARN: {error.errors()[0]['msg']}"
            ) from None


class ControlScope(BaseModel):
    """The environments this deployment serves: its own account and the configured participant
    accounts, in its own region and partition. Anything else is refused before any call is made."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    partition: str = Field(pattern=rf"^{PARTITION}$")
    region: str = Field(pattern=rf"^{REGION}$")
    account_id: str = Field(pattern=rf"^{ACCOUNT}$")
    participant_account_ids: tuple[str, ...] = ()

    @property
    def accounts(self) -> tuple[str, ...]:
        return (self.account_id, *self.participant_account_ids)

    def refusal(self, ref: EnvironmentRef) -> str | None:
        """Why the environment is out of scope, or None when this deployment serves it."""
        if ref.partition != self.partition:
            return f"{ref.arn} is in partition {ref.partition}; this deployment serves {self.partition}"
        if ref.region != self.region:
            return f"{ref.arn} is in region {ref.region}; this deployment serves {self.region}"
        if ref.account not in self.accounts:
            return (
                f"account {ref.account} is not configured: this deployment serves its own account "
                f"{self.account_id} and ParticipantAccountIds {list(self.participant_account_ids)}"
            )
        return None


class NetworkConfiguration(BaseModel):
    model_config = ConfigDict(defer_build=True)

    subnet_ids: list[str] = Field(default_factory=list, alias="SubnetIds")
    security_group_ids: list[str] = Field(default_factory=list, alias="SecurityGroupIds")


class Environment(BaseModel):
    """The fields of GetEnvironment the control plane reasons about (the truth, not the event)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", defer_build=True)

    name: str = Field(alias="Name")
    arn: str = Field(alias="Arn")
    status: EnvironmentStatus = Field(alias="Status")
    airflow_version: str | None = Field(default=None, alias="AirflowVersion")
    created_at: datetime | None = Field(default=None, alias="CreatedAt")
    endpoint_management: EndpointManagement = Field(default=EndpointManagement.SERVICE, alias="EndpointManagement")
    webserver_access_mode: str | None = Field(default=None, alias="WebserverAccessMode")
    network: NetworkConfiguration = Field(default_factory=NetworkConfiguration, alias="NetworkConfiguration")
    database_vpc_endpoint_service: str | None = Field(default=None, alias="DatabaseVpcEndpointService")
    webserver_vpc_endpoint_service: str | None = Field(default=None, alias="WebserverVpcEndpointService")
    celery_executor_queue: str | None = Field(default=None, alias="CeleryExecutorQueue")

    @property
    def ref(self) -> EnvironmentRef:
        return EnvironmentRef.from_arn(self.arn)

    @property
    def webserver_is_private(self) -> bool:
        return self.webserver_access_mode != WebserverAccessMode.PUBLIC_ONLY


class ManagedEndpoint(BaseModel):
    """A live VPC endpoint tagged as this deployment's (tags are claims: see EndpointRecord)."""

    model_config = ConfigDict(defer_build=True)

    endpoint_id: str
    vpc_id: str
    service_name: str
    state: str
    environment_arn: str
    role: str
    # EC2's CreationTimestamp; None when EC2 did not say.
    created_at: datetime | None = None
    # Our idempotency token, tagged at creation: the key of the intent written before creating it.
    client_token: str | None = None


class EndpointIntent(BaseModel):
    """Written BEFORE CreateVpcEndpoint, keyed by its ClientToken: if the registration after the
    create fails, the intent still vouches for the endpoint (EC2 does not return ClientToken in
    DescribeVpcEndpoints, so the token is also tagged on the endpoint, and an endpoint matches an
    intent only if its environment, service and VPC agree and EC2 created it after the intent)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    client_token: str
    environment_arn: str
    service_name: str
    vpc_id: str
    role: str | None = None
    created_at: datetime


class EndpointRecord(BaseModel):
    """This deployment's record that it created an endpoint, written right after CreateVpcEndpoint.

    Anyone allowed ec2:CreateTags can tag an endpoint as ours; only this deployment writes its
    registry. An endpoint is deleted only when its tags, its registry record and its service agree.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    endpoint_id: str
    environment_arn: str
    service_name: str
    vpc_id: str
    role: str | None = None
    created_at: datetime


class AdoptionCandidate(BaseModel):
    model_config = ConfigDict(defer_build=True)

    """A tagged endpoint with no registry record (created before the registry existed), and
    whether ``mwaactl endpoints adopt`` may register it: ``adopt`` (its service is the environment's
    current one), ``gone`` (the environment no longer exists: the operator confirms with
    --include-gone), ``refused`` (not an endpoint this deployment may ever own)."""

    endpoint: ManagedEndpoint
    verdict: Literal["adopt", "gone", "refused"]
    reason: str


class EndpointAction(BaseModel):
    model_config = ConfigDict(defer_build=True)

    action: Literal[
        "created",
        "kept",
        "deleted",
        "skipped",
        "sqs-policy-updated",
        "sqs-policy-ok",
        "no-sqs-endpoint",
        "sqs-endpoint-not-opted-in",
    ]
    role: str | None = None
    endpoint_id: str | None = None
    service_name: str | None = None
    reason: str | None = None


class EndpointReconciliation(BaseModel):
    """What one reconciliation of an environment's endpoints did, and why."""

    model_config = ConfigDict(defer_build=True)

    environment_arn: str
    outcome: Literal["provisioned", "removed", "no-op", "ignored", "skipped", "failed"]
    reason: str
    status: str | None = None
    actions: list[EndpointAction] = Field(default_factory=list)
    # The environment's CreatedAt (GetEnvironment), when it exists: how long CREATING/PENDING lasted.
    created_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
