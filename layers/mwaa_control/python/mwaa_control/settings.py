"""The one settings model, read from the function's environment variables at cold start."""

from __future__ import annotations

import os
from typing import Self

from pydantic import BaseModel, ConfigDict, Field


class EndpointSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployment_id: str = Field(min_length=1, max_length=128, description="Stack name; tags our endpoints")
    lock_table_name: str = Field(min_length=3)
    region: str
    account_id: str = Field(pattern=r"^\d{12}$")
    participant_role_name: str | None = Field(
        default=None, description="Role assumed in participant accounts to read their environments"
    )
    participant_account_ids: tuple[str, ...] = Field(
        default=(), description="Shared VPC: participant accounts whose environments the fallback also lists"
    )
    lock_lease_seconds: int = Field(default=120, ge=10, le=900)
    lock_wait_seconds: float = Field(default=60.0, ge=0, le=600)

    @classmethod
    def from_env(cls) -> Self:
        env = os.environ
        return cls(
            deployment_id=env["DEPLOYMENT_ID"],
            lock_table_name=env["LOCK_TABLE_NAME"],
            region=env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"],
            account_id=env["ACCOUNT_ID"],
            participant_role_name=env.get("PARTICIPANT_ROLE_NAME") or None,
            participant_account_ids=tuple(
                a.strip() for a in env.get("PARTICIPANT_ACCOUNT_IDS", "").split(",") if a.strip()
            ),
            lock_lease_seconds=int(env.get("LOCK_LEASE_SECONDS", "120")),
            lock_wait_seconds=float(env.get("LOCK_WAIT_SECONDS", "60")),
        )
