"""Pydantic models of the MWAA domain shared by handlers, adapters and the CLI."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mwaa_control.errors import InvalidEnvironmentReference

# MWAA environment names: a letter, then letters, digits, '-' or '_'; at most 80 characters.
ENVIRONMENT_NAME = re.compile(r"^[A-Za-z][0-9A-Za-z_-]{0,79}$")
ENVIRONMENT_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):airflow:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"environment/(?P<name>[A-Za-z][0-9A-Za-z_-]{0,79})$"
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

    model_config = ConfigDict(frozen=True)

    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    name: str
    partition: str = "aws"

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
        return cls(**match.groupdict())


class NetworkConfiguration(BaseModel):
    subnet_ids: list[str] = Field(default_factory=list, alias="SubnetIds")
    security_group_ids: list[str] = Field(default_factory=list, alias="SecurityGroupIds")


class Environment(BaseModel):
    """The fields of GetEnvironment the control plane reasons about (the truth, not the event)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

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
    """A VPC endpoint this deployment created for an environment (found by its tags)."""

    endpoint_id: str
    vpc_id: str
    service_name: str
    state: str
    environment_arn: str
    role: str


class EndpointAction(BaseModel):
    action: Literal["created", "kept", "deleted", "sqs-policy-updated", "sqs-policy-ok", "no-sqs-endpoint"]
    role: str | None = None
    endpoint_id: str | None = None
    service_name: str | None = None


class EndpointReconciliation(BaseModel):
    """What one reconciliation of an environment's endpoints did, and why."""

    environment_arn: str
    outcome: Literal["provisioned", "removed", "no-op", "ignored", "failed"]
    reason: str
    status: str | None = None
    actions: list[EndpointAction] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
