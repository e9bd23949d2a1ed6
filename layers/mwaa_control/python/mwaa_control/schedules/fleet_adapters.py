"""What the fleet scheduler reads and does in AWS: the fleet document (S3), the environments (MWAA,
the state table, snapshots), Step Functions executions and its one-time wake-up schedule."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from mwaa_control.pause.models import EnvironmentRecord
from mwaa_control.pause.snapshot import SNAPSHOT_FILE, SNAPSHOTS, snapshot_prefix
from mwaa_control.schedules.config import (
    ConfigProblem,
    FleetDocument,
    ScheduleConfigError,
    load_fleet_document,
)
from mwaa_control.schedules.fleet import FleetAction, ObservedEnvironment, PlannedExecution

UTC = dt.UTC
EMPTY_DOCUMENT = FleetDocument(schedules={}, calendars={}, environments={})
MAX_DOCUMENT_BYTES = 1 << 20


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3FleetDocument:
    """The fleet document: a JSON object in the stack's bucket, versioned with it (who changed
    the schedules, when, and the way back), and larger than any parameter store value allows."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self._s3, self.bucket, self.key = s3, bucket, key

    def load(self) -> tuple[FleetDocument | ScheduleConfigError, str | None]:
        """The validated document (or why it is refused) and the object version it came from.
        No document is an empty fleet: nothing is scheduled, tag assignments are refused."""
        try:
            found = self._s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                return EMPTY_DOCUMENT, None
            raise
        version = found.get("VersionId")
        body: bytes = found["Body"].read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            problem = ConfigProblem(field="(document)", message=f"larger than {MAX_DOCUMENT_BYTES} bytes")
            return ScheduleConfigError([problem]), version
        try:
            return load_fleet_document(body.decode("utf-8")), version
        except UnicodeDecodeError:
            return ScheduleConfigError([ConfigProblem(field="(document)", message="not UTF-8")]), version
        except ScheduleConfigError as refused:
            return refused, version


@dataclass
class Observation:
    environments: list[ObservedEnvironment] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    """Environment -> what could not be read (the environment is then left alone this run)."""


class FleetObserver:
    """Every environment the scheduler may act on: those MWAA lists, and paused ones (a snapshot
    under `snapshots/` or a name in the fleet document) known to the state table."""

    def __init__(self, *, mwaa: Any, dynamodb: Any, s3: Any, sfn: Any, table: str, bucket: str) -> None:
        self._mwaa, self._db, self._s3, self._sfn = mwaa, dynamodb, s3, sfn
        self.table, self.bucket = table, bucket

    def observe(self, also: Iterable[str]) -> Observation:
        """ListEnvironments failing fails the whole observation: without it the quota is unknown."""
        seen = Observation()
        live = self._listed()
        candidates = sorted(set(live) | set(self._snapshotted()) | set(also))
        for name in candidates:
            try:
                seen.environments.append(self._one(name, listed=name in live))
            except Exception as error:  # one environment's failure never stops the others
                seen.failures[name] = f"{type(error).__name__}: {str(error)[:300]}"
                if name in live:  # still counts against the quota, and nothing acts on it
                    seen.environments.append(ObservedEnvironment(name=name, status="UNKNOWN"))
        return seen

    def _listed(self) -> list[str]:
        names: list[str] = []
        for page in self._mwaa.get_paginator("list_environments").paginate(PaginationConfig={"PageSize": 25}):
            names += page.get("Environments", [])
        return names

    def _snapshotted(self) -> list[str]:
        names: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{SNAPSHOTS}/", Delimiter="/"):
            names += [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", [])]
        return names

    def _one(self, name: str, *, listed: bool) -> ObservedEnvironment:
        status: str | None = None
        tags: dict[str, str] | None = None
        if listed:
            try:
                environment = self._mwaa.get_environment(Name=name)["Environment"]
            except ClientError as error:
                if _code(error) != "ResourceNotFoundException":
                    raise
            else:
                status = str(environment["Status"])
                tags = dict(self._mwaa.list_tags_for_resource(ResourceArn=environment["Arn"]).get("Tags", {}))
        record = self._record(name)
        if status is None and record is not None and record.last_good_backup_id:
            tags = self._snapshot_tags(name, record.last_good_backup_id)
        return ObservedEnvironment(
            name=name,
            status=status,
            phase=None if record is None else record.phase,
            operation_running=self._operation_running(name),
            tags=tags,
            creation_seconds=tuple(record.creation_seconds) if record else (),
        )

    def _item(self, key: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._db.get_item(
            TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True
        ).get("Item")
        return item

    def _record(self, name: str) -> EnvironmentRecord | None:
        item = self._item(f"environment#{name}")
        return None if item is None else EnvironmentRecord.model_validate_json(item["record"]["S"])

    def _operation_running(self, name: str) -> bool:
        item = self._item(f"operation#{name}")
        if item is None:
            return False
        try:
            described = self._sfn.describe_execution(executionArn=item["execution"]["S"])
        except ClientError as error:
            if _code(error) == "ExecutionDoesNotExist":
                return False  # a lock left behind is taken over by the next operation
            raise
        return str(described["status"]) == "RUNNING"

    def _snapshot_tags(self, name: str, backup_id: str) -> dict[str, str] | None:
        """The tags the resume would recreate the environment with. Read without authenticating
        the snapshot (that needs its data key, which unseals the configuration options): they
        only decide whether to start a resume, and the resume authenticates before it creates."""
        key = f"{snapshot_prefix(name, backup_id)}/{SNAPSHOT_FILE}"
        try:
            raw = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(MAX_DOCUMENT_BYTES + 1)
            tags = json.loads(raw)["create_request"].get("Tags", {})
        except (ClientError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            return None
        return dict(tags)


class ExecutionStarter:
    def __init__(self, sfn: Any, *, pause_state_machine: str, resume_state_machine: str) -> None:
        self._sfn = sfn
        self._machines = {FleetAction.PAUSE: pause_state_machine, FleetAction.RESUME: resume_state_machine}

    def start(self, planned: PlannedExecution) -> Literal["started", "already-started"]:
        """Starts the execution unless one of that name exists. StartExecution alone cannot tell:
        for the same name and input it answers as if it started one (idempotency), so a second run
        seconds later would count a start that never happened."""
        machine = self._machines[planned.action]
        arn = machine.replace(":stateMachine:", ":execution:", 1) + ":" + planned.name
        try:
            self._sfn.describe_execution(executionArn=arn)
            return "already-started"
        except ClientError as error:
            if _code(error) != "ExecutionDoesNotExist":
                raise
        try:
            self._sfn.start_execution(
                stateMachineArn=machine,
                name=planned.name,
                input=json.dumps(planned.execution_input),
            )
        except ClientError as error:
            if _code(error) == "ExecutionAlreadyExists":
                return "already-started"
            raise
        return "started"


class WakeUpSchedule:
    """The one one-time EventBridge Scheduler schedule that invokes the scheduler at the next
    transition. `at()` has no time zone of its own: it is written in UTC with
    ScheduleExpressionTimezone UTC (local times were resolved by the schedule model)."""

    EARLIEST = dt.timedelta(minutes=1)

    def __init__(self, scheduler: Any, *, name: str, role_arn: str, group: str = "default") -> None:
        self._scheduler, self.name, self.role_arn, self.group = scheduler, name, role_arn, group

    def set(self, at: dt.datetime | None, *, target_arn: str, now: dt.datetime) -> dt.datetime | None:
        """Create or move the schedule to `at` (never sooner than a minute from now); remove it
        when there is nothing to wake up for. Returns the instant it is set to."""
        if at is None:
            try:
                self._scheduler.delete_schedule(Name=self.name, GroupName=self.group)
            except ClientError as error:
                if _code(error) != "ResourceNotFoundException":
                    raise
            return None
        fire = max(at.astimezone(UTC), now.astimezone(UTC) + self.EARLIEST)
        fire = fire.replace(microsecond=0) + (dt.timedelta(seconds=1) if fire.microsecond else dt.timedelta(0))
        request = {
            "Name": self.name,
            "GroupName": self.group,
            "ScheduleExpression": f"at({fire.strftime('%Y-%m-%dT%H:%M:%S')})",
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Description": "mwaa-control: the next schedule transition of the fleet",
            "Target": {
                "Arn": target_arn,
                "RoleArn": self.role_arn,
                "Input": json.dumps({"source": "fleet-wake-up", "due": fire.isoformat()}),
                "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
            },
        }
        try:
            self._scheduler.update_schedule(**request)
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
            try:
                self._scheduler.create_schedule(**request)
            except ClientError as raced:  # another run created it meanwhile: move that one
                if _code(raced) != "ConflictException":
                    raise
                self._scheduler.update_schedule(**request)
        return fire
