"""MWAA control-plane API adapter (GetEnvironment, ListEnvironments), across accounts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.adapters.clients import assumed_session, client
from mwaa_control.errors import CrossAccountNotConfigured, EnvironmentOutOfScope
from mwaa_control.models import ControlScope, Environment, EnvironmentRef


class MwaaDirectory:
    def __init__(
        self,
        *,
        scope: ControlScope,
        participant_role_name: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock`` (aware UTC) decides when participant credentials are renewed; tests move it."""
        self._scope = scope
        self._participant_role_name = participant_role_name
        self._clock = clock
        self._clients: dict[tuple[str, str], Any] = {}

    def _client_for(self, account: str, region: str) -> Any:
        key = (account, region)
        if key not in self._clients:
            # Checked here too, whatever the caller checked: a role is only ever assumed in an
            # account the operator configured, and only in our region.
            if region != self._scope.region or account not in self._scope.accounts:
                raise EnvironmentOutOfScope(
                    f"refusing to read environments of account {account} in {region}: this deployment serves "
                    f"{list(self._scope.accounts)} in {self._scope.region}"
                )
            if account == self._scope.account_id:
                self._clients[key] = client("mwaa", region=region)
            elif self._participant_role_name:
                role_arn = f"arn:{self._scope.partition}:iam::{account}:role/{self._participant_role_name}"
                session = assumed_session(role_arn, region=region, clock=self._clock)
                self._clients[key] = client("mwaa", region=region, session=session)
            else:
                raise CrossAccountNotConfigured(
                    f"environment is in account {account}, not {self._scope.account_id}; set the "
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

    def list_environments(self, account: str | None = None) -> Iterator[EnvironmentRef]:
        """One served account's environments, or (None) this account's and every participant's.
        Callers that must survive one broken participant list one account at a time."""
        for listed in (account,) if account else self._scope.accounts:
            paginator = self._client_for(listed, self._scope.region).get_paginator("list_environments")
            for page in paginator.paginate(PaginationConfig={"PageSize": 25}):
                for name in page.get("Environments", []):
                    yield EnvironmentRef(
                        account=listed, region=self._scope.region, name=name, partition=self._scope.partition
                    )
