"""The one settings model, read from the function's environment variables at cold start."""

from __future__ import annotations

import math
import os
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mwaa_control.adapters.clients import DESTRUCTIVE_CONFIG, worst_case_seconds
from mwaa_control.models import PARTITION, ControlScope

# Leases are renewed every lease/5; ensure() must survive at least two missed renewals.
HEARTBEATS_PER_LEASE = 5
# The longest destructive EC2 call (Create/Delete/ModifyVpcEndpoint with its retries), plus a second
# between Lease.ensure() and sending it: ensure() refuses once less than this is left of the lease.
LEASE_SAFETY_MARGIN_SECONDS = worst_case_seconds(DESTRUCTIVE_CONFIG) + 1


def partition_of(region: str) -> str:
    """The IAM partition of a region, for when AWS_PARTITION is not set."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class EndpointSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployment_id: str = Field(min_length=1, max_length=128, description="Stack name; tags our endpoints")
    lock_table_name: str = Field(min_length=3)
    region: str
    partition: str = Field(
        default="aws", pattern=rf"^{PARTITION}$", description="IAM partition (aws, aws-cn, aws-us-gov); from region"
    )
    account_id: str = Field(pattern=r"^\d{12}$")
    participant_role_name: str | None = Field(
        default=None, description="Role assumed in participant accounts to read their environments"
    )
    participant_account_ids: tuple[str, ...] = Field(
        default=(), description="Shared VPC: the only other accounts whose environments are served"
    )
    # With heartbeats the lease no longer bounds the work, only how long a crashed holder blocks others.
    lock_lease_seconds: int = Field(default=45, ge=10, le=900)
    lock_wait_seconds: float = Field(default=60.0, ge=0, le=600)

    @model_validator(mode="before")
    @classmethod
    def _partition_from_region(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("partition") and isinstance(data.get("region"), str):
            return {**data, "partition": partition_of(data["region"])}
        return data

    @model_validator(mode="after")
    def _waiters_can_take_over(self) -> Self:
        # A waiter takes over a crashed holder's lease only after watching it unchanged for a full
        # lease; one that gives up sooner never would, and every later one would start again.
        if self.lock_wait_seconds <= self.lock_lease_seconds:
            raise ValueError(
                f"LOCK_WAIT_SECONDS ({self.lock_wait_seconds}) must exceed LOCK_LEASE_SECONDS "
                f"({self.lock_lease_seconds}), or a crashed holder's lease is never taken over"
            )
        return self

    @model_validator(mode="after")
    def _margin_outlasts_destructive_calls(self) -> Self:
        # A destructive call that passed ensure() must end before a waiter can take over (one lease
        # after our last renewal), and two missed renewals must not yet make ensure() refuse.
        usable = self.lock_lease_seconds - self.lock_safety_margin_seconds
        if usable <= 2 * self.lock_lease_seconds / HEARTBEATS_PER_LEASE:
            minimum = math.ceil(self.lock_safety_margin_seconds * HEARTBEATS_PER_LEASE / (HEARTBEATS_PER_LEASE - 2))
            raise ValueError(
                f"LOCK_LEASE_SECONDS ({self.lock_lease_seconds}) is too short: the longest destructive EC2 call "
                f"takes up to {self.lock_safety_margin_seconds - 1:.0f}s, so the lease must be at least {minimum + 1}s"
            )
        return self

    @property
    def lock_safety_margin_seconds(self) -> float:
        return LEASE_SAFETY_MARGIN_SECONDS

    @property
    def scope(self) -> ControlScope:
        return ControlScope(
            partition=self.partition,
            region=self.region,
            account_id=self.account_id,
            participant_account_ids=self.participant_account_ids,
        )

    @classmethod
    def from_env(cls) -> Self:
        env = os.environ
        region = env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
        return cls(
            deployment_id=env["DEPLOYMENT_ID"],
            lock_table_name=env["LOCK_TABLE_NAME"],
            region=region,
            partition=env.get("AWS_PARTITION") or partition_of(region),
            account_id=env["ACCOUNT_ID"],
            participant_role_name=env.get("PARTICIPANT_ROLE_NAME") or None,
            participant_account_ids=tuple(
                a.strip() for a in env.get("PARTICIPANT_ACCOUNT_IDS", "").split(",") if a.strip()
            ),
            lock_lease_seconds=int(env.get("LOCK_LEASE_SECONDS", "45")),
            lock_wait_seconds=float(env.get("LOCK_WAIT_SECONDS", "60")),
        )


class LifecycleEnvironment(BaseModel):
    """Settings of the pause/resume functions (on top of the deployment's common ones)."""

    model_config = ConfigDict(frozen=True)

    deployment_id: str = Field(min_length=1, max_length=128)
    state_table_name: str = Field(min_length=3)
    region: str
    partition: str = Field(default="aws", pattern=rf"^{PARTITION}$")
    account_id: str = Field(pattern=r"^\d{12}$")
    metadata_bucket: str = Field(min_length=3, max_length=63)
    metadata_key_arn: str = Field(min_length=1, description="KMS key that wraps backups' and snapshots' data keys")

    @classmethod
    def from_env(cls) -> Self:
        env = os.environ
        region = env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
        return cls(
            deployment_id=env["DEPLOYMENT_ID"],
            state_table_name=env["LOCK_TABLE_NAME"],
            region=region,
            partition=env.get("AWS_PARTITION") or partition_of(region),
            account_id=env["ACCOUNT_ID"],
            metadata_bucket=env["METADATA_BUCKET"],
            metadata_key_arn=env["METADATA_KEY_ARN"],
        )
