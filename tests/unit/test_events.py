"""Recognising MWAA status-change events and identifying their environment."""

from __future__ import annotations

import copy

import pytest

from mwaa_control.errors import EnvironmentOutOfScope, InvalidEnvironmentReference
from mwaa_control.events import environment_of
from mwaa_control.models import ControlScope, EnvironmentRef
from tests.conftest import load_event

SCOPE = ControlScope(
    partition="aws", region="us-east-1", account_id="123456789012", participant_account_ids=("222222222222",)
)


def test_arn_in_resources_identifies_the_environment() -> None:
    ref = environment_of(load_event("mwaa_status_pending.json"), SCOPE)
    assert ref == EnvironmentRef(account="123456789012", region="us-east-1", name="etl-shared")


def test_name_in_detail_is_enough_when_resources_are_empty() -> None:
    ref = environment_of(load_event("mwaa_status_name_only.json"), SCOPE)
    assert ref.arn == "arn:aws:airflow:us-east-1:123456789012:environment/etl-shared"


def test_participant_account_comes_from_the_arn() -> None:
    event = load_event("mwaa_status_pending.json")
    event["account"] = "222222222222"
    event["resources"] = ["arn:aws:airflow:us-east-1:222222222222:environment/etl-shared"]
    assert environment_of(event, SCOPE).account == "222222222222"


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ("foreign_ec2_state_change.json", "foreign event"),
        ("malformed_conflicting_names.json", "detail names"),
        ("malformed_no_environment.json", "names no environment"),
        ("malformed_not_eventbridge.json", "not an EventBridge event"),
    ],
)
def test_malformed_and_foreign_events_are_refused_with_a_reason(sample: str, message: str) -> None:
    with pytest.raises(InvalidEnvironmentReference, match=message):
        environment_of(load_event(sample), SCOPE)


@pytest.mark.parametrize("bad", [None, [], "PENDING", 42, {"source": "aws.airflow"}])
def test_garbage_is_refused(bad: object) -> None:
    with pytest.raises(InvalidEnvironmentReference):
        environment_of(bad, SCOPE)


def test_invalid_environment_name_is_refused() -> None:
    event = copy.deepcopy(load_event("mwaa_status_name_only.json"))
    event["detail"]["name"] = "bad name; rm -rf /"
    with pytest.raises(InvalidEnvironmentReference):
        environment_of(event, SCOPE)


def test_an_event_whose_account_is_not_the_arns_is_refused() -> None:
    with pytest.raises(EnvironmentOutOfScope, match="event from account 123456789012"):
        environment_of(load_event("mwaa_status_account_mismatch.json"), SCOPE)


def test_an_event_whose_region_is_not_the_arns_is_refused() -> None:
    event = load_event("mwaa_status_pending.json")
    event["region"] = "eu-west-1"
    with pytest.raises(EnvironmentOutOfScope, match="own account and region"):
        environment_of(event, SCOPE)


def test_an_environment_of_an_unconfigured_account_is_refused() -> None:
    with pytest.raises(EnvironmentOutOfScope, match="account 333333333333 is not configured"):
        environment_of(load_event("mwaa_status_unconfigured_account.json"), SCOPE)


def test_an_environment_in_another_region_is_refused_even_when_the_event_agrees() -> None:
    event = load_event("mwaa_status_pending.json")
    event["region"] = "eu-west-1"
    event["resources"] = ["arn:aws:airflow:eu-west-1:123456789012:environment/etl-shared"]
    with pytest.raises(EnvironmentOutOfScope, match="region eu-west-1"):
        environment_of(event, SCOPE)


def test_an_arn_with_an_availability_zone_for_a_region_is_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidEnvironmentReference, match="us-east-1a"):
        environment_of(load_event("malformed_region_in_arn.json"), SCOPE)
    with pytest.raises(InvalidEnvironmentReference):
        EnvironmentRef.from_arn("arn:aws:airflow:us-east-1a:123456789012:environment/etl")


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:airflow:us-east-1a:123456789012:environment/etl",
        "arn:aws:airflow:US-EAST-1:123456789012:environment/etl",
        "arn:aws-:airflow:us-east-1:123456789012:environment/etl",
        "arn:aws:airflow:us-east-1:12345678901:environment/etl",
        "arn:aws:airflow:us-east-1:123456789012:environment/1etl",
    ],
)
def test_from_arn_raises_only_invalid_environment_reference(arn: str) -> None:
    with pytest.raises(InvalidEnvironmentReference):
        EnvironmentRef.from_arn(arn)


def test_arns_of_other_partitions_round_trip() -> None:
    arn = "arn:aws-us-gov:airflow:us-gov-west-1:123456789012:environment/etl"
    assert EnvironmentRef.from_arn(arn).arn == arn


def test_a_name_only_event_gets_the_deployments_partition() -> None:
    event = load_event("mwaa_status_name_only.json")
    event["region"] = "cn-north-1"
    china = ControlScope(partition="aws-cn", region="cn-north-1", account_id="123456789012")
    assert environment_of(event, china).arn == "arn:aws-cn:airflow:cn-north-1:123456789012:environment/etl-shared"
