"""Metadata backup/restore benchmark (issue 4: "metadata backup/restore must be fast").

    uv run --locked python -m bench.metadata_bench [--scale 1.0] [--shapes narrow,wide] [--skip-naive-in]
        [--repeat N] [--profile]

Builds synthetic Airflow 2.11 metadata databases in a throwaway PostgreSQL (the real schema, made by
`airflow db migrate`), of two shapes:

  narrow  at scale 1.0: 100 DAGs, 100,000 DAG runs, 1,000,000 task instances, 20,000 jobs,
          1,000,000 audit log rows (short rows: what most of a metadata database is)
  wide    at scale 1.0: 100 DAGs, 20,000 DAG runs of 2 tasks and a task mapped 20 ways (440,000 task
          instances), an XCom of ~600 bytes and rendered template fields of ~800 bytes per task
          instance, 100,000 audit log rows (wide rows: what bounds memory)

then times, each in a fresh child process whose peak RSS is the kernel's high-water mark of its
memory (VmHWM):

  psql-out      the C client: `psql -c "\\copy <table> TO file (FORMAT csv)"` of every table the
                backup exports, in one REPEATABLE READ transaction (the backup's target: <= 1.5x)
  psql-null     the same as `COPY <table> TO STDOUT` with psql's output to /dev/null: the server's
                and libpq's share of psql-out, without writing files
  copy-out      `COPY <table> TO STDOUT (FORMAT csv)` through psycopg's Python iterator, to files
  ours-backup   BackupEngine into a LocalStore (Parquet, zstd, secrets sealed): two connections
                share the snapshot (pg_dump -j's way) and read two tables at once; empty tables
                are found in one query and not copied
  naive-out     cursor iteration and `csv.writer.writerow` per row, one file per table
  psql-in       the C client: `\\copy <table> FROM file (FORMAT csv)` of psql-out's files into a fresh
                migrated database, parents before children, one transaction (the restore's
                target: <= 1.5x)
  copy-in       `COPY <table> FROM STDIN (FORMAT csv)` of copy-out's files through psycopg
  ours-restore  RestoreEngine into a fresh migrated database
  naive-in      `csv.reader` and row-by-row executemany INSERTs into a fresh migrated database,
                one transaction

and ours-backup/ours-restore again on a database a quarter the size, to see whether memory grows
with the data. The machine is shared and noisy, so the verdicts are ratios of timings taken in the
same run, and each fast measurement runs `--repeat N` times (3 by default) with the fastest kept;
the naive baselines, ten times slower, run once. Targets, on both shapes: backup <= 1.5x psql-out,
restore <= 1.5x psql-in, peak RSS < 300 MB and flat as the database grows.

KMS: moto's mocks cannot share a key between processes (and moto's server mode is not installed), so
the data key of the backup is wrapped by `LocalKeyService`, a fixed local AES-GCM key implementing
`sealing.KeyService`; it is one call per backup or restore, so it does not matter to the timings.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

if TYPE_CHECKING:
    from localcloud.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_RELEASE = "2.11.0"
ENVIRONMENT = "bench"
TEMPLATE_DB = "bench_template"
BIG_TABLES = ("dag", "dag_run", "task_instance", "job", "log")
WIDE_TABLES = (*BIG_TABLES, "xcom", "rendered_task_instance_fields")
# Targets of the issue, against the C client (psql), not a Python driver's COPY.
BACKUP_VS_COPY = 1.5
RESTORE_VS_COPY = 1.5
PSQL = os.environ.get("MWAA_CONTROL_PSQL", shutil.which("psql") or "/usr/bin/psql")
RSS_LIMIT_MB = 300.0
FLAT_TOLERANCE = 1.25
"""Peak RSS at the full scale may be at most this many times the peak at the small scale."""
# On top of localcloud.postgres's test settings (no fsync), the same for every method measured: fewer
# checkpoints while millions of rows are written, and shared buffers sized for a metadata database
# rather than for unit tests (64 MB makes every index insertion of a 1M-row load go through the OS).
SERVER_SETTINGS = {"max_wal_size": "4GB", "checkpoint_timeout": "30min", "maintenance_work_mem": "256MB"}


# -- synthetic database ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    dags: int
    runs: int
    tasks_per_run: int
    scheduler_jobs: int
    task_jobs: int
    logs: int
    name: str = "narrow"
    mapped_per_run: int = 0
    """Task instances of one task mapped this many ways per run (map_index 0..n-1)."""
    xcom_bytes: int = 0
    """With a size: an XCom of about this many bytes per task instance."""
    rendered_bytes: int = 0
    """With a size: rendered template fields of about this many bytes per task instance."""

    @classmethod
    def at(cls, scale: float, name: str = "narrow") -> Shape:
        dags = max(1, round(100 * scale))
        if name == "wide":
            return cls(
                dags=dags,
                runs=max(dags, round(20_000 * scale)),
                tasks_per_run=2,
                scheduler_jobs=10,
                task_jobs=max(10, round(5_000 * scale)),
                logs=max(10, round(100_000 * scale)),
                name=name,
                mapped_per_run=20,
                xcom_bytes=600,
                rendered_bytes=800,
            )
        if name != "narrow":
            raise ValueError(f"unknown shape {name!r} (narrow, wide)")
        return cls(
            dags=dags,
            runs=max(dags, round(100_000 * scale)),
            tasks_per_run=10,
            scheduler_jobs=10,
            task_jobs=max(10, round(20_000 * scale)),
            logs=max(10, round(1_000_000 * scale)),
        )

    @property
    def task_instances(self) -> int:
        return self.runs * (self.tasks_per_run + self.mapped_per_run)

    @property
    def tables(self) -> tuple[str, ...]:
        return WIDE_TABLES if self.xcom_bytes else BIG_TABLES

    def describe(self) -> str:
        text = (
            f"{self.name}: {self.dags} DAGs, {self.runs:,} DAG runs, {self.task_instances:,} task instances"
            f" ({self.mapped_per_run} mapped per run), {self.jobs:,} jobs, {self.logs:,} log rows"
        )
        if self.xcom_bytes:
            text += f", ~{self.xcom_bytes} B XComs and ~{self.rendered_bytes} B rendered fields per task instance"
        return text

    @property
    def jobs(self) -> int:
        return self.scheduler_jobs + self.task_jobs

    @property
    def step_seconds(self) -> int:
        """Runs of one DAG are spread over twelve months."""
        runs_per_dag = max(1, self.runs // self.dags)
        return max(60, 365 * 86_400 // runs_per_dag)


FILL_DAGS = r"""
INSERT INTO dag (dag_id, root_dag_id, is_paused, is_subdag, is_active, last_parsed_time, fileloc,
    processor_subdir, owners, description, default_view, schedule_interval, timetable_description,
    max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits,
    has_import_errors, next_dagrun, next_dagrun_data_interval_start, next_dagrun_data_interval_end,
    next_dagrun_create_after)
SELECT 'bench_dag_' || lpad(g::text, 4, '0'), NULL, g %% 7 = 0, false, true,
    timestamptz '2026-01-01 00:00:00+00', '/usr/local/airflow/dags/bench_dag_' || lpad(g::text, 4, '0') || '.py',
    '/usr/local/airflow/dags', 'airflow', 'Synthetic DAG ' || g || ', "quoted", with a comma', 'grid',
    '"0 */8 * * *"', 'At minute 0 past every 8th hour', 16, 16, 0, false, false,
    timestamptz '2026-01-01 00:00:00+00', timestamptz '2025-12-31 16:00:00+00',
    timestamptz '2026-01-01 00:00:00+00', timestamptz '2026-01-01 00:00:00+00'
FROM generate_series(0, %(dags)s - 1) AS g
"""

FILL_JOBS = r"""
INSERT INTO job (id, dag_id, state, job_type, start_date, end_date, latest_heartbeat, executor_class, hostname,
    unixname)
SELECT g,
    CASE WHEN g <= %(scheduler_jobs)s THEN NULL ELSE 'bench_dag_' || lpad((g %% %(dags)s)::text, 4, '0') END,
    'success', CASE WHEN g <= %(scheduler_jobs)s THEN 'SchedulerJob' ELSE 'LocalTaskJob' END,
    ts, ts + interval '95 seconds', ts + interval '90 seconds', 'CeleryExecutor',
    'ip-10-0-' || (g %% 8) || '-17.ec2.internal', 'airflow'
FROM generate_series(1, %(jobs)s) AS g,
    LATERAL (SELECT timestamptz '2025-01-01 00:00:00+00' + g * interval '26 minutes' AS ts) AS t
"""

FILL_RUNS = r"""
INSERT INTO dag_run (id, dag_id, queued_at, execution_date, start_date, end_date, state, run_id, creating_job_id,
    external_trigger, run_type, conf, data_interval_start, data_interval_end, last_scheduling_decision, dag_hash,
    log_template_id, updated_at, clear_number)
SELECT g, dag_id, ed + interval '2 seconds', ed, ed + interval '5 seconds', ed + (60 + g %% 900) * interval '1 second',
    CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'success' END,
    'scheduled__' || to_char(ed AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00',
    1 + g %% %(scheduler_jobs)s, false, 'scheduled', '\x80057d942e'::bytea,
    ed - %(step)s * interval '1 second', ed, ed + (60 + g %% 900) * interval '1 second', md5(dag_id), 1,
    ed + (61 + g %% 900) * interval '1 second', 0
FROM (
    SELECT g, 'bench_dag_' || lpad(((g - 1) %% %(dags)s)::text, 4, '0') AS dag_id,
        timestamptz '2025-01-01 00:00:00+00' + ((g - 1) / %(dags)s) * %(step)s * interval '1 second'
            + ((g - 1) %% %(dags)s) * interval '1 minute' AS ed
    FROM generate_series(1, %(runs)s) AS g
) AS r
"""

FILL_TASK_INSTANCES = r"""
INSERT INTO task_instance (task_id, dag_id, run_id, map_index, start_date, end_date, duration, state, try_number,
    max_tries, hostname, unixname, job_id, pool, pool_slots, queue, priority_weight, operator, custom_operator_name,
    queued_dttm, queued_by_job_id, pid, executor, executor_config, updated_at, rendered_map_index,
    external_executor_id, trigger_id, trigger_timeout, next_method, next_kwargs, task_display_name)
SELECT 'task_' || t, dr.dag_id, dr.run_id, -1, started, started + d * interval '1 second', d,
    CASE WHEN dr.state = 'failed' AND t = %(tasks)s - 1 THEN 'failed' ELSE 'success' END, 1, 0,
    'ip-10-0-' || (k %% 8) || '-17.ec2.internal', 'airflow', %(scheduler_jobs)s + 1 + k %% %(task_jobs)s,
    'default_pool', 1, 'default', %(tasks)s - t, 'PythonOperator', '@task', started - interval '2 seconds',
    1 + k %% %(scheduler_jobs)s, 1000 + k %% 30000, NULL, '\x80057d942e'::bytea, started + d * interval '1 second',
    NULL, md5(k::text)::uuid::text, NULL, NULL, NULL, NULL, 'task_' || t
FROM dag_run AS dr
CROSS JOIN generate_series(0, %(tasks)s - 1) AS t,
    LATERAL (
        SELECT (dr.id - 1) * %(tasks)s + t AS k, dr.start_date + t * interval '20 seconds' AS started,
            (1 + (dr.id * 7 + t * 13) %% 120)::float8 + 0.25 AS d
    ) AS x
ORDER BY dr.id, t
"""

# The audit log: one row per event of a task instance; `extra` is multi-line JSON with quotes and
# commas. One in twenty is a `cli_task_run` row, whose extra (the command line) the backup seals.
FILL_LOG = r"""
INSERT INTO log (id, dttm, dag_id, task_id, map_index, event, execution_date, run_id, owner, owner_display_name,
    extra, try_number)
SELECT g, dr.start_date + (k %% %(tasks)s) * interval '20 seconds' + (g / %(tis)s) * interval '1 second',
    dr.dag_id, 'task_' || (k %% %(tasks)s), -1,
    CASE WHEN g %% 20 = 0 THEN 'cli_task_run' WHEN g %% 20 IN (1, 2) THEN 'trigger' WHEN g %% 20 = 3 THEN 'failed'
        WHEN g %% 20 < 12 THEN 'running' ELSE 'success' END,
    dr.execution_date, dr.run_id, 'airflow', NULL,
    '{"host_name": "ip-10-0-' || (g %% 8) || E'-17.ec2.internal",\n "full_command": "[''/usr/local/bin/airflow'', '
        || '''tasks'', ''run'', ''' || dr.dag_id || ''', ''task_' || (k %% %(tasks)s) || ''', '''
        || dr.run_id || ''', ''--local'', ''--pool'', ''default_pool'']"}',
    1
FROM (SELECT g, (g - 1) %% %(tis)s AS k FROM generate_series(1, %(logs)s) AS g) AS x
JOIN dag_run AS dr ON dr.id = x.k / %(tasks)s + 1
ORDER BY x.g
"""

# The wide shape: one task mapped `mapped` ways per run (what `.expand()` leaves), an XCom per task
# instance (a JSON value of ~`xcom_bytes`, stored as bytea as Airflow 2 does), and its rendered template
# fields (JSON of ~`rendered_bytes`). Values carry md5 digests, compressible about as real ones are.
FILL_MAPPED = r"""
INSERT INTO task_instance (task_id, dag_id, run_id, map_index, start_date, end_date, duration, state, try_number,
    max_tries, hostname, unixname, job_id, pool, pool_slots, queue, priority_weight, operator, custom_operator_name,
    queued_dttm, queued_by_job_id, pid, executor, executor_config, updated_at, rendered_map_index,
    external_executor_id, trigger_id, trigger_timeout, next_method, next_kwargs, task_display_name)
SELECT 'mapped', dr.dag_id, dr.run_id, m, started, started + 3 * interval '1 second', 3, 'success', 1, 0,
    'ip-10-0-' || (m %% 8) || '-17.ec2.internal', 'airflow', %(scheduler_jobs)s + 1 + (dr.id + m) %% %(task_jobs)s,
    'default_pool', 1, 'default', 1, '_PythonDecoratedOperator', '@task', started - interval '2 seconds',
    1 + dr.id %% %(scheduler_jobs)s, 1000 + m, NULL, '\x80057d942e'::bytea, started + 3 * interval '1 second',
    'partition=' || m, md5((dr.id * 1000 + m)::text)::uuid::text, NULL, NULL, NULL, NULL, 'mapped'
FROM dag_run AS dr
CROSS JOIN generate_series(0, %(mapped)s - 1) AS m,
    LATERAL (SELECT dr.start_date + (%(tasks)s * 20 + m) * interval '1 second' AS started) AS x
ORDER BY dr.id, m
"""

FILL_XCOM = r"""
INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp)
SELECT dr.id, ti.task_id, ti.map_index, 'return_value', ti.dag_id, ti.run_id,
    convert_to(json_build_object(
        'partition', ti.map_index, 'rows', dr.id %% 997,
        'digest', (SELECT string_agg(md5((dr.id * 100000 + ti.map_index * 100 + i)::text), '')
            FROM generate_series(1, %(xcom_digests)s) AS i))::text, 'UTF8'),
    ti.end_date
FROM task_instance AS ti
JOIN dag_run AS dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id
ORDER BY dr.id, ti.task_id, ti.map_index
"""

FILL_RENDERED = r"""
INSERT INTO rendered_task_instance_fields (dag_id, task_id, run_id, map_index, rendered_fields, k8s_pod_yaml)
SELECT ti.dag_id, ti.task_id, ti.run_id, ti.map_index,
    json_build_object(
        'templates_dict', NULL,
        'op_args', json_build_array(ti.map_index, ti.run_id),
        'op_kwargs', json_build_object('partition', ti.map_index, 'bucket', 's3://bench-bucket/raw'),
        'sql', format('SELECT * FROM events WHERE run_id = %%L AND digest IN (%%s)', ti.run_id,
            (SELECT string_agg(quote_literal(md5(ti.run_id || (ti.map_index * 100 + i))), ', ')
                FROM generate_series(1, %(rendered_digests)s) AS i))
    ),
    NULL
FROM task_instance AS ti
ORDER BY ti.dag_id, ti.run_id, ti.task_id, ti.map_index
"""

SET_SEQUENCES = """
SELECT setval('dag_run_id_seq', (SELECT max(id) FROM dag_run)), setval('job_id_seq', (SELECT max(id) FROM job)),
    setval('log_id_seq', (SELECT max(id) FROM log))
"""


def fill(dsn: str, shape: Shape) -> dict[str, float]:
    """Fills a migrated database with server-side SQL; returns seconds per table."""
    params = {
        "dags": shape.dags,
        "runs": shape.runs,
        "tasks": shape.tasks_per_run,
        "tis": shape.runs * shape.tasks_per_run,  # the unmapped ones, which the audit log is about
        "mapped": shape.mapped_per_run,
        "xcom_digests": max(1, (shape.xcom_bytes - 60) // 32),
        "rendered_digests": max(1, (shape.rendered_bytes - 250) // 36),
        "scheduler_jobs": shape.scheduler_jobs,
        "task_jobs": shape.task_jobs,
        "jobs": shape.jobs,
        "logs": shape.logs,
        "step": shape.step_seconds,
    }
    seconds: dict[str, float] = {}
    with psycopg.connect(dsn) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        steps = [
            ("dag", FILL_DAGS),
            ("job", FILL_JOBS),
            ("dag_run", FILL_RUNS),
            ("task_instance", FILL_TASK_INSTANCES),
            ("log", FILL_LOG),
        ]
        if shape.mapped_per_run:
            steps.append(("task_instance (mapped)", FILL_MAPPED))
        if shape.xcom_bytes:
            steps.append(("xcom", FILL_XCOM))
        if shape.rendered_bytes:
            steps.append(("rendered_task_instance_fields", FILL_RENDERED))
        for name, statement in steps:
            started = time.perf_counter()
            connection.execute(statement, params)
            seconds[name] = time.perf_counter() - started
        connection.execute(SET_SEQUENCES)
    with psycopg.connect(dsn, autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute("VACUUM ANALYZE")
        seconds["vacuum"] = time.perf_counter() - started
    return seconds


def counts(dsn: str, tables: Sequence[str] = BIG_TABLES) -> dict[str, int]:
    found: dict[str, int] = {}
    with psycopg.connect(dsn) as connection:
        for table in tables:
            row = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            found[table] = int(row[0]) if row else 0
    return found


# -- keys ---------------------------------------------------------------------------------------


class LocalKeyService:
    """`sealing.KeyService` with a fixed local AES-256-GCM key instead of KMS (bench only): the data
    key is wrapped with the encryption context as associated data, as KMS binds it."""

    KEY_ID = "bench-local-key"

    def __init__(self, secret: bytes = b"mwaa-control benchmark wrapping key") -> None:
        self._aead = AESGCM(hashlib.sha256(secret).digest())

    @staticmethod
    def _aad(context: dict[str, str]) -> bytes:
        return json.dumps(context, sort_keys=True).encode()

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        plaintext, nonce = os.urandom(32), os.urandom(12)
        return plaintext, nonce + self._aead.encrypt(nonce, plaintext, self._aad(context)), self.KEY_ID

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes:
        return self._aead.decrypt(encrypted[:12], encrypted[12:], self._aad(context))


# -- the operations, each run in a child process -------------------------------------------------


def _identifier(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def op_copy_out(spec: dict[str, Any]) -> dict[str, Any]:
    folder = Path(spec["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    with psycopg.connect(spec["dsn"]) as connection:
        # One snapshot for every table, as the backup reads them.
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        seconds: dict[str, float] = {}
        with connection.cursor() as cursor:
            for table in spec["tables"]:
                started = time.perf_counter()
                statement = sql.SQL("COPY {} TO STDOUT (FORMAT csv)").format(_identifier(table))
                with (folder / f"{table}.csv").open("wb") as out, cursor.copy(statement) as copy:
                    for chunk in copy:
                        written += out.write(chunk)
                seconds[table] = time.perf_counter() - started
    return {"bytes": written, "tables": _slowest(seconds)}


def op_copy_in(spec: dict[str, Any]) -> dict[str, Any]:
    folder = Path(spec["dir"])
    seconds: dict[str, float] = {}
    with psycopg.connect(spec["dsn"]) as connection, connection.cursor() as cursor:
        for table in spec["tables"]:
            started = time.perf_counter()
            statement = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(_identifier(table))
            with (folder / f"{table}.csv").open("rb") as source, cursor.copy(statement) as copy:
                while data := source.read(1 << 20):
                    copy.write(data)
            seconds[table] = time.perf_counter() - started
        started = time.perf_counter()
    seconds["commit"] = time.perf_counter() - started
    return {"tables": _slowest(seconds)}


def _psql(dsn: str, script: str, stdout: int | None = None) -> None:
    """Runs a psql script (stdin), stopping at the first error."""
    done = subprocess.run(  # noqa: S603 - argv list; the script is ours
        [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"],
        input=script.encode(),
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")


def _quoted(table: str) -> str:
    return '"' + table.replace('"', '""') + '"'


def op_psql_out(spec: dict[str, Any]) -> dict[str, Any]:
    """psql's `\\copy ... TO file`: libpq and C writes, the fastest a client gets a table into files."""
    folder = Path(spec["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"]
    lines += [f"\\copy {_quoted(t)} TO '{folder / (t + '.csv')}' WITH (FORMAT csv)" for t in spec["tables"]]
    _psql(spec["dsn"], "\n".join([*lines, "COMMIT;", ""]))
    return {"bytes": sum((folder / f"{t}.csv").stat().st_size for t in spec["tables"])}


def op_psql_null(spec: dict[str, Any]) -> dict[str, Any]:
    """`COPY ... TO STDOUT` by psql into /dev/null: the server and libpq, no files."""
    lines = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"]
    lines += [f"COPY {_quoted(t)} TO STDOUT WITH (FORMAT csv);" for t in spec["tables"]]
    with open(os.devnull, "wb") as null:
        _psql(spec["dsn"], "\n".join([*lines, "COMMIT;", ""]), stdout=null.fileno())
    return {}


def op_psql_in(spec: dict[str, Any]) -> dict[str, Any]:
    """psql's `\\copy ... FROM file`, parents before children, one transaction."""
    folder = Path(spec["dir"])
    lines = ["BEGIN;"]
    lines += [f"\\copy {_quoted(t)} FROM '{folder / (t + '.csv')}' WITH (FORMAT csv)" for t in spec["tables"]]
    _psql(spec["dsn"], "\n".join([*lines, "COMMIT;", ""]))
    return {}


def _adbc_uri(dsn: str) -> str:
    fields = dict(part.split("=", 1) for part in dsn.split())
    return f"postgresql://{fields['user']}@{fields['host']}:{fields['port']}/{fields['dbname']}"


def op_adbc_out(spec: dict[str, Any]) -> dict[str, Any]:
    """Binary COPY into Arrow through ADBC's PostgreSQL driver (C++), written as Parquet+zstd: what the
    backup does minus sealing and checks, over binary COPY instead of CSV."""
    import adbc_driver_postgresql.dbapi as adbc  # noqa: PLC0415 - an optional measurement
    import pyarrow.parquet as pq  # noqa: PLC0415

    folder = Path(spec["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    rows = 0
    with adbc.connect(_adbc_uri(spec["dsn"])) as connection, connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for table in spec["tables"]:
            started = time.perf_counter()
            cursor.execute(f"SELECT * FROM {_quoted(table)}")  # noqa: S608 - catalog names
            reader = cursor.fetch_record_batch()
            with pq.ParquetWriter(folder / f"{table}.parquet", reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            seconds[table] = time.perf_counter() - started
    return {"rows": rows, "tables": _slowest(seconds)}


def op_adbc_in(spec: dict[str, Any]) -> dict[str, Any]:
    """adbc-out's Parquet files into a fresh database by ADBC's bulk ingest (binary COPY FROM)."""
    import adbc_driver_postgresql.dbapi as adbc  # noqa: PLC0415 - an optional measurement
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    folder = Path(spec["dir"])
    rows = 0
    seconds: dict[str, float] = {}
    with adbc.connect(_adbc_uri(spec["dsn"])) as connection, connection.cursor() as cursor:
        for table in spec["tables"]:
            started = time.perf_counter()
            parquet = pq.ParquetFile(folder / f"{table}.parquet")
            if parquet.metadata.num_rows:
                batches = pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches(65_536))
                rows += int(cursor.adbc_ingest(table, batches, mode="append"))
            seconds[table] = time.perf_counter() - started
        connection.commit()
    return {"rows": rows, "tables": _slowest(seconds)}


def _slowest(seconds: dict[str, float]) -> dict[str, float]:
    return {t: round(s, 2) for t, s in sorted(seconds.items(), key=lambda i: -i[1])[:6]}


NULL_MARK = r"\N"


def _naive_text(value: object) -> object:
    if value is None:
        return NULL_MARK
    if isinstance(value, bytes | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def op_naive_out(spec: dict[str, Any]) -> dict[str, Any]:
    folder = Path(spec["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    with psycopg.connect(spec["dsn"]) as connection:
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for table in spec["tables"]:
            with (
                (folder / f"{table}.csv").open("w", newline="", encoding="utf-8") as out,
                connection.cursor(name=f"naive_{table}") as cursor,
            ):
                cursor.itersize = 10_000
                cursor.execute(sql.SQL("SELECT * FROM {}").format(_identifier(table)))
                writer = csv.writer(out)
                writer.writerow([c.name for c in cursor.description or []])
                for row in cursor:
                    writer.writerow([_naive_text(v) for v in row])
                    rows += 1
    return {"rows": rows}


def op_naive_in(spec: dict[str, Any]) -> dict[str, Any]:
    folder = Path(spec["dir"])
    rows = 0
    csv.field_size_limit(1 << 30)
    with psycopg.connect(spec["dsn"]) as connection, connection.cursor() as cursor:
        for table in spec["tables"]:
            with (folder / f"{table}.csv").open(newline="", encoding="utf-8") as source:
                reader = csv.reader(source)
                header = next(reader)
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    _identifier(table),
                    sql.SQL(", ").join(_identifier(c) for c in header),
                    sql.SQL(", ").join(sql.Placeholder() for _ in header),
                )
                chunk: list[list[str | None]] = []
                for record in reader:
                    chunk.append([None if v == NULL_MARK else v for v in record])
                    if len(chunk) == 5_000:
                        cursor.executemany(statement, chunk)
                        rows += len(chunk)
                        chunk = []
                if chunk:
                    cursor.executemany(statement, chunk)
                    rows += len(chunk)
    return {"rows": rows}


def _arrow_pool() -> str:
    import pyarrow as pa  # noqa: PLC0415 - imported by the engine already

    return str(pa.default_memory_pool().backend_name)


def op_ours_backup(spec: dict[str, Any]) -> dict[str, Any]:
    from mwaa_control.metadata.backup import BackupEngine, BackupRequest  # noqa: PLC0415 - only this child needs it
    from mwaa_control.metadata.database import open_database  # noqa: PLC0415
    from mwaa_control.metadata.store import LocalStore  # noqa: PLC0415

    engine = BackupEngine(open_database(spec["url"]), LocalStore(Path(spec["store"])))
    manifest = engine.backup(
        BackupRequest(environment=ENVIRONMENT, keys=LocalKeyService(), source_fernet_key=spec["fernet_key"])
    )
    return {
        "backup_id": manifest.backup_id,
        "rows": sum(t.rows for t in manifest.tables.values()),
        "bytes": sum(f.bytes for t in manifest.tables.values() for f in t.files),
        "sealed": manifest.sealed_values,
        "arrow_pool": _arrow_pool(),
    }


def op_ours_restore(spec: dict[str, Any]) -> dict[str, Any]:
    from mwaa_control.metadata.database import open_database  # noqa: PLC0415 - only this child needs it
    from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest  # noqa: PLC0415
    from mwaa_control.metadata.store import LocalStore  # noqa: PLC0415

    engine = RestoreEngine(open_database(spec["url"]), LocalStore(Path(spec["store"])))
    report = engine.restore(
        RestoreRequest(
            environment=ENVIRONMENT,
            backup_id=spec["backup_id"],
            keys=LocalKeyService(),
            target_fernet_key=spec["fernet_key"],
            # A freshly migrated target holds no encrypted value that could prove the key its own.
            accept_unverifiable_fernet_key=True,
        )
    )
    return {
        "status": report.status,
        "inserted": sum(t.inserted for t in report.tables),
        "reencrypted": report.reencrypted_values,
    }


OPERATIONS = {
    "psql-out": op_psql_out,
    "psql-null": op_psql_null,
    "psql-in": op_psql_in,
    "adbc-out": op_adbc_out,
    "adbc-in": op_adbc_in,
    "copy-out": op_copy_out,
    "copy-in": op_copy_in,
    "naive-out": op_naive_out,
    "naive-in": op_naive_in,
    "ours-backup": op_ours_backup,
    "ours-restore": op_ours_restore,
}


def _rss_mb(field_name: str) -> float:
    """VmRSS (now) or VmHWM (peak so far) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _preload(op: str) -> None:
    """Imports what an operation needs before the clock starts: timings are of the work, and the RSS
    "at start" is the interpreter with its libraries."""
    if op.startswith("ours-"):
        # SQLAlchemy imports a dialect's modules at the first create_engine: 0.2 s of imports, not work.
        import sqlalchemy.dialects.postgresql.psycopg  # noqa: PLC0415, F401

        import mwaa_control.metadata.backup  # noqa: PLC0415
        import mwaa_control.metadata.restore  # noqa: PLC0415, F401


def _thread_profilers() -> list[Any]:
    """CPU-time profilers (time.thread_time) of this thread and of every thread started from now on:
    the backup's COPY loops, CSV parsing and Parquet encoding run in threads of their own, which a
    single cProfile of the calling thread never sees."""
    import cProfile  # noqa: PLC0415 - only when profiling
    import threading  # noqa: PLC0415

    profilers: list[Any] = []
    guard = threading.Lock()
    run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        with guard:
            profilers.append(profiler)
        profiler.enable()
        try:
            run(thread)
        finally:
            profiler.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign,assignment]
    main = cProfile.Profile(time.thread_time)
    profilers.append(main)
    main.enable()
    return profilers


def _dump_profiles(profilers: list[Any], path: str) -> None:
    """Every thread's profile, added up into one file (pstats)."""
    import pstats  # noqa: PLC0415 - only when profiling

    profilers[0].disable()
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        profiler.disable()
        stats.add(profiler)
    stats.dump_stats(path)


def child_main(raw: str) -> None:
    spec = json.loads(raw)
    operation = OPERATIONS[spec["op"]]
    _preload(spec["op"])
    result: dict[str, Any] = {"base_rss_mb": _rss_mb("VmRSS")}
    profilers = _thread_profilers() if spec.get("profile") else []
    started = time.perf_counter()
    result.update(operation(spec))
    result["seconds"] = time.perf_counter() - started
    if profilers:
        _dump_profiles(profilers, spec["profile"])
    result["peak_rss_mb"] = _rss_mb("VmHWM")
    Path(spec["result"]).write_text(json.dumps(result))


# -- the parent: orchestration, measurement, report ----------------------------------------------


@dataclass
class Measurement:
    name: str
    seconds: float
    peak_rss_mb: float
    base_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, pg: PostgresServer, work: Path, args: argparse.Namespace) -> None:
        self.pg = pg
        self.work = work
        self.args = args
        self.fernet_key = "bTzK3n0zvbV6Tvb0gYVw0zHyGj1sSgqGmFQm3nK0qzs="
        self.logs = work / "logs"
        self.logs.mkdir()
        self._serial = 0

    # PostgreSQL -------------------------------------------------------------------------------

    def admin(self, statement: sql.Composed | sql.SQL) -> None:
        with psycopg.connect(self.pg.dsn("postgres"), autocommit=True) as connection:
            connection.execute(statement)

    def configure(self, settings: dict[str, str]) -> None:
        """ALTER SYSTEM, then a restart (shared_buffers needs one) on the same port."""
        for name, value in settings.items():
            self.admin(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        assert self.pg.root is not None
        data, log = self.pg.root / "data", self.pg.root / "server.log"
        self.pg._service("pg_ctl", "restart", "-D", str(data), "-l", str(log), "-m", "fast", "-w", "-t", "60")

    def clone(self, name: str, template: str = TEMPLATE_DB) -> str:
        self.admin(sql.SQL("DROP DATABASE IF EXISTS {}").format(_identifier(name)))
        self.admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(_identifier(name), _identifier(template)))
        return name

    def drop(self, name: str) -> None:
        self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_identifier(name)))

    def migrate_template(self) -> float:
        # `localcloud` imports the whole local cloud (moto): the parent only, never the measured children.
        from localcloud.airflow.backend import VENVS_DIR  # noqa: PLC0415

        url = self.pg.create_database(TEMPLATE_DB)
        venv = VENVS_DIR / AIRFLOW_RELEASE
        airflow = venv / "bin" / "airflow"
        if not airflow.exists():
            raise SystemExit(f"Airflow {AIRFLOW_RELEASE} is not installed in {venv}: run `make airflow-venvs`")
        home = self.work / "airflow-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "PYTHONWARNINGS": "ignore",
            }
        )
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603 - argv list
            [str(airflow), "db", "migrate"], capture_output=True, text=True, env=env, cwd=home, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{done.stderr[-3000:]}")
        return time.perf_counter() - started

    # children ---------------------------------------------------------------------------------

    def run(self, name: str, spec: dict[str, Any], profile: bool = False) -> Measurement:
        """One operation in a fresh interpreter. Its peak RSS is the kernel's high-water mark of the
        child's own address space (VmHWM): `ru_maxrss` from wait4 would not do, as Linux carries the
        parent's RSS at fork into it across exec."""
        self._serial += 1
        tag = f"{self._serial:02d}-{name}"
        result_path = self.logs / f"{tag}.json"
        spec = {**spec, "op": name.split("@", maxsplit=1)[0], "result": str(result_path)}
        if profile:
            spec["profile"] = str(self.work / f"{tag}.prof")
        argv = [sys.executable, "-m", "bench.metadata_bench", "--child", json.dumps(spec)]
        with (self.logs / f"{tag}.out").open("wb") as out:
            returncode = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode  # noqa: S603
        if returncode != 0:
            tail = (self.logs / f"{tag}.out").read_text(errors="replace")[-4000:]
            raise SystemExit(f"{name} failed ({returncode}):\n{tail}")
        result = json.loads(result_path.read_text())
        seconds = float(result.pop("seconds"))
        base = float(result.pop("base_rss_mb"))
        peak = float(result.pop("peak_rss_mb"))
        if profile:
            result["profile"] = spec["profile"]
        return Measurement(name, seconds, peak, base, result)


def _best(runs: list[Measurement]) -> Measurement:
    best = min(runs, key=lambda m: m.seconds)
    best.peak_rss_mb = max(m.peak_rss_mb for m in runs)
    return best


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def _phase(label: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"... {label}", end="", flush=True)
    yield
    print(f" ({time.perf_counter() - started:.1f}s)", flush=True)


def _table_sets(pg: PostgresServer) -> tuple[list[str], list[str]]:
    """(tables the backup exports, in its order; tables a raw load writes, parents first): what the
    engine's catalog says, minus, for loading, tables `airflow db migrate` already seeds (log_template,
    slot_pool: the restore matches those rows rather than inserting them)."""
    import sqlalchemy as sa  # noqa: PLC0415 - the parent only

    from mwaa_control.metadata.catalog import Role  # noqa: PLC0415
    from mwaa_control.metadata.database import open_database  # noqa: PLC0415
    from mwaa_control.metadata.restore import RESTORED_ROLES  # noqa: PLC0415

    engine = sa.create_engine(pg.psycopg_url(TEMPLATE_DB))
    try:
        schema = open_database(engine).reflect()
    finally:
        engine.dispose()
    exported = [t.name for t in schema.ordered() if t.role is not Role.EXCLUDED]
    restored = [t.name for t in schema.ordered(RESTORED_ROLES)]
    seeded = {t for t, n in counts(pg.dsn(TEMPLATE_DB), restored).items() if n}
    return exported, [t for t in restored if t not in seeded]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metadata_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 100k DAG runs, 1M task instances, 1M logs")
    parser.add_argument(
        "--shapes", default="narrow,wide", help="comma-separated: narrow (many short rows), wide (XComs, mapped tasks)"
    )
    parser.add_argument("--small-factor", type=float, default=0.25, help="the second, smaller database for RSS")
    parser.add_argument("--shared-buffers", default="1GB", help="of the benchmark's PostgreSQL (tests use 64MB)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="run each fast measurement N times, keep the fastest (naive: once)"
    )
    parser.add_argument("--skip-naive-in", action="store_true", help="skip the (slow) row-by-row import")
    parser.add_argument("--skip-adbc", action="store_true", help="skip the binary COPY measurements (ADBC)")
    parser.add_argument("--skip-naive", action="store_true", help="skip both naive baselines")
    parser.add_argument("--profile", action="store_true", help="also profile ours-backup/-restore (cProfile)")
    parser.add_argument("--workdir", type=Path, default=None, help="where files and PostgreSQL go (a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    from localcloud.postgres import PostgresServer  # noqa: PLC0415 - see Bench.migrate_template

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mwaa-bench-", dir=args.workdir))
    os.chmod(work, 0o711)  # noqa: S103 - as root, PostgreSQL runs as `postgres` and must reach its data dir
    shapes = [Shape.at(args.scale, name.strip()) for name in args.shapes.split(",") if name.strip()]
    print(
        f"metadata backup/restore benchmark, scale {args.scale}; {os.cpu_count()} CPUs; work dir {work}",
        flush=True,
    )
    try:
        with PostgresServer(base_dir=work) as pg:
            bench = Bench(pg, work, args)
            bench.configure({**SERVER_SETTINGS, "shared_buffers": args.shared_buffers})
            with psycopg.connect(pg.dsn("postgres")) as connection:
                version, buffers = (
                    str((connection.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone() or ("?",))[0])
                    for n in ("server_version", "shared_buffers")
                )
            print(f"    PostgreSQL {version}, shared_buffers {buffers}, fsync off", flush=True)
            with _phase(f"airflow {AIRFLOW_RELEASE} db migrate"):
                bench.migrate_template()
            exported, loaded = _table_sets(pg)
            for shape in shapes:
                _bench_shape(bench, shape, exported, loaded)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


def _bench_shape(bench: Bench, shape: Shape, exported: list[str], loaded: list[str]) -> None:
    """Fills a source database of this shape (and one `--small-factor` its size), measures, reports."""
    args, pg = bench.args, bench.pg
    small = Shape.at(args.scale * args.small_factor, shape.name)
    print(f"=== shape {shape.describe()}", flush=True)
    for name, at in (("src", shape), ("src_small", small)):
        with _phase(f"filling {name} ({at.task_instances:,} task instances, {at.logs:,} logs)"):
            bench.clone(name)
            fill(pg.dsn(name), at)
    source_counts = counts(pg.dsn("src"), shape.tables)
    small_counts = counts(pg.dsn("src_small"), shape.tables)
    print(f"    src: {source_counts}", flush=True)
    results = _measure(bench, exported, loaded, source_counts, small_counts, shape.name)
    _report(results, args, source_counts, small_counts, bench.work, shape)
    if args.profile:
        _profile(bench, source_counts)
    for name in ("src", "src_small"):
        bench.drop(name)


def _restore_target(bench: Bench, name: str) -> str:
    bench.clone(name)
    return name


def _check_counts(bench: Bench, database: str, expected: dict[str, int], ledger: int, what: str) -> None:
    found = counts(bench.pg.dsn(database), list(expected))
    wanted = {**expected, "log": expected["log"] + ledger}
    if found != wanted:
        raise SystemExit(f"{what}: row counts differ from the source: {found} != {wanted}")


def _measure(
    bench: Bench, exported: list[str], loaded: list[str], source: dict[str, int], small: dict[str, int], shape: str
) -> dict[str, Measurement]:
    pg, work, args = bench.pg, bench.work, bench.args
    runs: dict[str, list[Measurement]] = {}

    def record(measurement: Measurement) -> Measurement:
        runs.setdefault(measurement.name, []).append(measurement)
        m = measurement
        detail = f"  slowest tables: {m.extra['tables']}" if "tables" in m.extra else ""
        print(f"    {m.name:<20} {m.seconds:8.2f}s  peak RSS {m.peak_rss_mb:6.0f} MB{detail}", flush=True)
        return measurement

    def load(name: str, spec: dict[str, Any], expected: dict[str, int], ledger: int, optional: bool = False) -> None:
        """One load into a fresh migrated database, its row counts checked, then dropped."""
        target = _restore_target(bench, "tgt_" + name.split("@", maxsplit=1)[0].replace("-", "_"))
        spec = {**spec, "dsn": pg.dsn(target), "url": pg.psycopg_url(target), "tables": loaded}
        if optional:
            done = _optional(record, bench, name, spec)
        else:
            record(bench.run(name, spec))
            done = True
        if done:
            _check_counts(bench, target, expected, ledger, name)
        bench.drop(target)

    for attempt in range(args.repeat):
        suffix = f"{shape}-r{attempt}"
        folders = {kind: work / f"{kind}-{suffix}" for kind in ("copy", "naive", "psql", "adbc", "store", "small")}
        print(f"--- measuring {shape} (round {attempt + 1} of {args.repeat})", flush=True)
        src = {"dsn": pg.dsn("src"), "tables": exported}
        record(bench.run("psql-out", {**src, "dir": str(folders["psql"])}))
        record(bench.run("psql-null", src))
        record(bench.run("copy-out", {**src, "dir": str(folders["copy"])}))
        adbc = not args.skip_adbc and _optional(record, bench, "adbc-out", {**src, "dir": str(folders["adbc"])})
        ours = {"store": str(folders["store"]), "fernet_key": bench.fernet_key}
        backup = record(bench.run("ours-backup", {**ours, "url": pg.psycopg_url("src")}))
        naive = attempt == 0 and not args.skip_naive
        if naive:
            record(bench.run("naive-out", {**src, "dir": str(folders["naive"])}))

        load("psql-in", {"dir": str(folders["psql"])}, source, 0)
        if adbc:
            load("adbc-in", {"dir": str(folders["adbc"])}, source, 0, optional=True)
        load("copy-in", {"dir": str(folders["copy"])}, source, 0)
        load("ours-restore", {**ours, "backup_id": backup.extra["backup_id"]}, source, 1)
        if naive and not args.skip_naive_in:
            load("naive-in", {"dir": str(folders["naive"])}, source, 0)

        little = {"store": str(folders["small"]), "fernet_key": bench.fernet_key}
        small_backup = record(bench.run("ours-backup@small", {**little, "url": pg.psycopg_url("src_small")}))
        load("ours-restore@small", {**little, "backup_id": small_backup.extra["backup_id"]}, small, 1)

        sizes = {"copy": _size(folders["copy"]), "naive": _size(folders["naive"]), "ours": _size(folders["store"])}
        runs.setdefault("sizes", []).append(Measurement("sizes", 0, 0, 0, sizes))
        if attempt < args.repeat - 1:
            for folder in folders.values():
                shutil.rmtree(folder, ignore_errors=True)
    return {name: _best(measured) for name, measured in runs.items()}


def _optional(record: Any, bench: Bench, name: str, spec: dict[str, Any]) -> bool:
    """A measurement that may not work (a driver's type support): reported, never fatal."""
    try:
        record(bench.run(name, spec))
    except SystemExit as failure:
        print(f"    {name:<20} failed: {str(failure).strip().splitlines()[-1][:300]}", flush=True)
        return False
    return True


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _report(
    results: dict[str, Measurement],
    args: argparse.Namespace,
    source: dict[str, int],
    small: dict[str, int],
    work: Path,
    shape: Shape,
) -> None:
    mb = 1 << 20
    sizes = results["sizes"].extra
    out_bytes = {
        "psql-out": int(results["psql-out"].extra.get("bytes", 0)),
        "copy-out": sizes["copy"],
        "ours-backup": sizes["ours"],
        "naive-out": sizes["naive"],
    }
    rows = sum(source.values())
    print()
    tables = ", ".join(source)
    print(
        f"=== results, {shape.name} shape: scale {args.scale} ({rows:,} rows in {tables});"
        f" fast measurements best of {args.repeat}"
    )
    print(f"{'operation':<20} {'seconds':>9} {'rows/s':>11} {'peak RSS MB':>12} {'(at start)':>11} {'output MB':>10}")
    operations = (
        "psql-out",
        "psql-null",
        "copy-out",
        "adbc-out",
        "ours-backup",
        "naive-out",
        "psql-in",
        "copy-in",
        "adbc-in",
        "ours-restore",
    )
    for name in (*operations, "naive-in"):
        if name not in results:
            continue
        m = results[name]
        size = f"{out_bytes[name] / mb:10.0f}" if name in out_bytes else f"{'':>10}"
        print(
            f"{name:<20} {m.seconds:9.2f} {rows / m.seconds:11,.0f} {m.peak_rss_mb:12.0f} {m.base_rss_mb:11.0f} {size}"
        )
    small_rows = sum(small.values())
    for name in ("ours-backup@small", "ours-restore@small"):
        m = results[name]
        print(
            f"{name:<20} {m.seconds:9.2f} {small_rows / m.seconds:11,.0f} {m.peak_rss_mb:12.0f} {m.base_rss_mb:11.0f}"
        )
    print()
    backup, restore = results["ours-backup"], results["ours-restore"]
    lines: list[tuple[str, float, str]] = [
        ("backup / psql-out", backup.seconds / results["psql-out"].seconds, f"<= {BACKUP_VS_COPY}x"),
        ("restore / psql-in", restore.seconds / results["psql-in"].seconds, f"<= {RESTORE_VS_COPY}x"),
        ("backup / psycopg copy-out", backup.seconds / results["copy-out"].seconds, "(Python driver's COPY)"),
        ("restore / psycopg copy-in", restore.seconds / results["copy-in"].seconds, "(Python driver's COPY)"),
        ("psql-null / psql-out", results["psql-null"].seconds / results["psql-out"].seconds, "(server + libpq share)"),
    ]
    for name, baseline in (("adbc-out", "psql-out"), ("adbc-in", "psql-in")):
        if name in results:
            note = "(binary COPY via ADBC, to/from Parquet)"
            lines.append((f"{name} / {baseline}", results[name].seconds / results[baseline].seconds, note))
    if "naive-out" in results:
        lines.append(("naive-out / backup", results["naive-out"].seconds / backup.seconds, "(speed-up over naive)"))
    if "naive-in" in results:
        lines.append(("naive-in / restore", results["naive-in"].seconds / restore.seconds, "(speed-up over naive)"))
    verdicts: list[tuple[str, bool]] = [
        (f"{shape.name}: backup within {BACKUP_VS_COPY}x psql COPY TO file", lines[0][1] <= BACKUP_VS_COPY),
        (f"{shape.name}: restore within {RESTORE_VS_COPY}x psql COPY FROM file", lines[1][1] <= RESTORE_VS_COPY),
        (
            f"{shape.name}: backup peak RSS {backup.peak_rss_mb:.0f} MB < {RSS_LIMIT_MB:.0f} MB",
            backup.peak_rss_mb < RSS_LIMIT_MB,
        ),
        (
            f"{shape.name}: restore peak RSS {restore.peak_rss_mb:.0f} MB < {RSS_LIMIT_MB:.0f} MB",
            restore.peak_rss_mb < RSS_LIMIT_MB,
        ),
    ]
    for name in ("backup", "restore"):
        big, little = results[f"ours-{name}"], results[f"ours-{name}@small"]
        ratio = big.peak_rss_mb / little.peak_rss_mb
        lines.append(
            (
                f"{name} peak RSS {args.small_factor:g}x -> 1x",
                ratio,
                f"{little.peak_rss_mb:.0f} -> {big.peak_rss_mb:.0f} MB",
            )
        )
        verdicts.append(
            (
                f"{shape.name}: {name} RSS flat ({ratio:.2f}x for {1 / args.small_factor:g}x the data,"
                f" <= {FLAT_TOLERANCE})",
                ratio <= FLAT_TOLERANCE,
            )
        )
    print(f"{'ratio':<32} {'value':>7}")
    for label, value, note in lines:
        print(f"{label:<32} {value:6.2f}x  {note}")
    print()
    for label, ok in verdicts:
        print(f"{_verdict(ok)}  {label}")
    print(f"(output MB: psql and psycopg COPY csv, our Parquet+zstd backup, naive csv; files under {work})")
    print(f"(Arrow memory pool of the backup: {results['ours-backup'].extra.get('arrow_pool', '?')})")


def _profile(bench: Bench, source: dict[str, int]) -> None:
    import pstats  # noqa: PLC0415 - only when profiling

    pg, work = bench.pg, bench.work
    print("\n=== cProfile of ours-backup and ours-restore, CPU time of every thread (inflated by the profiler)")
    store = work / "store-profile"
    spec = {"url": pg.psycopg_url("src"), "store": str(store), "fernet_key": bench.fernet_key}
    backup = bench.run("ours-backup", spec, profile=True)
    target = _restore_target(bench, "tgt_profile")
    spec = {
        "url": pg.psycopg_url(target),
        "store": str(store),
        "backup_id": backup.extra["backup_id"],
        "fernet_key": bench.fernet_key,
    }
    restore = bench.run("ours-restore", spec, profile=True)
    _check_counts(bench, target, source, 1, "profiled ours-restore")
    bench.drop(target)
    for measurement in (backup, restore):
        print(f"\n--- {measurement.name}: {measurement.seconds:.1f}s under cProfile; top functions by own CPU time")
        stats = pstats.Stats(measurement.extra["profile"], stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    sys.exit(main())
