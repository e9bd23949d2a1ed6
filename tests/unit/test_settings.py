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


def test_a_lease_too_short_for_the_longest_destructive_call_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # ensure() passes until lease - margin; the margin must outlast one EC2 call with its retries
    with pytest.raises(ValueError, match="destructive"):
        settings(monkeypatch, AWS_REGION="us-east-1", LOCK_LEASE_SECONDS="20", LOCK_WAIT_SECONDS="60")


def test_the_lease_margin_outlasts_the_destructive_clients_worst_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from mwaa_control.adapters.clients import DESTRUCTIVE_CONFIG, RETRY_CONFIG, worst_case_seconds

    loaded = settings(monkeypatch, AWS_REGION="us-east-1")
    assert worst_case_seconds(DESTRUCTIVE_CONFIG) < loaded.lock_safety_margin_seconds
    # Two missed heartbeats (every lease/5) still leave the lease usable
    assert loaded.lock_lease_seconds - loaded.lock_safety_margin_seconds > 2 * loaded.lock_lease_seconds / 5
    # The ordinary client's worst case (5 attempts x 35 s) is what the finding was about
    assert worst_case_seconds(RETRY_CONFIG) > loaded.lock_lease_seconds
