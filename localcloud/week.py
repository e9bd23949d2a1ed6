"""A simulated week of a small fleet on the local cloud's clock (`make demo`, second part).

Three environments in three time zones follow the fleet document's office-hours schedules: the
fleet scheduler (its periodic run and its one-time wake-ups, fired by the local EventBridge
Scheduler) pauses them every evening and resumes them every morning, a holiday keeps one paused,
and an on-call override keeps one awake for a night. After every resume the environment's Airflow
database is read again and compared with what it held before the first pause.

The clock: MWAA's waits (deleting, creating) pass at 1 simulated minute per step; while a workflow
does real work (a Lambda step, a DAG run inside Airflow) the clock follows real time, so the
durations the state table records (creation times that ready-by learns from, paused intervals that
savings are computed from) are not inflated by the speed-up."""

from __future__ import annotations

import json
import time as monotonic
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from localcloud.cloud import LocalCloud
from localcloud.lifecycle import failures, metadata_fingerprint, missing_after, opted_in_request

WEEK_START = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
"""Sunday noon UTC, the week before the new year: Christmas Day (Friday) is the holiday."""
WEEK = timedelta(days=7)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
# The seeded databases keep a deferred task "running" that no worker finishes: scheduled pauses
# wait 10 s for it and record it as in flight (the default would abandon the pause after 30 min).
DRAIN = {"timeout": 10, "poll": 2, "on_timeout": "proceed"}
ZONES = {
    "berlin-etl": ("berlin-office", "Europe/Berlin"),
    "newyork-reporting": ("newyork-office", "America/New_York"),
    "sydney-ml": ("sydney-office", "Australia/Sydney"),
}
FLEET = {
    "version": 1,
    "schedules": {
        "berlin-office": {
            "timezone": "Europe/Berlin",
            "periods": [{"days": WEEKDAYS, "start": "08:00", "stop": "18:00"}],
            "ready_by": {},  # resume early enough to be AVAILABLE at 08:00
            "drain": DRAIN,
        },
        "newyork-office": {
            "timezone": "America/New_York",
            "periods": [{"days": WEEKDAYS, "start": "08:00", "stop": "18:00"}],
            "calendar": "us-holidays",
            "drain": DRAIN,
        },
        "sydney-office": {
            "timezone": "Australia/Sydney",
            "periods": [{"days": WEEKDAYS, "start": "07:00", "stop": "19:00"}],
            "drain": DRAIN,
        },
    },
    "calendars": {"us-holidays": {"holidays": [{"date": "2026-12-25", "name": "Christmas Day"}]}},
    "environments": {name: schedule for name, (schedule, _) in ZONES.items()},
}
# On Tuesday at 17:30 in Berlin the on-call keeps berlin-etl awake for a backfill until 09:00 the
# next morning: no pause that night, no resume the next morning.
OVERRIDE_AT = datetime(2026, 12, 22, 17, 30, tzinfo=ZoneInfo("Europe/Berlin"))
OVERRIDE_UNTIL = datetime(2026, 12, 23, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
MACHINES = ("PauseStateMachine", "ResumeStateMachine")
READY_BY = time(8, 0)
EXPECTED = {"berlin-etl": (5, 4), "newyork-reporting": (5, 4), "sydney-ml": (6, 5)}
"""(pauses, resumes) the schedules call for: each starts running on Sunday and is paused at once;
berlin-etl skips Tuesday night's pause and Wednesday morning's resume (the override);
newyork-reporting stays paused on Christmas Day; sydney-ml's Monday begins on Sunday in UTC."""


@dataclass
class Run:
    """One pause or resume execution the fleet scheduler started, as the driver saw it."""

    environment: str
    action: str
    name: str
    started: datetime
    finished: datetime | None = None
    status: str = "RUNNING"
    why: list[str] = field(default_factory=list)
    missing: dict[str, int] | None = None
    """After a resume: per section, the rows of before the first pause that are not back."""


@dataclass
class WeekOutcome:
    runs: list[Run] = field(default_factory=list)
    hours_paused: dict[str, Decimal] = field(default_factory=dict)
    saved_usd: dict[str, Decimal] = field(default_factory=dict)
    compared: dict[str, dict[str, int]] = field(default_factory=dict)
    fleet_invocations: int = 0
    paused_at_end: dict[str, bool] = field(default_factory=dict)
    ready_on_time: dict[str, list[bool]] = field(default_factory=dict)
    """Per environment with ready-by: whether each resume was restored before its period began."""

    def of(self, environment: str, action: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.environment == environment and (action is None or r.action == action)]


def local_time(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%a %d %H:%M %Z")


class Driver:
    """Moves the local clock while the fleet's workflows run, and reports what they do."""

    def __init__(self, cloud: LocalCloud, on_finished: Callable[[Run], None], note: Callable[[str], None]) -> None:
        self.cloud = cloud
        self.sfn = cloud.client("stepfunctions")
        self.dynamodb = cloud.client("dynamodb")
        self.table = cloud.physical["LockTable"]
        self.on_finished = on_finished
        self.note = note
        self.runs: dict[str, Run] = {}

    def _poll(self) -> list[Run]:
        """Records executions that started or finished since the last poll; returns the running ones."""
        running = []
        for machine in MACHINES:
            for listed in self.sfn.list_executions(stateMachineArn=self.cloud.physical[machine])["executions"]:
                arn = listed["executionArn"]
                run = self.runs.get(arn)
                if run is None:
                    described = self.sfn.describe_execution(executionArn=arn)
                    environment = json.loads(described["input"])["environment"]
                    action = "pause" if machine == "PauseStateMachine" else "resume"
                    run = self.runs[arn] = Run(environment, action, listed["name"], listed["startDate"])
                    zone = ZONES.get(environment, ("", "UTC"))[1]
                    self.note(f"{environment}: {action} started ({local_time(run.started, zone)})")
                if run.finished is None and listed["status"] != "RUNNING":
                    run.finished, run.status = self.cloud.clock.now(), listed["status"]
                    if run.status != "SUCCEEDED":
                        run.why = failures(self.cloud, arn)
                    self.on_finished(run)
                elif run.finished is None:
                    running.append(run)
        return running

    def _waiting_on_mwaa(self, running: list[Run]) -> bool:
        """Every running workflow waits for an MWAA status (a parked task token)."""
        return all(
            "Item" in self.dynamodb.get_item(TableName=self.table, Key={"pk": {"S": f"wait#{run.environment}"}})
            for run in running
        )

    def run_until(self, end: datetime, at: dict[datetime, Callable[[], None]] | None = None) -> None:
        pending = dict(sorted((at or {}).items()))
        while self.cloud.clock.now() < end:
            for when in [w for w in pending if w <= self.cloud.clock.now()]:
                pending.pop(when)()
            running = self._poll()
            if not running:
                self.cloud.run_for(min(timedelta(minutes=5), end - self.cloud.clock.now()))
            elif self._waiting_on_mwaa(running):
                self.cloud.clock.advance(timedelta(minutes=1))
                monotonic.sleep(0.05)
            else:
                began = monotonic.monotonic()
                monotonic.sleep(0.25)
                self.cloud.clock.advance(timedelta(seconds=monotonic.monotonic() - began))
        self._poll()


def simulated_week(cloud: LocalCloud, vpc: Any, note: Callable[[str], None], duration: timedelta = WEEK) -> WeekOutcome:
    """Runs the week (or `duration` of it) on `cloud`, a LocalCloud with fire_template_schedules=True
    whose clock starts an hour before WEEK_START, and returns what happened."""
    from mwaa_control.pause.state import PauseStateTable  # noqa: PLC0415 - the demo's imports stay light
    from mwaa_control.schedules.model import Override, OverrideKind  # noqa: PLC0415
    from mwaa_control.schedules.overrides import OverrideStore  # noqa: PLC0415
    from mwaa_control.schedules.pricing import savings, size_from_request  # noqa: PLC0415

    outcome = WeekOutcome()
    mwaa = cloud.client("mwaa")
    request = opted_in_request(cloud, vpc, "fleet-dags")
    for name, (_, zone) in ZONES.items():
        note(f"owner creates {name!r} ({zone}), opted in to pause/resume")
        mwaa.create_environment(Name=name, **request, EndpointManagement="SERVICE", WebserverAccessMode="PUBLIC_ONLY")
    cloud.run_for(timedelta(minutes=40))
    before: dict[str, dict[str, Any]] = {}
    for name in ZONES:
        backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
        backend.ensure_ready()
        backend.seed_metadata()
        backend.parse_dags()
        before[name] = metadata_fingerprint(backend)
        outcome.compared[name] = {k: len(v) for k, v in before[name].items()}
    bucket = cloud.physical["MetadataBackupBucket"]
    cloud.client("s3").put_object(Bucket=bucket, Key="fleet/schedules.json", Body=json.dumps(FLEET).encode())
    note("the platform team deploys the fleet document: three office-hours schedules, a US holiday calendar")

    def finished(run: Run) -> None:
        zone, when = ZONES[run.environment][1], run.finished or WEEK_START
        if run.status != "SUCCEEDED":
            note(f"[red]{run.environment}: {run.action} {run.status}: {'; '.join(run.why)[:400]}[/red]")
        elif run.action == "resume":
            backend = cloud.emulator.airflow(cloud.account, cloud.region, run.environment)
            run.missing = missing_after(before[run.environment], metadata_fingerprint(backend))
            back = "all metadata back" if not any(run.missing.values()) else f"[red]missing {run.missing}[/red]"
            note(f"{run.environment}: AVAILABLE and restored at {local_time(when, zone)}; {back}")
        else:
            note(f"{run.environment}: paused (deleted after a verified backup) at {local_time(when, zone)}")

    def keep_awake() -> None:
        store = OverrideStore(cloud.client("dynamodb"), cloud.physical["LockTable"])
        store.add(
            Override(
                environment="berlin-etl",
                kind=OverrideKind.KEEP_AWAKE,
                created_at=cloud.clock.now(),
                until=OVERRIDE_UNTIL,
                reason="backfill tonight",
            )
        )
        note(f"on-call: keep berlin-etl awake until {local_time(OVERRIDE_UNTIL, 'Europe/Berlin')} (backfill)")

    invocations = len(cloud.lambdas.invocations)
    driver = Driver(cloud, finished, note)
    driver.run_until(WEEK_START + duration, at={OVERRIDE_AT.astimezone(UTC): keep_awake})
    outcome.runs = sorted(driver.runs.values(), key=lambda r: r.started)
    outcome.fleet_invocations = sum(
        1 for i in cloud.lambdas.invocations[invocations:] if i.function == "FleetSchedulerFunction"
    )
    records = PauseStateTable(cloud.client("dynamodb"), cloud.physical["LockTable"], execution_running=lambda _: True)
    for name in ZONES:
        record = records.record(name)
        intervals = [] if record is None else [(i.paused_at, i.resumed_at) for i in record.paused_intervals]
        saved = savings(intervals, WEEK_START, WEEK_START + duration, size_from_request(request), cloud.region)
        outcome.hours_paused[name], outcome.saved_usd[name] = saved.hours_paused, saved.saved
        outcome.paused_at_end[name] = name not in mwaa.list_environments()["Environments"]
    outcome.ready_on_time["berlin-etl"] = [
        r.finished is not None and r.finished.astimezone(ZoneInfo("Europe/Berlin")).time() <= READY_BY
        for r in outcome.of("berlin-etl", "resume")
    ]
    return outcome


def week_table(outcome: WeekOutcome) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="The simulated week (20-27 December 2026), per environment")
    for column in (
        "environment",
        "time zone",
        "pauses",
        "resumes",
        "metadata back",
        "hours paused",
        "saved (list price)",
    ):
        table.add_column(column)
    for name, (_, zone) in ZONES.items():
        pauses, resumes = outcome.of(name, "pause"), outcome.of(name, "resume")
        ok = sum(1 for r in resumes if r.missing is not None and not any(r.missing.values()))
        table.add_row(
            name,
            zone,
            f"{sum(r.status == 'SUCCEEDED' for r in pauses)}/{len(pauses)}",
            f"{sum(r.status == 'SUCCEEDED' for r in resumes)}/{len(resumes)}",
            f"{ok}/{len(resumes)}",
            f"{outcome.hours_paused[name]:.2f} of 168",
            f"${outcome.saved_usd[name]}",
        )
    return table
