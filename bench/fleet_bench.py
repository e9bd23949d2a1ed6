"""A fleet paused and resumed by its schedules (issue 12): 50 environments, each with its own real
Airflow 2.11, follow three office-hours schedules in three time zones; the fleet scheduler (its
one-time wake-ups and its periodic run, fired by the local EventBridge Scheduler on the local clock)
pauses all of them in the evening and resumes all of them in the morning, while the MWAA emulator
refuses every third MWAA API call with ThrottlingException (HTTP 429).

    uv run --locked python -m bench.fleet_bench [--environments N] [--max-concurrent C]

Checks (exit status 1 if any fails): every pause and resume execution SUCCEEDED; each environment
had exactly one pause and one resume execution, was deleted once and created once more (none paused
twice); every environment is AVAILABLE at the end, a new Airflow generation with its own Fernet key,
its DAG runs, task instances, variable, connection (password decrypted with the new key) and pools
back; the export and import DAGs ran inside its Airflow; throttled calls were really refused; the
fleet scheduler never failed. Cycles over issue 11's budget (40 transitions, 12 invocations) are
printed, not failed: a step whose MWAA calls stay throttled through botocore's six attempts fails and
its Retry runs it again, which costs an invocation (bench/lifecycle_bench.py holds the budget).

Prints, per environment cycle, the state transitions and Lambda invocations (mean and max, and what
they are made of), the fleet scheduler's invocations and deferrals, the throttled calls, and each
fan-out's time on the local clock (first pause started -> last pause finished; the same for the
resumes) with the real time it took here.

The local clock. Time passes only while every running workflow waits for an MWAA status (a task
token parked until DELETED or AVAILABLE), one minute per step; while any workflow does real work (a
Lambda step, a DAG run in Airflow) the clock stands still. So a fan-out's local-clock time is what
MWAA's lifecycles and the scheduler's cadence make it, not how fast this machine runs 50 Airflows
(on MWAA each environment's Airflow has machines of its own); the real time is printed beside it.

The stack is deployed for the fleet: EnvironmentQuota and the emulator's per-region quota are the
fleet's size (an MWAA quota raise), MaxConcurrentOperations too unless --max-concurrent says less
(the template's default of 5 would run ten waves of five)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from localcloud import LocalCloud, ManualClock
from localcloud.lifecycle import (
    BUDGET_INVOCATIONS,
    BUDGET_TRANSITIONS,
    ENDPOINT_AUTOMATION,
    Cost,
    _environment_of,
    _step_of,
    cost_of,
    failures,
    history,
    metadata_fingerprint,
    missing_after,
    upload_environment_files,
)
from localcloud.network import build_shared_vpc
from mwaa_control.observability import logger
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE

AIRFLOW_VERSION = "2.11.0"
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
# Three offices in three time zones (two UTC offsets, one zone without daylight saving time) whose
# working days end at 18:00 UTC and begin at 08:00 UTC in November: one 50-wide fan-out each way.
SCHEDULES = {
    "office-berlin": ("Europe/Berlin", "09:00", "19:00"),
    "office-london": ("Europe/London", "08:00", "18:00"),
    "office-lagos": ("Africa/Lagos", "09:00", "19:00"),
}
# Tuesday 24 November 2026. The periodic fleet run fires every 15 minutes from the stack's creation
# (16:37, ..., 17:52, 18:07): the evening's pauses and the morning's resumes are started by the
# one-time wake-up at their transition, the periodic run repairs what it missed.
SETUP_START = datetime(2026, 11, 24, 16, 37, tzinfo=UTC)
RUN_START = datetime(2026, 11, 24, 17, 50, tzinfo=UTC)
PAUSE_DUE = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
# Ready-by: the schedules resume early enough to be AVAILABLE when the office opens (08:00 UTC); with
# no recorded creation yet the lead is the default 40 minutes.
RESUME_DUE = datetime(2026, 11, 25, 7, 20, tzinfo=UTC)
OPENS = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
RUN_DEADLINE = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
STEP = timedelta(minutes=1)
MACHINES = {"PauseStateMachine": "pause", "ResumeStateMachine": "resume"}
USER_DAG = "team_report"
USER_DAG_SOURCE = f'''
from datetime import datetime

from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("{USER_DAG}", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    EmptyOperator(task_id="publish")
'''


def schedule_of(index: int) -> str:
    return list(SCHEDULES)[index % len(SCHEDULES)]


def environment_names(count: int) -> dict[str, str]:
    """Environment -> its schedule: berlin-etl-00, london-etl-01, lagos-etl-02, berlin-etl-03, ..."""
    return {f"{schedule_of(i).removeprefix('office-')}-etl-{i:02d}": schedule_of(i) for i in range(count)}


def fleet_document(environments: dict[str, str]) -> dict[str, Any]:
    return {
        "version": 1,
        "schedules": {
            name: {
                "timezone": zone,
                "periods": [{"days": WEEKDAYS, "start": start, "stop": stop}],
                "ready_by": {},
            }
            for name, (zone, start, stop) in SCHEDULES.items()
        },
        "environments": environments,
    }


# --- the metadata each environment holds before its pause -------------------------------------------
def seed_metadata(backend: Any, environment: str) -> None:
    """Two finished runs of the team's DAG with their task instances, a variable and a connection
    (both encrypted under the environment's own Fernet key), written to its Airflow 2 database."""
    import sqlalchemy as sa  # noqa: PLC0415 - only the bench needs it
    from cryptography.fernet import Fernet  # noqa: PLC0415

    fernet = Fernet(backend.fernet_key.encode())
    engine = sa.create_engine(backend.host_database_url())
    try:
        with engine.begin() as db:
            template = db.execute(sa.text("SELECT max(id) FROM log_template")).scalar()
            for day in (22, 23):
                logical = datetime(2026, 11, day, 6, 0)
                run_id = f"manual__{logical.isoformat()}+00:00"
                stamps = {
                    "queued": f"{logical:%Y-%m-%d} 06:00:01.000000",
                    "start": f"{logical:%Y-%m-%d} 06:00:02.000000",
                    "end": f"{logical:%Y-%m-%d} 06:00:09.500000",
                    "logical": f"{logical:%Y-%m-%d} 06:00:00.000000",
                }
                db.execute(
                    sa.text(
                        "INSERT INTO dag_run (dag_id, queued_at, execution_date, start_date, end_date, state, run_id, "
                        "external_trigger, run_type, data_interval_start, data_interval_end, log_template_id, "
                        "updated_at, clear_number) VALUES (:dag, :queued, :logical, :start, :end, 'success', :run, "
                        "1, 'manual', :logical, :logical, :template, :end, 0)"
                    ),
                    {"dag": USER_DAG, "run": run_id, "template": template, **stamps},
                )
                db.execute(
                    sa.text(
                        "INSERT INTO task_instance (task_id, dag_id, run_id, map_index, start_date, end_date, "
                        "duration, state, try_number, max_tries, hostname, unixname, pool, pool_slots, queue, "
                        "priority_weight, operator, updated_at, task_display_name) VALUES ('publish', :dag, :run, "
                        "-1, :start, :end, 7.5, 'success', 1, 0, 'worker-1', 'airflow', 'default_pool', 1, "
                        "'default', 1, 'EmptyOperator', :end, 'publish')"
                    ),
                    {"dag": USER_DAG, "run": run_id, **stamps},
                )
            db.execute(
                sa.text("INSERT INTO variable (key, val, description, is_encrypted) VALUES (:key, :val, :what, 1)"),
                {
                    "key": "report_bucket",
                    "val": fernet.encrypt(f"s3://reports/{environment}".encode()).decode(),
                    "what": "where the team's report goes",
                },
            )
            db.execute(
                sa.text(
                    "INSERT INTO connection (conn_id, conn_type, host, schema, login, password, port, "
                    "is_encrypted, is_extra_encrypted) VALUES ('warehouse', 'postgres', 'warehouse.internal', "
                    "'reports', 'reporter', :password, 5432, 1, 0)"
                ),
                {"password": fernet.encrypt(f"pw-{environment}".encode()).decode()},
            )
    finally:
        engine.dispose()


# --- driving the local clock ------------------------------------------------------------------------
@dataclass
class Run:
    """One pause or resume execution, as the driver saw it."""

    environment: str
    action: str
    arn: str
    name: str
    started: datetime
    """The execution's start (moto stamps it with the local clock)."""
    started_real: float
    finished: datetime | None = None
    """The local clock's time when the driver saw it end (the clock stands still while work runs)."""
    finished_real: float | None = None
    status: str = "RUNNING"


class MemorySampler:
    """Peak resident memory of this process and every process it started (Airflow's included)."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._last = 0.0

    def sample(self, every: float = 2.0) -> None:
        if time.monotonic() - self._last < every:
            return
        self._last = time.monotonic()
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            parents[int(entry.name)] = int(fields.get("PPid", "0").strip() or 0)
            rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        mine, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            parent = frontier.pop()
            for pid, ppid in parents.items():
                if ppid == parent and pid not in mine:
                    mine.add(pid)
                    frontier.append(pid)
        self.peak_bytes = max(self.peak_bytes, sum(rss.get(pid, 0) for pid in mine))


class _TimedSubprocess:
    """localcloud.airflow.backend's view of `subprocess`: its `run` timed (inside the process slot)."""

    def __init__(self, real: Any, profile: Profile) -> None:
        self._real, self._profile = real, profile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def run(self, argv: list[str], *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return self._real.run(argv, *args, **kwargs)
        finally:
            self._profile.add(_process_kind(argv), time.monotonic() - began)


def _process_kind(argv: list[str]) -> str:
    program, rest = Path(argv[0]).name, argv[1:]
    if program == "airflow":
        return "Airflow process: airflow " + " ".join(rest[:2])
    if rest and rest[0].endswith("runner.py") and len(rest) > 1:
        if rest[1] == "rest":
            return f"Airflow process: REST API call ({json.loads(rest[2]).get('method')})"
        return f"Airflow process: runner.py {rest[1]} (the DAG processor's pass)"
    return "Airflow process: " + " ".join(Path(a).name for a in argv[:2])


class Profile:
    """Where the real time goes: each one-shot Airflow process (timed once it has a slot), each
    request to a task runner (starting its process and executing the queued runs), each Lambda
    invocation (its waits included) and each clock step. Installed for the bench's run only."""

    def __init__(self) -> None:
        self._samples: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._restore: list[Callable[[], None]] = []

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(kind, []).append(seconds)

    def rows(self) -> list[tuple[str, int, float]]:
        """(kind, count, total seconds), the most time first."""
        with self._lock:
            rows = [(kind, len(values), sum(values)) for kind, values in self._samples.items()]
        return sorted(rows, key=lambda row: -row[2])

    def __enter__(self) -> Profile:
        from localcloud.airflow import backend as backend_module  # noqa: PLC0415 - patched for the run
        from localcloud.airflow.scheduler import DagRunScheduler  # noqa: PLC0415

        real_subprocess = getattr(backend_module, "subprocess")  # noqa: B009 - the module's own import
        setattr(backend_module, "subprocess", _TimedSubprocess(real_subprocess, self))  # noqa: B010
        self._restore.append(lambda: setattr(backend_module, "subprocess", real_subprocess))
        request = DagRunScheduler._request
        profile = self

        def timed_request(runner: DagRunScheduler, message: dict[str, Any]) -> dict[str, Any]:
            began = time.monotonic()
            try:
                return request(runner, message)
            finally:
                profile.add("task runner: start if needed, execute the queued runs", time.monotonic() - began)

        setattr(DagRunScheduler, "_request", timed_request)  # noqa: B010
        self._restore.append(lambda: setattr(DagRunScheduler, "_request", request))
        return self

    def __exit__(self, *exc: object) -> None:
        while self._restore:
            self._restore.pop()()


class FleetDriver:
    """Moves the local clock one minute at a time, and only while every running pause and resume
    waits for an MWAA status; records each execution's start and end on both clocks."""

    def __init__(self, cloud: LocalCloud, environments: Iterable[str], memory: MemorySampler, profile: Profile) -> None:
        self.cloud = cloud
        self.environments = list(environments)
        self.memory = memory
        self.profile = profile
        self.sfn = cloud.client("stepfunctions")
        self.dynamodb = cloud.client("dynamodb")
        self.table = cloud.physical["LockTable"]
        self.runs: dict[str, Run] = {}
        self.runners_stopped = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._last_release = 0.0
        invoke = cloud.lambdas.invoke

        def counted(function_name: str, event: Any) -> Any:
            with self._lock:
                self._in_flight += 1
            began = time.monotonic()
            try:
                return invoke(function_name, event)
            finally:
                with self._lock:
                    self._in_flight -= 1
                kind = f"Lambda: {cloud.lambdas.resolve(function_name)}{_step_of(event)}"
                profile.add(kind, time.monotonic() - began)

        # Every invocation (Step Functions tasks, event deliveries) goes through the instance's invoke.
        setattr(cloud.lambdas, "invoke", counted)  # noqa: B010 - an instance attribute over the method

    def all_started(self, action: str) -> bool:
        """Every environment has had an execution of `action` (ended, when nothing runs)."""
        started = {r.environment for r in self.runs.values() if r.action == action}
        return started >= set(self.environments)

    def advance(self) -> None:
        """One step of the clock: MWAA's lifecycles, status-change events, due schedules."""
        invocations = len(self.cloud.lambdas.invocations)
        began = time.monotonic()
        self.cloud.clock.advance(STEP)
        fleet = any(i.function == "FleetSchedulerFunction" for i in self.cloud.lambdas.invocations[invocations:])
        kind = "clock step with a fleet scheduler run" if fleet else "clock step (lifecycles, events, schedules)"
        self.profile.add(kind, time.monotonic() - began)

    def poll(self) -> list[Run]:
        """Records executions that started or ended since the last poll; returns the running ones."""
        running = []
        for machine, action in MACHINES.items():
            listed = self.sfn.list_executions(stateMachineArn=self.cloud.physical[machine])["executions"]
            for item in listed:
                arn = item["executionArn"]
                run = self.runs.get(arn)
                if run is None:
                    described = self.sfn.describe_execution(executionArn=arn)
                    environment = str(json.loads(described["input"]).get("environment"))
                    run = Run(environment, action, arn, item["name"], item["startDate"], time.monotonic())
                    self.runs[arn] = run
                if run.finished is None and item["status"] != "RUNNING":
                    run.finished, run.finished_real = self.cloud.clock.now(), time.monotonic()
                    run.status = item["status"]
                elif run.finished is None:
                    running.append(run)
        return running

    def _parked(self, run: Run) -> bool:
        """The execution's task token is parked until its environment reaches an MWAA status."""
        item = self.dynamodb.get_item(
            TableName=self.table, Key={"pk": {"S": f"wait#{run.environment}"}}, ConsistentRead=True
        ).get("Item")
        return item is not None and item.get("execution", {}).get("S") == run.arn

    def _waiting_on_mwaa(self, running: list[Run]) -> bool:
        with self._lock:
            if self._in_flight:
                return False
        return all(self._parked(run) for run in running)

    def release_idle_runners(self) -> None:
        """An environment's task runner stays up for its lifetime: stopped once idle (the export and
        import DAGs are the only runs here), so 50 idle Airflow processes do not pile up."""
        if time.monotonic() - self._last_release < 2.0:
            return
        self._last_release = time.monotonic()
        emulator = self.cloud.emulator
        for name in self.environments:
            env = emulator.environment(self.cloud.account, self.cloud.region, name)
            if env is None or env.status not in ("AVAILABLE", "DELETING", "UPDATING"):
                continue
            if emulator.airflow(self.cloud.account, self.cloud.region, name).stop_idle_runner():
                self.runners_stopped += 1

    def run_until(self, done: Callable[[], bool], deadline: datetime, stall_seconds: float) -> None:
        """Steps the clock until `done()` (checked when nothing runs), raising TimeoutError at the
        local deadline or when work goes on for `stall_seconds` of real time without a pause."""
        busy_since: float | None = None
        while True:
            running = self.poll()
            self.release_idle_runners()
            self.memory.sample()
            if not running and done():
                return
            if self.cloud.clock.now() >= deadline:
                raise TimeoutError(f"not done at {deadline:%Y-%m-%d %H:%M} UTC on the local clock")
            if not running or (self._waiting_on_mwaa(running) and self._still_waiting()):
                busy_since = None
                self.advance()
                continue
            busy_since = busy_since or time.monotonic()
            if time.monotonic() - busy_since > stall_seconds:
                working = sorted(f"{r.environment} {r.action}" for r in running if not self._parked(r))
                raise TimeoutError(f"workflows busy for {stall_seconds:.0f} s of real time: {working[:10]}")
            time.sleep(0.2)

    def _still_waiting(self) -> bool:
        """The same a moment later (an execution between two steps has no Lambda in flight)."""
        time.sleep(0.05)
        running = self.poll()
        return self._waiting_on_mwaa(running)


# --- the report ---------------------------------------------------------------------------------------
@dataclass
class FanOut:
    action: str
    runs: list[Run]

    @property
    def first_started(self) -> datetime:
        return min(r.started for r in self.runs)

    @property
    def last_finished(self) -> datetime:
        return max(r.finished or r.started for r in self.runs)

    @property
    def real_seconds(self) -> float:
        return max(r.finished_real or r.started_real for r in self.runs) - min(r.started_real for r in self.runs)


@dataclass
class Outcome:
    environments: dict[str, str]
    max_concurrent: int
    problems: list[str] = field(default_factory=list)
    costs: dict[str, Cost] = field(default_factory=dict)
    fan_outs: list[FanOut] = field(default_factory=list)
    fleet_runs: Counter[str] = field(default_factory=Counter)
    deferred: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    counted: Counter[str] = field(default_factory=Counter)
    airflow_calls: Counter[str] = field(default_factory=Counter)
    runners_stopped: int = 0
    peak_memory_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    compared: dict[str, int] = field(default_factory=dict)
    by_environment: dict[str, list[Any]] = field(default_factory=dict)
    """Environment -> the Lambda invocations of its pause and resume (and its status changes)."""
    profile: list[tuple[str, int, float]] = field(default_factory=list)
    retried: Counter[str] = field(default_factory=Counter)
    """State: error -> task failures in the pauses and resumes that their Retry ran again."""
    over_budget: list[str] = field(default_factory=list)
    """Cycles over issue 11's budget (reported, not failed: under throttling a retried step may be)."""
    failed_invocations: Counter[str] = field(default_factory=Counter)
    """Function (step): error -> invocations that raised (Step Functions or the event delivery retried)."""
    ready_by_opening: int = 0


def _mean_max(values: list[int]) -> str:
    return f"{statistics.mean(values):.1f} / {max(values)}" if values else "-"


def cost_table(outcome: Outcome) -> Table:
    costs = list(outcome.costs.values())
    count = len(costs)
    table = Table(
        title=f"Per environment cycle (pause + resume), {count} environments: mean / max "
        "(the endpoint automation's status-change handlers not counted)"
    )
    for column in ("", "mean / max per cycle", "budget", "made up of (per cycle: mean, max)"):
        table.add_column(column)

    def make_up(pick: Callable[[Cost], Counter[str]]) -> str:
        keys = sorted({key for cost in costs for key in pick(cost)})
        lines = []
        for key in keys:
            values = [pick(cost)[key] for cost in costs]
            lines.append(f"{key}: {statistics.mean(values):.2f}, {max(values)}")
        return "\n".join(lines)

    table.add_row(
        "state transitions",
        _mean_max([c.total_transitions for c in costs]),
        str(BUDGET_TRANSITIONS),
        make_up(lambda c: c.transitions),
    )
    table.add_row(
        "Lambda invocations",
        _mean_max([c.total_invocations for c in costs]),
        str(BUDGET_INVOCATIONS),
        make_up(lambda c: c.invocations),
    )
    table.add_row(
        "endpoint automation (not counted)",
        _mean_max([sum(c.endpoint_automation.values()) for c in costs]),
        "-",
        make_up(lambda c: c.endpoint_automation),
    )
    fleet = sum(outcome.fleet_runs.values())
    table.add_row(
        "fleet scheduler (the whole fleet's)",
        f"{fleet / max(count, 1):.2f} per cycle",
        "-",
        f"{fleet} invocations: "
        + ", ".join(f"{source} x{n}" for source, n in sorted(outcome.fleet_runs.items()))
        + (
            "\ndeferred: " + ", ".join(f"{reason} x{n}" for reason, n in sorted(outcome.deferred.items()))
            if outcome.deferred
            else ""
        ),
    )
    return table


def fan_out_table(outcome: Outcome) -> Table:
    table = Table(title="The fan-outs: first started -> last finished (local clock, UTC), and the real time here")
    for column in ("", "due", "first started", "last finished", "local clock", "real time", "per schedule (local)"):
        table.add_column(column)
    for fan_out in outcome.fan_outs:
        due = PAUSE_DUE if fan_out.action == "pause" else RESUME_DUE
        per_schedule = []
        for schedule, (zone, _, _) in SCHEDULES.items():
            runs = [r for r in fan_out.runs if outcome.environments.get(r.environment) == schedule]
            if runs:
                zoned = ZoneInfo(zone)
                first = min(r.started for r in runs).astimezone(zoned)
                last = max(r.finished or r.started for r in runs).astimezone(zoned)
                per_schedule.append(f"{schedule} ({zone}): {first:%H:%M} -> {last:%H:%M} {last:%Z}")
        table.add_row(
            f"{fan_out.action}s ({len(fan_out.runs)})",
            f"{due:%a %H:%M}",
            f"{fan_out.first_started.astimezone(UTC):%a %H:%M}",
            f"{fan_out.last_finished.astimezone(UTC):%a %H:%M}",
            _minutes(fan_out.last_finished - fan_out.first_started),
            f"{fan_out.real_seconds:.0f} s",
            "\n".join(per_schedule),
        )
    return table


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def report(console: Console, outcome: Outcome) -> None:
    console.print(cost_table(outcome))
    console.print(fan_out_table(outcome))
    refused, counted = sum(outcome.throttled.values()), sum(outcome.counted.values())
    console.print(
        f"MWAA throttling: {refused} of {counted} MWAA API calls refused with ThrottlingException (HTTP 429), "
        "one counter over all operations, every third call: "
        + ", ".join(f"{op} {outcome.throttled[op]}/{outcome.counted[op]}" for op in sorted(outcome.counted))
    )
    retried = sum(outcome.retried.values())
    console.print(
        f"Task failures Step Functions retried (Retry), in {len(outcome.costs)} cycles: {retried}"
        + (": " + ", ".join(f"{what} x{n}" for what, n in sorted(outcome.retried.items())) if retried else "")
    )
    if outcome.over_budget:
        console.print(f"[yellow]over issue 11's budget: {'; '.join(outcome.over_budget)}[/yellow]")
    failed = sum(outcome.failed_invocations.values())
    console.print(
        f"Lambda invocations that raised (each retried by its Step Functions Retry or by the event delivery): {failed}"
        + (": " + ", ".join(f"{what} x{n}" for what, n in sorted(outcome.failed_invocations.items())) if failed else "")
    )
    console.print(
        f"Resumed and restored before the offices opened ({OPENS:%H:%M} UTC): "
        f"{outcome.ready_by_opening} of {len(outcome.environments)}"
    )
    console.print(
        "Airflow inside the environments: "
        + ", ".join(f"{name} x{n}" for name, n in sorted(outcome.airflow_calls.items()))
        + f"; idle task runners stopped: {outcome.runners_stopped}"
    )
    compared = ", ".join(f"{section} {n}" for section, n in outcome.compared.items())
    console.print(f"Metadata compared per environment after its resume (rows): {compared}")
    console.print(
        "Real time: "
        + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in outcome.seconds.items())
        + f"; peak memory of this process and its children: {outcome.peak_memory_bytes / 2**30:.1f} GiB"
    )
    console.print(profile_table(outcome))


def profile_table(outcome: Outcome) -> Table:
    table = Table(
        title="Where the real time went (setup included; Airflow processes timed once they have one of "
        "the backend's process slots; a Lambda's time includes what it waits for)"
    )
    for column in ("", "count", "total s", "mean s"):
        table.add_column(column)
    for kind, count, total in outcome.profile[:24]:
        table.add_row(kind, str(count), f"{total:.0f}", f"{total / count:.2f}")
    return table


# --- the run ------------------------------------------------------------------------------------------
def create_fleet(cloud: LocalCloud, environments: dict[str, str]) -> None:
    """The environments, opted in, on the Airflow release the fleet runs, AVAILABLE 30 minutes later."""
    vpc = build_shared_vpc(cloud.client("ec2"))
    bucket = "fleet-dags"
    cloud.client("s3").create_bucket(Bucket=bucket)
    version = upload_environment_files(cloud, bucket, extra_dags={USER_DAG: USER_DAG_SOURCE})
    mwaa = cloud.client("mwaa")
    for name in environments:
        mwaa.create_environment(
            Name=name,
            ExecutionRoleArn=f"arn:aws:iam::{cloud.account}:role/mwaa-execution",
            SourceBucketArn=f"arn:aws:s3:::{bucket}",
            DagS3Path="dags",
            PluginsS3Path="plugins.zip",
            PluginsS3ObjectVersion=version,
            AirflowVersion=AIRFLOW_VERSION,
            EndpointManagement="SERVICE",
            WebserverAccessMode="PUBLIC_ONLY",
            Tags={OPT_IN_TAG: OPT_IN_VALUE, "team": name.split("-", 1)[0]},
            NetworkConfiguration={"SubnetIds": vpc.subnet_ids, "SecurityGroupIds": [vpc.security_group_id]},
        )
    cloud.run_for(timedelta(minutes=30))


def prepare_airflow(cloud: LocalCloud, environments: Iterable[str]) -> dict[str, tuple[dict[str, Any], str]]:
    """Each environment's Airflow made ready (database, plugins, DAG folder, one parsing pass) and
    seeded; returns its metadata fingerprint and its Fernet key."""

    def prepare(name: str) -> tuple[dict[str, Any], str]:
        backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
        backend.ensure_ready()
        seed_metadata(backend, name)
        return metadata_fingerprint(backend), backend.fernet_key

    names = list(environments)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(prepare, names), strict=True))


def run_fleet(count: int, max_concurrent: int | None, stall_seconds: float, note: Callable[[str], None]) -> Outcome:
    began = time.monotonic()
    environments = environment_names(count)
    limit = max(1, min(max_concurrent or count, 100))
    outcome = Outcome(environments=environments, max_concurrent=limit)
    memory = MemorySampler()
    parameters = {"EnvironmentQuota": str(max(10, count)), "MaxConcurrentOperations": str(limit)}
    with (
        LocalCloud(
            parameters=parameters,
            clock=ManualClock(SETUP_START),
            fire_template_schedules=True,
            environment_overrides={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"},
        ) as cloud,
        Profile() as profile,
    ):
        logger.setLevel("ERROR")
        cloud.emulator.quota_per_region = max(10, count)
        create_fleet(cloud, environments)
        prepared = prepare_airflow(cloud, environments)
        note(f"{count} environments AVAILABLE, each with its own Airflow: database made, DAGs parsed, runs seeded")
        before = {name: fingerprint for name, (fingerprint, _) in prepared.items()}
        old_keys = {name: key for name, (_, key) in prepared.items()}
        outcome.compared = {section: len(rows) for section, rows in next(iter(before.values())).items()}
        outcome.seconds["setup"] = time.monotonic() - began

        cloud.run_for(RUN_START - cloud.clock.now())
        cloud.client("s3").put_object(
            Bucket=cloud.physical["MetadataBackupBucket"],
            Key=cloud.parameters.get("FleetDocumentKey", "fleet/schedules.json"),
            Body=json.dumps(fleet_document(environments)).encode(),
        )
        throttling = cloud.emulator.inject_throttling(every=3)
        note(f"{RUN_START:%a %H:%M} UTC: the fleet document is deployed; MWAA refuses every third API call")
        invocations_from, calls_from = len(cloud.lambdas.invocations), len(cloud.emulator.calls)
        driver = FleetDriver(cloud, environments, memory, profile)
        try:
            for action, phase in (("pause", "pauses"), ("resume", "night and resumes")):
                phase_began = time.monotonic()
                driver.run_until(partial(driver.all_started, action), RUN_DEADLINE, stall_seconds)
                outcome.seconds[phase] = time.monotonic() - phase_began
                note(f"{cloud.clock.now():%a %H:%M} UTC: every {action} ended")
        except TimeoutError as error:
            outcome.problems.append(str(error))
        cloud.emulator.stop_throttling()
        outcome.throttled, outcome.counted = throttling.throttled, throttling.counted
        outcome.runners_stopped = driver.runners_stopped
        tally(cloud, driver, outcome, invocations_from, calls_from)
        for name in environments:
            check_environment(cloud, driver, outcome, name, before[name], old_keys[name])
        if len(set(old_keys.values())) != len(old_keys):
            outcome.problems.append("two environments share a Fernet key")
        memory.sample(every=0)
        outcome.peak_memory_bytes = memory.peak_bytes
        outcome.profile = profile.rows()
    outcome.seconds["total"] = time.monotonic() - began
    return outcome


def tally(cloud: LocalCloud, driver: FleetDriver, outcome: Outcome, invocations_from: int, calls_from: int) -> None:
    """The fan-outs, the fleet scheduler's runs and deferrals, failed firings and lost events, the
    Airflow calls; each environment's share of the Lambda invocations goes to outcome.by_environment."""
    problems = outcome.problems
    for action in ("pause", "resume"):
        mine = [r for r in driver.runs.values() if r.action == action]
        if mine:
            outcome.fan_outs.append(FanOut(action, mine))
    for invocation in cloud.lambdas.invocations[invocations_from:]:
        if invocation.function == "FleetSchedulerFunction":
            source = invocation.event.get("source", "?") if isinstance(invocation.event, dict) else "?"
            outcome.fleet_runs[str(source)] += 1
            if invocation.error is not None:
                problems.append(f"the fleet scheduler failed ({source}): {invocation.error}")
            elif isinstance(invocation.result, dict):
                for deferred in invocation.result.get("decision", {}).get("deferred", []):
                    outcome.deferred[str(deferred.get("reason"))] += 1
            continue
        environment = _environment_of(invocation.event)
        if environment is not None:
            outcome.by_environment.setdefault(environment, []).append(invocation)
    for firing in cloud.scheduler.failures():
        problems.append(f"schedule {firing.schedule} at {firing.scheduled_for:%H:%M} failed: {firing.error}")
    if cloud.events.dead_letters:
        problems.append(f"{len(cloud.events.dead_letters)} status-change events dead-lettered")
    for operation, _ in cloud.emulator.calls[calls_from:]:
        if operation in ("InvokeRestApi", "CreateCliToken", "WebCli"):
            outcome.airflow_calls[operation] += 1
    if not sum(outcome.throttled.values()):
        problems.append("no MWAA call was throttled")


def retried_failures(cloud: LocalCloud, execution: str) -> list[str]:
    """The task failures of a successful execution (each was retried: a Catch would have ended it)
    and its timed-out waits (moto times TimeoutSeconds in real seconds; the Catch checks the status
    once and waits again): `state: error`, "(throttled)" when the cause is MWAA's throttling that
    outlasted botocore's own attempts."""
    found, state = [], "?"
    for event in history(cloud, execution):
        if "stateEnteredEventDetails" in event:
            state = event["stateEnteredEventDetails"]["name"]
        for key in ("taskFailedEventDetails", "lambdaFunctionFailedEventDetails", "taskTimedOutEventDetails"):
            if key in event:
                details = event[key]
                throttled = " (throttled)" if "Throttl" in str(details.get("cause")) else ""
                found.append(f"{state}: {details.get('error')}{throttled}")
    return found


def check_environment(
    cloud: LocalCloud, driver: FleetDriver, outcome: Outcome, name: str, before: dict[str, Any], old_key: str
) -> None:
    """One pause and one resume, both SUCCEEDED, one deletion and one creation, within the budget;
    AVAILABLE with a new Fernet key, its metadata back, the import DAG run in its Airflow."""
    problems = outcome.problems
    pauses = [r for r in driver.runs.values() if r.environment == name and r.action == "pause"]
    resumes = [r for r in driver.runs.values() if r.environment == name and r.action == "resume"]
    if len(pauses) != 1 or len(resumes) != 1:
        problems.append(f"{name}: {len(pauses)} pause and {len(resumes)} resume executions (expected 1 each)")
    for run in pauses + resumes:
        if run.status != "SUCCEEDED":
            problems.append(f"{name}: {run.action} {run.status}: {'; '.join(failures(cloud, run.arn))[:600]}")
        due = PAUSE_DUE if run.action == "pause" else RESUME_DUE
        if run.started < due or not run.name.endswith(f"-{run.action}-{due:%Y%m%dT%H%M%SZ}"):
            problems.append(f"{name}: {run.name} started {run.started:%H:%M}, not for the transition due {due:%H:%M}")
    changes = [
        (e["detail"]["status"], e["detail"]["previousStatus"])
        for e in cloud.emulator.emitted
        if e["detail"]["name"] == name
    ]
    deleted, created = changes.count(("DELETING", "AVAILABLE")), changes.count(("CREATING", None))
    if deleted != 1 or created != 2:
        problems.append(f"{name}: deleted {deleted} and created {created} times (expected 1 and 2)")
    for run in pauses + resumes:
        outcome.retried.update(retried_failures(cloud, run.arn) if run.status == "SUCCEEDED" else [])
    if resumes and resumes[0].finished is not None and resumes[0].finished <= OPENS:
        outcome.ready_by_opening += 1
    if pauses and resumes:
        cost = cost_of(cloud, [pauses[0].arn, resumes[0].arn], len(cloud.lambdas.invocations))
        for invocation in outcome.by_environment.get(name, []):
            step = invocation.function + _step_of(invocation.event)
            if invocation.error is not None:
                outcome.failed_invocations[f"{step}: {invocation.error}"] += 1
            if invocation.function in ENDPOINT_AUTOMATION:
                cost.endpoint_automation[invocation.function] += 1
            else:
                cost.invocations[step] += 1
        outcome.costs[name] = cost
        if not cost.within_budget:
            outcome.over_budget.append(
                f"{name}: {cost.total_transitions} transitions and {cost.total_invocations} invocations "
                f"(budget {BUDGET_TRANSITIONS} and {BUDGET_INVOCATIONS})"
            )
    env = cloud.emulator.environment(cloud.account, cloud.region, name)
    if env is None or env.status != "AVAILABLE":
        problems.append(f"{name}: {'absent' if env is None else env.status} at the end")
        return
    backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
    if backend.fernet_key == old_key:
        problems.append(f"{name}: the resumed environment has the old Fernet key")
    missing = {k: v for k, v in missing_after(before, metadata_fingerprint(backend)).items() if v}
    if missing:
        problems.append(f"{name}: rows not back after the resume: {missing}")
    try:
        executed = cloud.emulator.wait_for_runs(cloud.account, cloud.region, name, timeout=60)
    except (TimeoutError, RuntimeError) as error:
        problems.append(f"{name}: its Airflow's runs: {error}")
        return
    if not any(r["dag_id"].startswith("mwaa_control_") and r["state"] == "success" for r in executed):
        problems.append(f"{name}: no import DAG run succeeded in the resumed environment's Airflow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--environments", type=int, default=50, help="fleet size (default 50)")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="the stack's MaxConcurrentOperations (default: the fleet size, at most 100)",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=1800.0,
        help="real seconds the workflows may work without all waiting on MWAA before the run is failed",
    )
    args = parser.parse_args(argv)
    # The Airflow backends' speed-ups for many environments at once (localcloud/airflow/backend.py).
    os.environ["MWAA_CONTROL_FAST_AIRFLOW"] = "1"
    # Powertools warns on every invocation that publishes no metric (metrics are off here).
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    if args.environments < 1:
        parser.error("--environments must be at least 1")
    console = Console(highlight=False, width=170)
    started = time.monotonic()

    def note(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:7.1f} s[/dim]  {text}")

    outcome = run_fleet(args.environments, args.max_concurrent, args.stall_seconds, note)
    console.print(
        f"{len(outcome.environments)} environments (Airflow {AIRFLOW_VERSION}) on "
        + ", ".join(
            f"{name} {start}-{stop} {zone} ({sum(1 for s in outcome.environments.values() if s == name)})"
            for name, (zone, start, stop) in SCHEDULES.items()
        )
        + f" weekdays; MaxConcurrentOperations {outcome.max_concurrent}, "
        f"EnvironmentQuota {max(10, len(outcome.environments))}"
    )
    report(console, outcome)
    if outcome.problems:
        console.print(f"[red]{len(outcome.problems)} problem(s):[/red]")
        for problem in outcome.problems[:50]:
            console.print(f"[red]- {problem}[/red]")
        return 1
    console.print(
        "[green]every environment paused once and resumed once by its schedule, under throttling; "
        "all AVAILABLE with their metadata back[/green]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
