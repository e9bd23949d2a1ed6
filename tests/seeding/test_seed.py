"""Real Airflow metadata databases for the backup/restore tests: seed_metadata.py, run by each Airflow
release MWAA offers that we install (an older 2.x and 2.11), on SQLite and on PostgreSQL, fills every
table a backup must carry. These tests prove the seed is what the backup tests rely on: the key
tables have rows, the hostile values arrive intact, secrets are stored only encrypted, and the
monthly run statistics the seed reports match the rows."""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from localcloud.airflow.backend import LOCAL_RELEASES, OLDER_RELEASES, AirflowBackend
from localcloud.postgres import PostgresServer

RELEASES = [*OLDER_RELEASES, LOCAL_RELEASES[2]]
COMBINATIONS = [(release, dialect) for release in RELEASES for dialect in ("sqlite", "postgresql")]

KEY_TABLES = [
    "dag",
    "dag_code",
    "serialized_dag",
    "dag_tag",
    "dag_run",
    "dag_run_note",
    "task_instance",
    "task_instance_note",
    "task_fail",
    "task_map",
    "task_reschedule",
    "rendered_task_instance_fields",
    "xcom",
    "log",
    "trigger",
    "dataset",
    "dataset_event",
    "dagrun_dataset_event",
    "dataset_dag_run_queue",
    "slot_pool",
    "variable",
    "connection",
    "import_error",
    "dag_warning",
    "sla_miss",
    "callback_request",
    "job",
    "ab_user",
    "ab_role",
]


@dataclass
class Seeded:
    release: str
    dialect: str
    backend: AirflowBackend
    report: dict[str, Any]
    postgres: PostgresServer | None = None
    database: str = ""

    def rows(self, sql: str) -> list[tuple[str, ...]]:
        """Rows as text, read without Airflow (sqlite3 or psql); NULL reads as ""."""
        if self.postgres is not None:
            return self.postgres.query(self.database, sql)
        with sqlite3.connect(self.backend.home / "airflow.db") as db:
            return [tuple("" if v is None else str(v) for v in row) for row in db.execute(sql)]

    def value(self, sql: str) -> str:
        (row,) = self.rows(sql)
        return row[0]

    def stored_bytes(self) -> bytes:
        if self.postgres is not None:
            return self.postgres.dump(self.database)
        return (self.backend.home / "airflow.db").read_bytes()

    def sql(self, sqlite: str, postgresql: str) -> str:
        return postgresql if self.postgres is not None else sqlite


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module", params=COMBINATIONS, ids=[f"{r}-{d}" for r, d in COMBINATIONS])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    release, dialect = request.param
    home = tmp_path_factory.mktemp(f"seed-{release}-{dialect}")
    if dialect == "sqlite":
        backend = AirflowBackend(home, release=release)
        return Seeded(release, dialect, backend, backend.seed_metadata())
    server: PostgresServer = request.getfixturevalue("postgres")
    database = "airflow_" + release.replace(".", "_")
    backend = AirflowBackend(home, release=release, db_url=server.create_database(database))
    return Seeded(release, dialect, backend, backend.seed_metadata(), server, database)


def test_the_seed_names_its_release_and_database(seeded: Seeded) -> None:
    report = seeded.report
    assert report["airflow_version"] == seeded.release
    assert report["dialect"] == seeded.dialect
    assert report["alembic_revision"] == seeded.value("SELECT version_num FROM alembic_version")


def test_every_key_table_has_rows(seeded: Seeded) -> None:
    counts = seeded.report["table_counts"]
    empty = [t for t in KEY_TABLES if counts.get(t, 0) == 0]
    assert not empty, f"tables without rows: {empty}"
    for table in KEY_TABLES:  # the report's counts are the database's
        assert int(seeded.value(f"SELECT COUNT(*) FROM {table}")) == counts[table], table
    assert counts["slot_pool"] >= 4  # default_pool and three more
    assert counts["variable"] >= 7
    assert counts["connection"] >= 3
    if tuple(int(p) for p in seeded.release.split(".")[:2]) >= (2, 10):
        for table in ("task_instance_history", "dataset_alias", "dataset_alias_dataset_event"):
            assert counts[table] > 0, table


def test_dags_are_both_paused_and_active(seeded: Seeded) -> None:
    dags = seeded.report["dags"]
    assert {"seed_etl", "seed_flaky", "seed_monthly", "seed_producer", "seed_consumer"} <= {
        d for d, paused in dags.items() if not paused
    }
    assert {"seed_deferred", "seed.legacy-report_v1"} <= {d for d, paused in dags.items() if paused}
    in_db = {
        dag_id: flag
        for dag_id, flag in seeded.rows("SELECT dag_id, CASE WHEN is_paused THEN 'p' ELSE 'a' END FROM dag")
    }
    assert in_db == {d: "p" if paused else "a" for d, paused in dags.items()}


def test_runs_were_really_executed(seeded: Seeded) -> None:
    states = set(seeded.rows("SELECT DISTINCT state FROM task_instance"))
    assert {("success",), ("failed",), ("upstream_failed",), ("deferred",), ("up_for_reschedule",)} <= states
    mapped = seeded.rows("SELECT map_index FROM task_instance WHERE dag_id = 'seed_etl' AND map_index >= 0")
    assert sorted(int(m) for (m,) in mapped) == [0, 1, 2]
    assert seeded.value("SELECT try_number FROM task_instance WHERE task_id = 'retried'") == "2"
    assert set(seeded.rows("SELECT DISTINCT state FROM dag_run")) == {("success",), ("failed",), ("running",)}
    deferred = seeded.rows(
        "SELECT t.classpath, ti.next_method FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id"
    )
    assert deferred == [("seed_support.PartnerTrigger", "resume")]


def test_xcoms_hold_unicode_and_a_large_value(seeded: Seeded) -> None:
    length = seeded.sql("LENGTH(value)", "OCTET_LENGTH(value)")
    assert int(seeded.value(f"SELECT MAX({length}) FROM xcom")) > 200_000
    assert seeded.rows("SELECT task_id FROM xcom WHERE key = 'naïve ☃ 日本'") == [("extract",)]
    assert int(seeded.value("SELECT COUNT(*) FROM xcom WHERE task_id = 'transform'")) == 3


def test_hostile_conf_is_stored_intact(seeded: Seeded) -> None:
    """dag_run.conf is a pickled dict (PickleType) in Airflow 2."""
    expected = seeded.report["expected"]["hostile_conf"]
    encoded = seeded.value(
        seeded.sql("SELECT hex(conf) FROM dag_run", "SELECT encode(conf, 'hex') FROM dag_run")
        + f" WHERE dag_id = '{expected['dag_id']}' AND run_id = '{expected['run_id']}'"
    )
    conf = pickle.loads(bytes.fromhex(encoded))
    assert conf == expected["conf"]
    assert conf["unicode"] == "naïve ☃ 日本"
    assert "\n" in conf["multi_line_json"]
    assert json.loads(conf["multi_line_json"])["c"] == 'say "hi", then\nleave'


def test_log_rows_carry_multi_line_json(seeded: Seeded) -> None:
    (extra,) = seeded.rows("SELECT extra FROM log WHERE event = 'cli_trigger'")
    assert extra[0].count("\n") > 5
    assert json.loads(extra[0])["note"].startswith("naïve ☃ 日本")
    assert int(seeded.value("SELECT COUNT(*) FROM log WHERE event = 'success'")) > 10  # the task runner's


def test_secrets_are_stored_only_encrypted(seeded: Seeded) -> None:
    markers = seeded.report["secret_markers"]
    assert len(markers) == len(set(markers)) >= 10
    assert all(m.startswith("SEKRET-") for m in markers)
    located = {(s["table"], s["column"]) for s in seeded.report["secret_locations"]}
    assert {("variable", "val"), ("connection", "password"), ("connection", "extra"), ("trigger", "kwargs")} <= located
    stored = seeded.stored_bytes()
    assert b"seed_plain" in stored  # the scan sees the data
    leaked = [m for m in markers if m.encode() in stored]
    assert not leaked, f"plaintext secrets in the database: {leaked}"
    assert seeded.rows("SELECT DISTINCT is_encrypted FROM variable") in ([("1",)], [("t",)])


def test_monthly_statistics_match_the_rows(seeded: Seeded) -> None:
    """Per DAG and month (of start_date, UTC): finished runs, outcomes and durations, recomputed here
    from the raw rows, equal what the seed reports; seed_monthly spans four months."""
    query = seeded.sql(
        "SELECT dag_id, strftime('%Y-%m', start_date), state, "
        "(julianday(end_date) - julianday(start_date)) * 86400 FROM dag_run WHERE state != 'running'",
        "SELECT dag_id, to_char(start_date AT TIME ZONE 'UTC', 'YYYY-MM'), state, "
        "EXTRACT(EPOCH FROM end_date - start_date) FROM dag_run WHERE state != 'running'",
    )
    grouped: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for dag_id, month, state, seconds in seeded.rows(query):
        grouped[(dag_id, month)].append((state, round(float(seconds), 3)))
    reported = seeded.report["monthly_stats"]
    assert {(d, m) for d, months in reported.items() for m in months} == set(grouped)
    for (dag_id, month), runs in grouped.items():
        stats = reported[dag_id][month]
        durations = [s for _, s in runs]
        assert stats["runs"] == len(runs)
        assert stats["success"] == sum(1 for state, _ in runs if state == "success")
        assert stats["failed"] == sum(1 for state, _ in runs if state == "failed")
        assert stats["min_duration_s"] == pytest.approx(min(durations))
        assert stats["max_duration_s"] == pytest.approx(max(durations))
        assert stats["avg_duration_s"] == pytest.approx(sum(durations) / len(durations))

    monthly = reported["seed_monthly"]
    assert len(monthly) >= 3
    expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in seeded.report["expected"]["monthly_runs"]:
        expected[datetime.fromisoformat(run["logical_date"]).strftime("%Y-%m")].append(run)
    for month, planned in expected.items():
        assert monthly[month]["runs"] == len(planned)
        assert monthly[month]["failed"] == sum(1 for r in planned if r["failed"])
        assert monthly[month]["max_duration_s"] == max(r["seconds"] for r in planned)
    assert len({m["avg_duration_s"] for m in monthly.values()}) == len(monthly)  # durations differ
