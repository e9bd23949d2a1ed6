"""The named queries of analytics/ give the right numbers on real backups.

A real Airflow 2.11 metadata database gets a known set of DAG runs and task instances (several DAGs,
five months, success / failed / running / queued, known durations), the real engine backs it up
twice (a run still running in the first backup has finished by the second) and once more as another
environment, and the query files run on DuckDB over the Parquet files through the Glue tables of
template.yaml (tests/analytics/athena.py). Every number is compared with one computed here in
Python from the inserted rows.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mwaa_control.metadata.catalog import CONTROL_PLANE_DAG_PREFIX
from mwaa_control.metadata.sealing import KeyService
from mwaa_control.metadata.store import LocalStore
from mwaa_control.metadata.verify import latest_backup
from tests.analytics.athena import athena, named_queries, query_file, run_query
from tests.analytics.backups import back_up, copy_database

FINISHED = ("success", "failed")


def at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_id: str
    state: str
    start: datetime | None
    end: datetime | None

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass(frozen=True)
class TaskInstance:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    queued: datetime | None
    start: datetime | None
    end: datetime | None

    @property
    def duration(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


def run(dag_id: str, run_id: str, state: str, start: str | None, end: str | None) -> Run:
    return Run(dag_id, run_id, state, at(start), at(end))


# Durations are whole milliseconds: Athena reads timestamps at millisecond precision.
FIRST_RUNS = [
    run("etl_daily", "scheduled__2026-01-05", "success", "2026-01-05 02:00:00", "2026-01-05 02:10:00"),
    run("etl_daily", "scheduled__2026-01-12", "success", "2026-01-12 02:00:00", "2026-01-12 02:15:00"),
    run("etl_daily", "scheduled__2026-01-19", "failed", "2026-01-19 02:00:00", "2026-01-19 02:05:00.250"),
    # Starts in January (UTC), ends in February: counts in January.
    run("etl_daily", "scheduled__2026-01-31", "success", "2026-01-31 23:59:59.500", "2026-02-01 00:00:01"),
    run("etl_daily", "scheduled__2026-02-02", "success", "2026-02-02 02:00:00", "2026-02-02 02:20:00"),
    run("etl_daily", "scheduled__2026-02-09", "failed", "2026-02-09 02:00:00", "2026-02-09 02:30:00"),
    run("etl_daily", "scheduled__2026-02-16", "running", "2026-02-16 02:00:00", None),
    run("reporting", "manual__2026-01-10", "success", "2026-01-10 08:00:00", "2026-01-10 08:02:00"),
    run("reporting", "manual__2026-01-20", "success", "2026-01-20 08:00:00", "2026-01-20 08:03:00.500"),
    # The control plane's own runs are never exported.
    run(
        f"{CONTROL_PLANE_DAG_PREFIX}backup",
        "manual__2026-01-15",
        "success",
        "2026-01-15 00:00:00",
        "2026-01-15 00:01:00",
    ),
]
# Between the two backups: the running run finishes, and more runs arrive.
FINISHED_LATER = run("etl_daily", "scheduled__2026-02-16", "success", "2026-02-16 02:00:00", "2026-02-16 02:40:00")
LATER_RUNS = [
    run("etl_daily", "scheduled__2026-03-02", "success", "2026-03-02 02:00:00", "2026-03-02 02:01:00"),
    run("etl_daily", "scheduled__2026-03-09", "queued", None, None),
    # Marked failed before it ever started: counts in the month it ended, without a duration.
    run("etl_daily", "manual__never-started", "failed", None, "2026-03-10 08:00:00"),
    # reporting has no run in February nor April: its months compare against the last one with runs.
    run("reporting", "manual__2026-03-03", "success", "2026-03-03 08:00:00", "2026-03-03 08:04:00"),
    run("reporting", "manual__2026-03-04", "failed", "2026-03-04 08:00:00", "2026-03-04 08:00:30"),
    run("reporting", "manual__2026-05-05", "success", "2026-05-05 08:00:00", "2026-05-05 08:01:40"),
    run("unfinished", "manual__a", "running", "2026-03-01 00:00:00", None),
    run("unfinished", "manual__b", "queued", None, None),
]
OTHER_ENVIRONMENT_RUNS = [
    run("etl_daily", "scheduled__2026-01-07", "success", "2026-01-07 00:00:00", "2026-01-07 01:00:00"),
]
SECOND_RUNS = [FINISHED_LATER if r.run_id == FINISHED_LATER.run_id else r for r in FIRST_RUNS] + LATER_RUNS


def task_instances(runs: Iterable[Run]) -> list[TaskInstance]:
    """extract then load for every run that started (queue waits of 2 s and 5.25 s; the timings do
    not depend on the run's state, so a run that finishes later keeps them); three mapped render
    instances for reporting runs; the load of a run that never started failed without starting."""
    found: list[TaskInstance] = []
    for r in runs:
        if r.start is None:
            if r.state == "failed":
                found.append(TaskInstance(r.dag_id, r.run_id, "load", -1, "failed", None, None, r.end))
            continue
        extract_start = r.start + timedelta(seconds=2)
        extract_end = extract_start + timedelta(seconds=5 + sum(map(ord, r.run_id)) % 7 * 0.25)
        found.append(TaskInstance(r.dag_id, r.run_id, "extract", -1, "success", r.start, extract_start, extract_end))
        load_start = extract_end + timedelta(seconds=5.25)
        load = {"success": ("success", 30.0), "failed": ("failed", 3.0)}.get(r.state)
        if load is None:
            found.append(TaskInstance(r.dag_id, r.run_id, "load", -1, "running", extract_end, load_start, None))
        else:
            load_end = load_start + timedelta(seconds=load[1])
            found.append(TaskInstance(r.dag_id, r.run_id, "load", -1, load[0], extract_end, load_start, load_end))
        if r.dag_id == "reporting":
            for index in range(3):
                queued = extract_end + timedelta(seconds=index)
                start = queued + timedelta(seconds=0.5)
                state = "skipped" if index == 2 and r.state == "failed" else "success"
                end = start + timedelta(seconds=index + 1)
                found.append(TaskInstance(r.dag_id, r.run_id, "render", index, state, queued, start, end))
    return found


def text(moment: datetime | None) -> str | None:
    # How SQLAlchemy (and so Airflow) stores a UTC timestamp in SQLite.
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert(database: Path, runs: list[Run], instances: list[TaskInstance]) -> None:
    with sqlite3.connect(database) as connection:
        [(existing,)] = connection.execute("SELECT COUNT(*) FROM dag_run").fetchall()
        for number, r in enumerate(runs, start=existing):
            logical = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=number)  # unique per DAG
            connection.execute(
                "INSERT INTO dag_run (dag_id, run_id, run_type, execution_date, state, queued_at, start_date,"
                " end_date, external_trigger, clear_number) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (r.dag_id, r.run_id, r.run_id.split("__")[0], text(logical), r.state, text(logical), text(r.start),
                 text(r.end), r.run_id.startswith("manual")),
            )  # fmt: skip
        for ti in instances:
            connection.execute(
                "INSERT INTO task_instance (dag_id, run_id, task_id, map_index, state, queued_dttm, start_date,"
                " end_date, duration, try_number, max_tries, pool, pool_slots, queue, priority_weight, operator)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, 'default_pool', 1, 'default', 1, 'PythonOperator')",
                (ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.state, text(ti.queued), text(ti.start),
                 text(ti.end), ti.duration),
            )  # fmt: skip


def update(database: Path, finished: Run) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE dag_run SET state = ?, end_date = ? WHERE dag_id = ? AND run_id = ?",
            (finished.state, text(finished.end), finished.dag_id, finished.run_id),
        )


# ---- what the queries should say, computed from the rows -----------------------------------------


def month_of(start: datetime | None, end: datetime | None) -> date | None:
    moment = start or end
    return None if moment is None else date(moment.year, moment.month, 1)


def exported(dag_id: str) -> bool:
    return not dag_id.startswith(CONTROL_PLANE_DAG_PREFIX)


def expected_dag_performance(environment: str, runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, date], list[Run]] = defaultdict(list)
    for r in runs:
        month = month_of(r.start, r.end)
        if r.state in FINISHED and exported(r.dag_id) and month is not None:
            groups[(r.dag_id, month)].append(r)
    rows: list[dict[str, Any]] = []
    previous: dict[str, tuple[date, float | None]] = {}
    for (dag_id, month), group in sorted(groups.items()):
        durations = [s for s in (r.seconds for r in group) if s is not None]
        average = statistics.fmean(durations) if durations else None
        prev_month, prev_average = previous.get(dag_id, (None, None))
        successes = sum(r.state == "success" for r in group)
        rows.append(
            {
                "environment": environment,
                "dag_id": dag_id,
                "run_month": month,
                "num_executions": len(group),
                "num_success": successes,
                "num_failed": sum(r.state == "failed" for r in group),
                "success_rate": 100 * successes / len(group),
                "min_duration": min(durations, default=None),
                "max_duration": max(durations, default=None),
                "avg_duration": average,
                "prev_run_month": prev_month,
                "prev_month_avg_duration": prev_average,
                "var_duration": None if average is None or prev_average is None else average - prev_average,
            }
        )
        previous[dag_id] = (month, average)
    return rows


def expected_task_durations(environment: str, instances: list[TaskInstance]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, date], list[TaskInstance]] = defaultdict(list)
    for ti in instances:
        month = month_of(ti.start, ti.end)
        if ti.state in FINISHED and exported(ti.dag_id) and month is not None:
            groups[(ti.dag_id, ti.task_id, month)].append(ti)
    rows = []
    for (dag_id, task_id, month), group in sorted(groups.items()):
        durations = [d for d in (ti.duration for ti in group) if d is not None]
        waits = [(ti.start - ti.queued).total_seconds() for ti in group if ti.start and ti.queued]
        rows.append(
            {
                "environment": environment,
                "dag_id": dag_id,
                "task_id": task_id,
                "run_month": month,
                "num_executions": len(group),
                "num_success": sum(ti.state == "success" for ti in group),
                "num_failed": sum(ti.state == "failed" for ti in group),
                "min_duration": min(durations, default=None),
                "max_duration": max(durations, default=None),
                "avg_duration": statistics.fmean(durations) if durations else None,
                "total_duration": sum(durations) if durations else None,
                "avg_queued_duration": statistics.fmean(waits) if waits else None,
                "max_queued_duration": max(waits, default=None),
            }
        )
    return rows


def assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["dag_id"], r["run_month"]) for r in actual] == [(r["dag_id"], r["run_month"]) for r in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got == pytest.approx(want), (got["dag_id"], got["run_month"])


# ---- the backups -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backups:
    bucket: Path
    first: str
    second: str
    other: str


@pytest.fixture(scope="module")
def backups(airflow2_database: Path, tmp_path_factory: pytest.TempPathFactory, backup_keys: KeyService) -> Backups:
    root = tmp_path_factory.mktemp("analytics")
    bucket = root / "bucket"
    env_a = copy_database(airflow2_database, root / "env-a")
    insert(env_a, FIRST_RUNS, task_instances(FIRST_RUNS))
    first = back_up(env_a, bucket, "env-a", datetime(2026, 2, 20, tzinfo=UTC), backup_keys)
    update(env_a, FINISHED_LATER)
    insert(env_a, LATER_RUNS, task_instances(LATER_RUNS))
    # The load task of the run that finished between the backups finished too.
    with sqlite3.connect(env_a) as connection:
        connection.execute(
            "UPDATE task_instance SET state = 'success', end_date = ?, duration = ?"
            " WHERE run_id = ? AND task_id = 'load'",
            (text(load_end(FINISHED_LATER)), 30.0, FINISHED_LATER.run_id),
        )
    second = back_up(env_a, bucket, "env-a", datetime(2026, 6, 1, tzinfo=UTC), backup_keys)
    env_b = copy_database(airflow2_database, root / "env-b")
    insert(env_b, OTHER_ENVIRONMENT_RUNS, task_instances(OTHER_ENVIRONMENT_RUNS))
    other = back_up(env_b, bucket, "env-b", datetime(2026, 6, 1, tzinfo=UTC), backup_keys)
    return Backups(bucket, first.backup_id, second.backup_id, other.backup_id)


def load_end(r: Run) -> datetime:
    [load] = [ti for ti in task_instances([r]) if ti.task_id == "load"]
    assert load.end is not None
    return load.end


def second_task_instances() -> list[TaskInstance]:
    """What task_instance holds at the second backup: the first runs' instances as they were, except
    the load of the run that finished in between, plus the later runs' instances."""
    first = task_instances(FIRST_RUNS)
    finished = {(ti.run_id, ti.task_id): ti for ti in task_instances([FINISHED_LATER])}
    now = [finished.get((ti.run_id, ti.task_id), ti) if ti.run_id == FINISHED_LATER.run_id else ti for ti in first]
    return now + task_instances(LATER_RUNS)


@pytest.fixture(scope="module")
def connection(backups: Backups) -> duckdb.DuckDBPyConnection:
    return athena(backups.bucket)


MONTHLY = query_file("monthly_dag_performance.sql")
TASKS = query_file("monthly_task_durations.sql")


# ---- the tests -----------------------------------------------------------------------------------


def test_the_latest_backup_is_found_from_the_manifests(backups: Backups, backup_keys: KeyService) -> None:
    assert latest_backup(LocalStore(backups.bucket), "env-a", backup_keys) == backups.second
    assert backups.first < backups.second


def test_monthly_dag_performance_of_the_latest_backup(backups: Backups, connection: duckdb.DuckDBPyConnection) -> None:
    rows = run_query(connection, MONTHLY, "env-a", backups.second)
    assert_rows(rows, expected_dag_performance("env-a", SECOND_RUNS))
    # The same numbers, worked out by hand for one DAG.
    etl = [r for r in rows if r["dag_id"] == "etl_daily"]
    assert [(r["run_month"], r["num_executions"], r["num_success"], r["num_failed"]) for r in etl] == [
        (date(2026, 1, 1), 4, 3, 1),
        (date(2026, 2, 1), 3, 2, 1),
        (date(2026, 3, 1), 2, 1, 1),
    ]
    assert [r["success_rate"] for r in etl] == pytest.approx([75.0, 200 / 3, 50.0])
    assert [(r["min_duration"], r["max_duration"]) for r in etl] == [(1.5, 900.0), (1200.0, 2400.0), (60.0, 60.0)]
    assert [r["avg_duration"] for r in etl] == pytest.approx([450.4375, 1800.0, 60.0])
    assert [r["prev_month_avg_duration"] for r in etl] == pytest.approx([None, 450.4375, 1800.0])
    assert [r["var_duration"] for r in etl] == pytest.approx([None, 1349.5625, -1740.0])
    reporting = [r for r in rows if r["dag_id"] == "reporting"]
    assert [(r["run_month"], r["prev_run_month"]) for r in reporting] == [
        (date(2026, 1, 1), None),
        (date(2026, 3, 1), date(2026, 1, 1)),
        (date(2026, 5, 1), date(2026, 3, 1)),
    ]
    assert {r["dag_id"] for r in rows} == {"etl_daily", "reporting"}  # no unfinished-only DAG, no own DAG


def test_an_older_backup_is_its_own_snapshot(backups: Backups, connection: duckdb.DuckDBPyConnection) -> None:
    rows = run_query(connection, MONTHLY, "env-a", backups.first)
    assert_rows(rows, expected_dag_performance("env-a", FIRST_RUNS))
    february = next(r for r in rows if r["dag_id"] == "etl_daily" and r["run_month"] == date(2026, 2, 1))
    assert february["num_executions"] == 2  # the third run was still running then


def test_environments_and_backups_do_not_mix(backups: Backups, connection: duckdb.DuckDBPyConnection) -> None:
    rows = run_query(connection, MONTHLY, "env-b", backups.other)
    assert_rows(rows, expected_dag_performance("env-b", OTHER_ENVIRONMENT_RUNS))
    assert run_query(connection, MONTHLY, "env-b", backups.second) == []
    assert run_query(connection, MONTHLY, "env-a", backups.other) == []


def test_monthly_task_durations_of_the_latest_backup(backups: Backups, connection: duckdb.DuckDBPyConnection) -> None:
    instances = second_task_instances()
    rows = run_query(connection, TASKS, "env-a", backups.second)
    expected = expected_task_durations("env-a", instances)
    assert [(r["dag_id"], r["task_id"], r["run_month"]) for r in rows] == [
        (r["dag_id"], r["task_id"], r["run_month"]) for r in expected
    ]
    for got, want in zip(rows, expected, strict=True):
        assert got == pytest.approx(want), (got["dag_id"], got["task_id"], got["run_month"])
    load_march = next(
        r for r in rows if (r["dag_id"], r["task_id"], r["run_month"]) == ("etl_daily", "load", date(2026, 3, 1))
    )
    # The load of the run that never started counts as a failure without a duration or queue wait.
    assert (load_march["num_executions"], load_march["num_failed"], load_march["avg_duration"]) == (2, 1, 30.0)
    assert load_march["avg_queued_duration"] == pytest.approx(5.25)


def test_the_deployed_named_queries_are_the_query_files() -> None:
    deployed = named_queries()
    assert deployed["MonthlyDagPerformanceQuery"] == MONTHLY
    assert deployed["MonthlyTaskDurationsQuery"] == TASKS
