"""Recognising MWAA status-change events and identifying their environment."""

from __future__ import annotations

import copy

import pytest

from mwaa_control.errors import InvalidEnvironmentReference
from mwaa_control.events import environment_of
from mwaa_control.models import EnvironmentRef
from tests.conftest import load_event


def test_arn_in_resources_identifies_the_environment() -> None:
    ref = environment_of(load_event("mwaa_status_pending.json"))
    assert ref == EnvironmentRef(account="123456789012", region="us-east-1", name="etl-shared")


def test_name_in_detail_is_enough_when_resources_are_empty() -> None:
    ref = environment_of(load_event("mwaa_status_name_only.json"))
    assert ref.arn == "arn:aws:airflow:us-east-1:123456789012:environment/etl-shared"


def test_participant_account_comes_from_the_arn() -> None:
    event = load_event("mwaa_status_pending.json")
    event["account"] = "222222222222"
    event["resources"] = ["arn:aws:airflow:us-east-1:222222222222:environment/etl-shared"]
    assert environment_of(event).account == "222222222222"


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
        environment_of(load_event(sample))


@pytest.mark.parametrize("bad", [None, [], "PENDING", 42, {"source": "aws.airflow"}])
def test_garbage_is_refused(bad: object) -> None:
    with pytest.raises(InvalidEnvironmentReference):
        environment_of(bad)


def test_invalid_environment_name_is_refused() -> None:
    event = copy.deepcopy(load_event("mwaa_status_name_only.json"))
    event["detail"]["name"] = "bad name; rm -rf /"
    with pytest.raises(InvalidEnvironmentReference):
        environment_of(event)
