"""The settings model: the IAM partition from the region, and lease settings that can work."""

from __future__ import annotations

import pytest

from mwaa_control.settings import EndpointSettings

BASE = {"DEPLOYMENT_ID": "stack", "LOCK_TABLE_NAME": "stack-LockTable", "ACCOUNT_ID": "123456789012"}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> EndpointSettings:
    for key in ("AWS_PARTITION", "AWS_REGION", "AWS_DEFAULT_REGION", "LOCK_LEASE_SECONDS", "LOCK_WAIT_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**BASE, **env}.items():
        monkeypatch.setenv(key, value)
    return EndpointSettings.from_env()


@pytest.mark.parametrize(
    ("region", "partition"),
    [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("cn-northwest-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_the_partition_is_derived_from_the_region(monkeypatch: pytest.MonkeyPatch, region: str, partition: str) -> None:
    loaded = settings(monkeypatch, AWS_REGION=region)
    assert loaded.partition == partition
    assert loaded.scope.partition == partition


def test_aws_partition_overrides_the_derived_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch, AWS_REGION="us-east-1", AWS_PARTITION="aws-iso").partition == "aws-iso"


def test_the_scope_is_the_own_account_and_the_participants(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings(monkeypatch, AWS_REGION="us-east-1", PARTICIPANT_ACCOUNT_IDS=" 222222222222, 333333333333 ")
    assert loaded.scope.accounts == ("123456789012", "222222222222", "333333333333")


def test_a_wait_no_longer_than_the_lease_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A waiter must watch a crashed holder's record for a full lease before taking it over.
    with pytest.raises(ValueError, match="must exceed LOCK_LEASE_SECONDS"):
        settings(monkeypatch, AWS_REGION="us-east-1", LOCK_LEASE_SECONDS="120", LOCK_WAIT_SECONDS="60")
