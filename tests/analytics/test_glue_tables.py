"""The Glue tables of template.yaml read what the backup engine writes, for both Airflow lines MWAA
offers: real Airflow 2 (2.11) and Airflow 3 (3.0) metadata databases are migrated and backed up, and
every Glue column found in a backup's Parquet file must have the Parquet type its Glue type reads.

Columns only one line has are marked in their Comment ("Airflow 3 only", "Airflow 2 only"); these
marks are checked here against the real schemas, and so is the list of columns left out on purpose,
so a new Airflow column is noticed instead of silently missing from the tables.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mwaa_control.metadata.manifest import Manifest
from mwaa_control.metadata.sealing import KeyService
from tests.analytics.athena import GLUE_TO_ARROW, GlueTable, athena, glue_tables, query_file, run_query
from tests.analytics.backups import back_up, copy_database, migrated

# Parquet columns deliberately not in the Glue tables (see the comment above DagRunTable).
LEFT_OUT = {
    "dag_run": {"conf", "context_carrier", "span_status"},
    "task_instance": {"executor_config", "next_kwargs", "context_carrier", "span_status"},
}
# The Glue columns that only one Airflow line has.
AIRFLOW3_ONLY = {
    "dag_run": {
        "logical_date",
        "run_after",
        "triggered_by",
        "scheduled_by_job_id",
        "backfill_id",
        "created_dag_version_id",
        "bundle_version",
    },
    "task_instance": {"id", "scheduled_dttm", "last_heartbeat_at", "dag_version_id"},
}
AIRFLOW2_ONLY = {
    "dag_run": {"execution_date", "external_trigger", "dag_hash"},
    "task_instance": {"job_id"},
}


@dataclass(frozen=True)
class Backup:
    bucket: Path
    manifest: Manifest

    def schema(self, table: GlueTable) -> pa.Schema:
        folder = table.location(self.bucket, self.manifest.environment, self.manifest.backup_id)
        [file] = folder.glob("*.parquet")
        return pq.read_schema(file)


@pytest.fixture(scope="module")
def airflow2(airflow2_database: Path, tmp_path_factory: pytest.TempPathFactory, backup_keys: KeyService) -> Backup:
    root = tmp_path_factory.mktemp("glue2")
    database = copy_database(airflow2_database, root / "db")
    return Backup(root / "bucket", back_up(database, root / "bucket", "env-2", datetime.now(UTC), backup_keys))


@pytest.fixture(scope="module")
def airflow3(tmp_path_factory: pytest.TempPathFactory, backup_keys: KeyService) -> Backup:
    root = tmp_path_factory.mktemp("glue3")
    database = migrated(root / "home", 3)
    with sqlite3.connect(database) as connection:
        for run_id, state, start, end in (
            ("manual__a", "success", "2026-03-01 10:00:00.000000", "2026-03-01 10:01:00.000000"),
            ("manual__b", "failed", "2026-03-02 10:00:00.000000", "2026-03-02 10:03:00.000000"),
        ):
            connection.execute(
                "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, run_after, state, start_date, end_date,"
                " clear_number) VALUES ('etl3', ?, 'manual', ?, ?, ?, ?, ?, 0)",
                (run_id, start, start, state, start, end),
            )
            connection.execute(
                "INSERT INTO task_instance (id, dag_id, run_id, task_id, map_index, state, queued_dttm, start_date,"
                " end_date, duration, try_number, pool, pool_slots) VALUES (?, 'etl3', ?, 'only', -1, ?, ?, ?, ?, 42.5,"
                " 1, 'default_pool', 1)",
                (str(uuid.uuid4()), run_id, state, start, start, end),
            )
    return Backup(root / "bucket", back_up(database, root / "bucket", "env-3", datetime.now(UTC), backup_keys))


def test_glue_types_match_the_parquet_types_of_airflow_2_and_3(airflow2: Backup, airflow3: Backup) -> None:
    for backup in (airflow2, airflow3):
        for table in glue_tables().values():
            schema = backup.schema(table)
            for column in table.columns:
                if column.name in schema.names:
                    found = schema.field(column.name).type
                    assert found == GLUE_TO_ARROW[column.type], (backup.manifest.environment, table.name, column.name)


def test_every_parquet_column_is_a_glue_column_or_left_out_on_purpose(airflow2: Backup, airflow3: Backup) -> None:
    for backup in (airflow2, airflow3):
        for table in glue_tables().values():
            unmapped = set(backup.schema(table).names) - set(table.column_names)
            assert unmapped <= LEFT_OUT[table.name], (backup.manifest.environment, table.name, unmapped)


def test_the_one_line_columns_are_the_ones_marked(airflow2: Backup, airflow3: Backup) -> None:
    for table in glue_tables().values():
        glue = set(table.column_names)
        on_2 = glue & set(airflow2.schema(table).names)
        on_3 = glue & set(airflow3.schema(table).names)
        assert glue == on_2 | on_3, f"{table.name}: columns in neither Airflow line: {glue - on_2 - on_3}"
        assert glue - on_2 == AIRFLOW3_ONLY[table.name] == table.only_on("3")
        assert glue - on_3 == AIRFLOW2_ONLY[table.name] == table.only_on("2")


def test_the_queries_run_on_an_airflow_3_backup(airflow3: Backup) -> None:
    connection = athena(airflow3.bucket)
    environment, backup_id = airflow3.manifest.environment, airflow3.manifest.backup_id
    [dags] = run_query(connection, query_file("monthly_dag_performance.sql"), environment, backup_id)
    assert (dags["dag_id"], dags["num_executions"], dags["num_success"], dags["success_rate"]) == ("etl3", 2, 1, 50.0)
    assert (dags["min_duration"], dags["max_duration"], dags["avg_duration"]) == (60.0, 180.0, 120.0)
    [tasks] = run_query(connection, query_file("monthly_task_durations.sql"), environment, backup_id)
    assert (tasks["task_id"], tasks["num_executions"], tasks["total_duration"]) == ("only", 2, 85.0)
