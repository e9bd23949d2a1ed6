"""A lease lock in DynamoDB, so concurrent or redelivered events for one environment cannot
create two endpoints for the same service (EC2's ClientToken guards this too on AWS, but it is
scoped to 24 hours and to identical parameters, and local emulators ignore it).

Written by hand: Powertools Idempotency deduplicates identical events, not different events
(or the polling fallback) racing on the same environment.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.errors import LockNotAcquired


class DynamoDbLeaseLock:
    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        lease_seconds: int = 120,
        wait_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table_name
        self._lease = lease_seconds
        self._wait = wait_seconds
        self._clock = clock
        self._sleep = sleep

    def _try_acquire(self, key: str, owner: str) -> bool:
        now = int(self._clock())
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"lock#{key}"},
                    "owner": {"S": owner},
                    "expires_at": {"N": str(now + self._lease)},
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _release(self, key: str, owner: str) -> None:
        try:
            self._dynamodb.delete_item(
                TableName=self._table,
                Key={"pk": {"S": f"lock#{key}"}},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as error:
            # Our lease expired and someone else holds it now: theirs to release.
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        owner = uuid.uuid4().hex
        deadline = self._clock() + self._wait
        delay = 0.05
        while not self._try_acquire(key, owner):
            if self._clock() >= deadline:
                raise LockNotAcquired(f"another invocation is working on {key}; the event will be retried")
            self._sleep(delay)
            delay = min(delay * 2, 2.0)
        try:
            yield
        finally:
            self._release(key, owner)
