"""Keeping a restrictive SQS interface-endpoint policy open to an environment's Celery queue.

MWAA workers reach the environment's Celery queue through the VPC's SQS endpoint. In a locked-down
VPC that endpoint's policy lists the queues it allows; a new environment (and every recreated one)
has a new queue, so the policy must name it or the workers cannot fetch tasks. We add one statement
per environment, identified by a Sid derived from the environment ARN, so it can be updated when the
environment is recreated and removed when it is gone, without touching the owner's own statements.
"""

from __future__ import annotations

import copy
import hashlib
from fnmatch import fnmatchcase
from typing import Any

CELERY_QUEUE_ACTIONS = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
]


def statement_id(environment_arn: str) -> str:
    digest = hashlib.sha256(environment_arn.encode()).hexdigest()[:16]
    return f"MwaaControlCeleryQueue{digest}"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _allows(statement: dict[str, Any], queue_arn: str) -> bool:
    if statement.get("Effect") != "Allow" or "NotResource" in statement or "Condition" in statement:
        return False
    actions = [str(a).lower() for a in _as_list(statement.get("Action"))]
    if not any(a in ("*", "sqs:*") for a in actions) and not all(a.lower() in actions for a in CELERY_QUEUE_ACTIONS):
        return False
    return any(fnmatchcase(queue_arn, str(r)) for r in _as_list(statement.get("Resource")))


def policy_allowing_queue(policy: dict[str, Any], environment_arn: str, queue_arn: str) -> dict[str, Any] | None:
    """The policy amended so it allows the queue, or None when it already does."""
    sid = statement_id(environment_arn)
    statements = _as_list(policy.get("Statement"))
    others = [s for s in statements if s.get("Sid") != sid]
    if any(_allows(s, queue_arn) for s in others):
        # Already open to the queue (often "*"); a statement of ours from an earlier
        # environment generation would be stale, so drop it if present.
        if len(others) == len(statements):
            return None
        amended = copy.deepcopy(policy)
        amended["Statement"] = others
        return amended
    ours = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": "*",
        "Action": list(CELERY_QUEUE_ACTIONS),
        "Resource": [queue_arn],
    }
    if ours in statements:
        return None
    amended = copy.deepcopy(policy)
    amended.setdefault("Version", "2012-10-17")
    amended["Statement"] = [*others, ours]
    return amended


def policy_without_environment(policy: dict[str, Any], environment_arn: str) -> dict[str, Any] | None:
    """The policy without our statement for the environment, or None when it has none."""
    sid = statement_id(environment_arn)
    statements = _as_list(policy.get("Statement"))
    kept = [s for s in statements if s.get("Sid") != sid]
    if len(kept) == len(statements):
        return None
    amended = copy.deepcopy(policy)
    amended["Statement"] = kept
    return amended
