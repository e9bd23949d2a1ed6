"""The state table's pause/resume records (DynamoDB adapter).

- `operation#<env>`: one pause or resume per environment at a time. The holder is a Step Functions
  execution; a holder that is no longer running is taken over (its execution ended without
  releasing: aborted, timed out), never one that still runs.
- `environment#<env>`: the phase, the last verified backup, and how long creations took.
- `wait#<env>`: a task token parked until the environment reaches a status (status-change events
  complete it; slow polling is the fallback for lost events).

Only roles under the stack's IAM path may write these prefixes (the table's resource policy)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control import clock
from mwaa_control.errors import ControlPlaneError
from mwaa_control.pause.models import EnvironmentRecord, Operation, Phase

WAIT_TTL_SECONDS = 3 * 24 * 3600
CREATION_HISTORY = 10


class OperationInProgress(ControlPlaneError):
    """Another pause or resume of this environment is running."""


def _now() -> datetime:
    return clock.now()  # the system clock deployed; the local cloud's clock in it


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class PauseStateTable:
    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        execution_running: Callable[[str], bool],
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """`execution_running(arn)` tells whether a lock holder still runs (Step Functions)."""
        self._db = dynamodb
        self.table = table
        self._running = execution_running
        self._clock = clock

    # --- one operation per environment ----------------------------------------------------------
    def acquire(self, environment: str, operation: Operation, execution: str) -> None:
        key = {"pk": {"S": f"operation#{environment}"}}
        item = {
            **key,
            "environment": {"S": environment},
            "operation": {"S": operation.value},
            "execution": {"S": execution},
            "acquired_at": {"S": self._clock().isoformat()},
        }
        try:
            self._db.put_item(
                TableName=self.table,
                Item=item,
                # A retried step of the same execution finds its own lock.
                ConditionExpression="attribute_not_exists(pk) OR execution = :me",
                ExpressionAttributeValues={":me": {"S": execution}},
            )
            return
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise
        held = self._db.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        if held is None:
            return self.acquire(environment, operation, execution)
        holder = held["execution"]["S"]
        if self._running(holder):
            raise OperationInProgress(
                f"{environment}: a {held['operation']['S']} is already running ({holder}); "
                "one operation per environment at a time, nothing was changed"
            )
        try:
            self._db.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="execution = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                raise OperationInProgress(f"{environment}: another execution took the lock first") from None
            raise

    def holds(self, environment: str, execution: str) -> bool:
        held = self._db.get_item(
            TableName=self.table, Key={"pk": {"S": f"operation#{environment}"}}, ConsistentRead=True
        ).get("Item")
        return held is not None and held["execution"]["S"] == execution

    def release(self, environment: str, execution: str) -> None:
        try:
            self._db.delete_item(
                TableName=self.table,
                Key={"pk": {"S": f"operation#{environment}"}},
                ConditionExpression="execution = :me",
                ExpressionAttributeValues={":me": {"S": execution}},
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":  # not ours (any more): leave it
                raise

    # --- the environment's record -----------------------------------------------------------------
    def record(self, environment: str) -> EnvironmentRecord | None:
        item = self._db.get_item(
            TableName=self.table, Key={"pk": {"S": f"environment#{environment}"}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return EnvironmentRecord.model_validate_json(item["record"]["S"])

    def save(self, record: EnvironmentRecord) -> EnvironmentRecord:
        record.creation_seconds = record.creation_seconds[-CREATION_HISTORY:]
        self._db.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": f"environment#{record.environment}"},
                "phase": {"S": record.phase.value},
                "record": {"S": record.model_dump_json()},
            },
        )
        return record

    def update(self, environment: str, **changes: Any) -> EnvironmentRecord:
        current = self.record(environment) or EnvironmentRecord(
            environment=environment, phase=Phase.ACTIVE, updated_at=self._clock()
        )
        merged = current.model_copy(update={**changes, "updated_at": self._clock()})
        return self.save(EnvironmentRecord.model_validate(merged.model_dump()))

    # --- parked task tokens -----------------------------------------------------------------------
    def park(self, environment: str, target: str, task_token: str, execution: str) -> None:
        now = self._clock()
        self._db.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": f"wait#{environment}"},
                "target": {"S": target},
                "task_token": {"S": task_token},
                "execution": {"S": execution},
                "parked_at": {"S": now.isoformat()},
                "expires_at": {"N": str(int(now.timestamp()) + WAIT_TTL_SECONDS)},
            },
        )

    def parked(self, environment: str) -> tuple[str, str] | None:
        """(target status, task token) of the wait parked for this environment, if any."""
        item = self._db.get_item(
            TableName=self.table, Key={"pk": {"S": f"wait#{environment}"}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return item["target"]["S"], item["task_token"]["S"]

    def unpark(self, environment: str, task_token: str) -> None:
        try:
            self._db.delete_item(
                TableName=self.table,
                Key={"pk": {"S": f"wait#{environment}"}},
                ConditionExpression="task_token = :token",
                ExpressionAttributeValues={":token": {"S": task_token}},
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":  # a newer wait replaced it
                raise
