"""The fleet scheduler: observe the fleet, decide (`fleet.reconcile`), start the executions, and
set the wake-up for the next transition. Settings, the service and its composition."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from mwaa_control import clock
from mwaa_control.schedules.config import ScheduleConfigError
from mwaa_control.schedules.fleet import Deferred, FleetDecision, FleetLimits, PlannedExecution, reconcile
from mwaa_control.schedules.fleet_adapters import ExecutionStarter, FleetObserver, S3FleetDocument, WakeUpSchedule
from mwaa_control.schedules.model import Override
from mwaa_control.schedules.overrides import OverrideStore


def _now() -> dt.datetime:
    return clock.now()  # the system clock deployed; the local cloud's clock in it


class FleetSchedulerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    region: str
    state_table_name: str = Field(min_length=3)
    metadata_bucket: str = Field(min_length=3, max_length=63)
    fleet_document_key: str = Field(min_length=1, max_length=1024)
    pause_state_machine_arn: str = Field(pattern=r"^arn:[a-z-]+:states:")
    resume_state_machine_arn: str = Field(pattern=r"^arn:[a-z-]+:states:")
    wake_up_schedule_name: str = Field(pattern=r"^[0-9a-zA-Z-_.]{1,64}$")
    wake_up_role_arn: str = Field(pattern=r"^arn:[a-z-]+:iam::\d{12}:role/")
    limits: FleetLimits

    @classmethod
    def from_env(cls) -> Self:
        env = os.environ
        return cls(
            region=env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"],
            state_table_name=env["LOCK_TABLE_NAME"],
            metadata_bucket=env["METADATA_BUCKET"],
            fleet_document_key=env["FLEET_DOCUMENT_KEY"],
            pause_state_machine_arn=env["PAUSE_STATE_MACHINE_ARN"],
            resume_state_machine_arn=env["RESUME_STATE_MACHINE_ARN"],
            wake_up_schedule_name=env["FLEET_WAKE_UP_SCHEDULE"],
            wake_up_role_arn=env["FLEET_WAKE_UP_ROLE_ARN"],
            limits=FleetLimits(
                max_concurrent_operations=int(env.get("MAX_CONCURRENT_OPERATIONS", "5")),
                environment_quota=int(env.get("ENVIRONMENT_QUOTA", "10")),
            ),
        )


class FleetRun(BaseModel):
    """What one run decided and did (the handler's result)."""

    document_version: str | None = None
    decision: FleetDecision
    started: list[str] = Field(default_factory=list)
    already_started: list[str] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict)
    """Environment -> why reading or starting failed (the others were done)."""
    wake_up: dt.datetime | None = None

    @property
    def deferred(self) -> tuple[Deferred, ...]:
        return self.decision.deferred


class FleetScheduler:
    def __init__(
        self,
        *,
        document: S3FleetDocument,
        observer: FleetObserver,
        overrides: OverrideStore,
        starter: ExecutionStarter,
        wake_up: WakeUpSchedule,
        limits: FleetLimits,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self._document, self._observer, self._overrides = document, observer, overrides
        self._starter, self._wake_up, self._limits, self._clock = starter, wake_up, limits, clock

    def run(self, *, target_arn: str) -> FleetRun:
        """`target_arn`: the function the wake-up schedule invokes (this one)."""
        now = self._clock()
        document, version = self._document.load()
        listed = () if isinstance(document, ScheduleConfigError) else tuple(document.environments)
        observation = self._observer.observe(listed)
        failures = dict(observation.failures)
        overrides: dict[str, tuple[Override, ...]] = {}
        for environment in observation.environments:
            try:
                overrides[environment.name] = self._overrides.overrides(environment.name)
            except Exception as error:  # without its overrides an environment is left alone
                failures[environment.name] = f"overrides: {type(error).__name__}: {str(error)[:300]}"
        # Left alone, but still counted against the quota when MWAA lists it.
        observed = [e.model_copy(update={"tags": None}) if e.name in failures else e for e in observation.environments]
        decision = reconcile(document, observed, overrides, now, self._limits)
        run = FleetRun(document_version=version, decision=decision, failures=failures)
        for planned in decision.start:
            self._start(planned, run)
        run.wake_up = self._wake_up.set(decision.next_wake_up, target_arn=target_arn, now=now)
        return run

    def _start(self, planned: PlannedExecution, run: FleetRun) -> None:
        try:
            outcome = self._starter.start(planned)
        except Exception as error:  # one environment's failure never stops the others
            run.failures[planned.environment] = f"start {planned.name}: {type(error).__name__}: {str(error)[:300]}"
            return
        (run.started if outcome == "started" else run.already_started).append(planned.name)


def fleet_scheduler(settings: FleetSchedulerSettings) -> FleetScheduler:
    from mwaa_control.adapters.clients import client  # noqa: PLC0415 - boto3 only when composed

    region = settings.region
    dynamodb: Any = client("dynamodb", region=region)
    s3: Any = client("s3", region=region)
    sfn: Any = client("stepfunctions", region=region)
    return FleetScheduler(
        document=S3FleetDocument(s3, settings.metadata_bucket, settings.fleet_document_key),
        observer=FleetObserver(
            mwaa=client("mwaa", region=region),
            dynamodb=dynamodb,
            s3=s3,
            sfn=sfn,
            table=settings.state_table_name,
            bucket=settings.metadata_bucket,
        ),
        overrides=OverrideStore(dynamodb, settings.state_table_name),
        starter=ExecutionStarter(
            sfn,
            pause_state_machine=settings.pause_state_machine_arn,
            resume_state_machine=settings.resume_state_machine_arn,
        ),
        wake_up=WakeUpSchedule(
            client("scheduler", region=region), name=settings.wake_up_schedule_name, role_arn=settings.wake_up_role_arn
        ),
        limits=settings.limits,
    )
