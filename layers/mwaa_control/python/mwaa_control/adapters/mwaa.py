"""MWAA control-plane API adapter (GetEnvironment, ListEnvironments), across accounts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.adapters.clients import assumed_session, client
from mwaa_control.errors import CrossAccountNotConfigured
from mwaa_control.models import Environment, EnvironmentRef


class MwaaDirectory:
    def __init__(
        self,
        *,
        account_id: str,
        region: str,
        participant_role_name: str | None = None,
        participant_account_ids: tuple[str, ...] = (),
    ) -> None:
        self._account_id = account_id
        self._participants = participant_account_ids
        self._region = region
        self._participant_role_name = participant_role_name
        self._clients: dict[tuple[str, str], Any] = {}

    def _client_for(self, account: str, region: str) -> Any:
        key = (account, region)
        if key not in self._clients:
            if account == self._account_id:
                self._clients[key] = client("mwaa", region=region)
            elif self._participant_role_name:
                role_arn = f"arn:aws:iam::{account}:role/{self._participant_role_name}"
                session = assumed_session(role_arn, region=region)
                self._clients[key] = client("mwaa", region=region, session=session)
            else:
                raise CrossAccountNotConfigured(
                    f"environment is in account {account}, not {self._account_id}; set the "
                    "ParticipantRoleName parameter so the control plane can read participant environments"
                )
        return self._clients[key]

    def get_environment(self, ref: EnvironmentRef) -> Environment | None:
        try:
            response = self._client_for(ref.account, ref.region).get_environment(Name=ref.name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        return Environment.model_validate(response["Environment"])

    def list_environments(self) -> Iterator[EnvironmentRef]:
        """This account's environments and, in the shared-VPC layout, every participant's."""
        for account in (self._account_id, *self._participants):
            paginator = self._client_for(account, self._region).get_paginator("list_environments")
            for page in paginator.paginate(PaginationConfig={"PageSize": 25}):
                for name in page.get("Environments", []):
                    yield EnvironmentRef(account=account, region=self._region, name=name)
