"""Operators' overrides, kept in the state table (DynamoDB adapter).

One item per environment, `override#<env>`, holds that environment's unexpired overrides (the
most recent wins while several are active, `evaluate` decides). An expired override is kept for
`fleet.LOOKBACK` more (it names the executions that follow it, see `fleet`), then DynamoDB's TTL
removes the item (`expires_at`); TTL deletion is late by up to days, so readers filter themselves
and an expired override never applies (`Override.active_at`). Writes are
conditional on the item's version, so two operators adding overrides at once both keep theirs.

Only roles under the stack's IAM path may write `override#` items (the table's resource policy):
an override can keep an environment paused, which is as much as pausing it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from pydantic import TypeAdapter

from mwaa_control import clock
from mwaa_control.errors import ControlPlaneError
from mwaa_control.schedules.fleet import LOOKBACK, recent_overrides
from mwaa_control.schedules.model import Override

PREFIX = "override#"
_OVERRIDES: TypeAdapter[tuple[Override, ...]] = TypeAdapter(tuple[Override, ...])
_ATTEMPTS = 5


class OverrideConflict(ControlPlaneError):
    """The environment's overrides kept changing under this write; nothing was written."""


def _now() -> dt.datetime:
    return clock.now()  # the system clock deployed; the local cloud's clock in it


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class OverrideStore:
    def __init__(self, dynamodb: Any, table: str, *, clock: Callable[[], dt.datetime] = _now) -> None:
        self._db = dynamodb
        self.table = table
        self._clock = clock

    def _read(self, environment: str) -> tuple[tuple[Override, ...], int | None]:
        item = self._db.get_item(
            TableName=self.table, Key={"pk": {"S": f"{PREFIX}{environment}"}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return (), None
        return _OVERRIDES.validate_json(item["overrides"]["S"]), int(item["version"]["N"])

    def overrides(self, environment: str) -> tuple[Override, ...]:
        """The environment's active overrides and those that expired within LOOKBACK (oldest first)."""
        found, _ = self._read(environment)
        return recent_overrides(found, self._clock())

    def add(self, override: Override) -> tuple[Override, ...]:
        """Keep `override` (with the environment's other unexpired ones); returns what is kept."""
        if override.until <= self._clock():
            raise ValueError(f"the override for {override.environment} expired at {override.until.isoformat()}")
        return self._write(override.environment, lambda kept: (*kept, override))

    def clear(self, environment: str) -> tuple[Override, ...]:
        """End the environment's active overrides now (the schedule applies again); they are kept,
        expired, for the names of the executions that follow them."""
        now = self._clock()

        def end(kept: tuple[Override, ...]) -> tuple[Override, ...]:
            # Future ones are dropped; one created this very instant never applied: dropped too.
            return tuple(
                o.model_copy(update={"until": now}) if o.active_at(now) else o for o in kept if o.created_at < now
            )

        return self._write(environment, end)

    def _write(
        self, environment: str, change: Callable[[tuple[Override, ...]], tuple[Override, ...]]
    ) -> tuple[Override, ...]:
        for _ in range(_ATTEMPTS):
            current, version = self._read(environment)
            kept = tuple(sorted(change(recent_overrides(current, self._clock())), key=lambda o: o.created_at))
            if not kept:
                if version is not None:
                    self._db.delete_item(TableName=self.table, Key={"pk": {"S": f"{PREFIX}{environment}"}})
                return ()
            item = {
                "pk": {"S": f"{PREFIX}{environment}"},
                "environment": {"S": environment},
                "overrides": {"S": _OVERRIDES.dump_json(kept).decode()},
                "version": {"N": str((version or 0) + 1)},
                "expires_at": {"N": str(int((max(o.until for o in kept) + LOOKBACK).timestamp()) + 1)},
            }
            condition: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(pk)"}
                if version is None
                else {
                    "ConditionExpression": "version = :seen",
                    "ExpressionAttributeValues": {":seen": {"N": str(version)}},
                }
            )
            try:
                self._db.put_item(TableName=self.table, Item=item, **condition)
            except ClientError as error:
                if _code(error) != "ConditionalCheckFailedException":
                    raise
                continue
            return kept
        raise OverrideConflict(f"{environment}: its overrides changed {_ATTEMPTS} times during this write")
