"""The SQS endpoint policy amendment: open to the queue once, withdraw only our statement."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mwaa_control.endpoints.sqs_policy import CELERY_QUEUE_ACTIONS, policy_allowing_queue, policy_without_environment

ENV = "arn:aws:airflow:us-east-1:123456789012:environment/etl"
QUEUE = "arn:aws:sqs:us-east-1:210987654321:airflow-celery-abc"
RESTRICTIVE = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": []}],
}


def test_restrictive_policy_gets_one_statement_for_the_queue() -> None:
    amended = policy_allowing_queue(RESTRICTIVE, ENV, QUEUE)
    assert amended is not None
    assert amended["Statement"][0] == RESTRICTIVE["Statement"][0]
    ours = amended["Statement"][1]
    assert ours["Resource"] == [QUEUE] and ours["Action"] == CELERY_QUEUE_ACTIONS
    assert policy_allowing_queue(amended, ENV, QUEUE) is None


def test_open_policy_is_left_alone() -> None:
    open_policy = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}
    assert policy_allowing_queue(open_policy, ENV, QUEUE) is None


def test_wildcard_queue_pattern_counts_as_allowed() -> None:
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": ["arn:aws:sqs:us-east-1:*:airflow-celery-*"],
            }
        ]
    }
    assert policy_allowing_queue(policy, ENV, QUEUE) is None


def test_conditional_allow_does_not_count_as_allowing() -> None:
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalAccount": "111111111111"}},
            }
        ]
    }
    assert policy_allowing_queue(policy, ENV, QUEUE) is not None


def test_new_generation_queue_replaces_our_old_statement() -> None:
    first = policy_allowing_queue(RESTRICTIVE, ENV, QUEUE)
    assert first is not None
    second = policy_allowing_queue(first, ENV, QUEUE + "-new")
    assert second is not None
    assert len(second["Statement"]) == 2
    assert second["Statement"][1]["Resource"] == [QUEUE + "-new"]


def test_withdrawal_restores_the_owner_policy_exactly() -> None:
    amended = policy_allowing_queue(RESTRICTIVE, ENV, QUEUE)
    assert amended is not None
    assert policy_without_environment(amended, ENV) == RESTRICTIVE
    assert policy_without_environment(RESTRICTIVE, ENV) is None


@given(st.lists(st.text(min_size=1, max_size=30), max_size=5))
def test_amendment_never_drops_owner_statements(sids: list[str]) -> None:
    policy = {
        "Statement": [{"Sid": s, "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": "*"} for s in sids]
    }
    amended = policy_allowing_queue(policy, ENV, QUEUE)
    assert amended is not None
    assert amended["Statement"][: len(sids)] == policy["Statement"]
    json.dumps(amended)
