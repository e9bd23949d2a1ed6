"""MwaaDirectory and assumed-role sessions without AWS: which roles it assumes, and renewal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mwaa_control.adapters import mwaa
from mwaa_control.adapters.clients import assumed_session
from mwaa_control.adapters.mwaa import MwaaDirectory
from mwaa_control.errors import CrossAccountNotConfigured, EnvironmentOutOfScope
from mwaa_control.models import ControlScope


class FakeSession:
    def client(self, service: str, **_: Any) -> str:
        return f"{service} client"


@pytest.fixture
def assumed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Role ARNs the directory asked to assume (nothing is called)."""
    roles: list[str] = []

    def fake_assumed_session(role_arn: str, **_: Any) -> FakeSession:
        roles.append(role_arn)
        return FakeSession()

    monkeypatch.setattr(mwaa, "assumed_session", fake_assumed_session)
    return roles


def directory(partition: str = "aws", region: str = "us-east-1", role: str | None = "reader") -> MwaaDirectory:
    scope = ControlScope(
        partition=partition, region=region, account_id="123456789012", participant_account_ids=("222222222222",)
    )
    return MwaaDirectory(scope=scope, participant_role_name=role)


def test_an_unconfigured_account_is_refused_without_assuming_a_role(assumed: list[str]) -> None:
    with pytest.raises(EnvironmentOutOfScope, match="999999999999"):
        directory()._client_for("999999999999", "us-east-1")
    assert assumed == []


def test_another_region_is_refused_without_assuming_a_role(assumed: list[str]) -> None:
    with pytest.raises(EnvironmentOutOfScope, match="eu-west-1"):
        directory()._client_for("222222222222", "eu-west-1")
    assert assumed == []


def test_a_configured_participant_without_a_role_name_is_explained(assumed: list[str]) -> None:
    with pytest.raises(CrossAccountNotConfigured, match="ParticipantRoleName"):
        directory(role=None)._client_for("222222222222", "us-east-1")


@pytest.mark.parametrize(("partition", "region"), [("aws", "us-east-1"), ("aws-cn", "cn-north-1")])
def test_the_participant_role_arn_is_in_the_deployments_partition(
    assumed: list[str], partition: str, region: str
) -> None:
    directory(partition, region)._client_for("222222222222", region)
    assert assumed == [f"arn:{partition}:iam::222222222222:role/reader"]


class FakeSts:
    """AssumeRole answering one-hour credentials, stamped by the caller's clock."""

    def __init__(self, clock: list[datetime]) -> None:
        self.clock = clock
        self.calls = 0

    def assume_role(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {
            "Credentials": {
                "AccessKeyId": f"ASIA{self.calls:016d}",
                "SecretAccessKey": "secret",
                "SessionToken": "token",
                "Expiration": self.clock[0] + timedelta(hours=1),
            }
        }


def test_assumed_session_credentials_renew_before_they_expire() -> None:
    # Given a session on assumed-role credentials, used once
    now = [datetime(2026, 11, 21, 9, tzinfo=UTC)]
    sts = FakeSts(now)
    session = assumed_session(
        "arn:aws:iam::222222222222:role/reader", region="us-east-1", sts=sts, clock=lambda: now[0]
    )
    first = session.get_credentials().get_frozen_credentials().access_key
    # When 50 minutes pass (inside botocore's refresh window), then the next use gets new credentials
    now[0] += timedelta(minutes=50)
    second = session.get_credentials().get_frozen_credentials().access_key
    assert (sts.calls, first != second) == (2, True)
    # And while they are fresh, none are fetched
    now[0] += timedelta(minutes=5)
    session.get_credentials().get_frozen_credentials()
    assert sts.calls == 2


class FakeMwaa:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def get_paginator(self, _: str) -> FakeMwaa:
        return self

    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return [{"Environments": self.names}]


def test_environments_are_listed_one_account_at_a_time(assumed: list[str]) -> None:
    # A broken participant must not stop the listing of the other accounts: the caller lists each
    listing = directory()
    listing._clients[("123456789012", "us-east-1")] = FakeMwaa(["etl"])
    refs = list(listing.list_environments("123456789012"))
    assert [r.arn for r in refs] == ["arn:aws:airflow:us-east-1:123456789012:environment/etl"]
    assert assumed == []
