"""The override store on moto's DynamoDB, with the state table's schema from template.yaml."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from localcloud.template import load_template
from mwaa_control.schedules.fleet import LOOKBACK
from mwaa_control.schedules.model import Override, OverrideKind
from mwaa_control.schedules.overrides import OverrideStore

T0 = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = load_template()["Resources"]["LockTable"]["Properties"]
        client.create_table(
            TableName="state",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def keep_awake(created: dt.datetime, until: dt.datetime) -> Override:
    return Override(environment="etl", kind=OverrideKind.KEEP_AWAKE, created_at=created, until=until)


def test_overrides_accumulate_expire_and_are_kept_a_lookback_for_execution_names(dynamodb: Any) -> None:
    now = [T0]
    store = OverrideStore(dynamodb, "state", clock=lambda: now[0])
    first = keep_awake(T0, T0 + dt.timedelta(hours=2))
    second = keep_awake(T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(hours=4))
    store.add(first)
    assert store.add(second) == (first, second)
    item = dynamodb.get_item(TableName="state", Key={"pk": {"S": "override#etl"}})["Item"]
    assert int(item["expires_at"]["N"]) > (second.until + LOOKBACK).timestamp()  # TTL after the lookback
    now[0] = T0 + dt.timedelta(days=2)
    assert store.overrides("etl") == (first, second)  # expired, still shaping the last week
    now[0] = second.until + LOOKBACK
    assert store.overrides("etl") == ()
    with pytest.raises(ValueError, match="expired"):
        store.add(first)


def test_clearing_ends_active_overrides_now_and_drops_future_ones(dynamodb: Any) -> None:
    now = [T0]
    store = OverrideStore(dynamodb, "state", clock=lambda: now[0])
    active = keep_awake(T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=3))
    future = keep_awake(T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=5))
    store.add(active)
    store.add(future)
    [ended] = store.clear("etl")
    assert ended.until == T0 and not ended.active_at(T0)
    assert store.overrides("etl") == (ended,)
