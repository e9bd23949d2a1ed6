"""Metadata backup/restore benchmark (issue 4: "metadata backup/restore must be fast").

    uv run --locked python -m bench.metadata_bench [--scale 1.0] [--skip-naive-in] [--repeat N] [--profile]

Builds a synthetic Airflow 2.11 metadata database in a throwaway PostgreSQL (the real schema, made by
`airflow db migrate`; at scale 1.0: 100 DAGs, 100,000 DAG runs, 1,000,000 task instances, 20,000
jobs, 1,000,000 audit log rows), then times, each in a fresh child process whose peak RSS is the
kernel's high-water mark of its memory (VmHWM):

  copy-out      raw `COPY <table> TO STDOUT (FORMAT csv)` of every table the backup exports, to files
  ours-backup   BackupEngine into a LocalStore (Parquet, zstd, secrets sealed)
  naive-out     cursor iteration and `csv.writer.writerow` per row, one file per table
  copy-in       raw `COPY <table> FROM STDIN (FORMAT csv)` of those files into a fresh migrated
                database, parents before children, one transaction
  ours-restore  RestoreEngine into a fresh migrated database
  naive-in      `csv.reader` and row-by-row executemany INSERTs into a fresh migrated database,
                one transaction

and ours-backup/ours-restore again on a database a quarter the size, to see whether memory grows
with the data. The machine is shared and noisy, so the verdicts are ratios of timings taken in the
same run, and each fast measurement runs `--repeat N` times (3 by default) with the fastest kept;
the naive baselines, ten times slower, run once. Targets: backup <= 1.5x copy-out, restore <= 2x
copy-in, peak RSS < 300 MB and flat as the database grows.

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
# Targets of the issue.
BACKUP_VS_COPY = 1.5
RESTORE_VS_COPY = 2.0
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

    @classmethod
    def at(cls, scale: float) -> Shape:
        dags = max(1, round(100 * scale))
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
        return self.runs * self.tasks_per_run

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
        "tis": shape.task_instances,
        "scheduler_jobs": shape.scheduler_jobs,
        "task_jobs": shape.task_jobs,
        "jobs": shape.jobs,
        "logs": shape.logs,
        "step": shape.step_seconds,
    }
    seconds: dict[str, float] = {}
    with psycopg.connect(dsn) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        for name, statement in (
            ("dag", FILL_DAGS),
            ("job", FILL_JOBS),
            ("dag_run", FILL_RUNS),
            ("task_instance", FILL_TASK_INSTANCES),
            ("log", FILL_LOG),
        ):
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
        )
    )
    return {
        "status": report.status,
        "inserted": sum(t.inserted for t in report.tables),
        "reencrypted": report.reencrypted_values,
    }


OPERATIONS = {
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
        import mwaa_control.metadata.backup  # noqa: PLC0415
        import mwaa_control.metadata.restore  # noqa: PLC0415, F401


def child_main(raw: str) -> None:
    spec = json.loads(raw)
    operation = OPERATIONS[spec["op"]]
    _preload(spec["op"])
    result: dict[str, Any] = {"base_rss_mb": _rss_mb("VmRSS")}
    profiler = None
    if spec.get("profile"):
        import cProfile  # noqa: PLC0415 - only when profiling

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    result.update(operation(spec))
    result["seconds"] = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
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
    parser.add_argument("--small-factor", type=float, default=0.25, help="the second, smaller database for RSS")
    parser.add_argument("--shared-buffers", default="1GB", help="of the benchmark's PostgreSQL (tests use 64MB)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="run each fast measurement N times, keep the fastest (naive: once)"
    )
    parser.add_argument("--skip-naive-in", action="store_true", help="skip the (slow) row-by-row import")
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
    shape, small = Shape.at(args.scale), Shape.at(args.scale * args.small_factor)
    print(
        f"metadata backup/restore benchmark, scale {args.scale}: {shape.dags} DAGs, {shape.runs:,} DAG runs, "
        f"{shape.task_instances:,} task instances, {shape.jobs:,} jobs, {shape.logs:,} log rows; "
        f"{os.cpu_count()} CPUs; work dir {work}",
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
            for name, at in (("src", shape), ("src_small", small)):
                with _phase(f"filling {name} ({at.task_instances:,} task instances, {at.logs:,} logs)"):
                    bench.clone(name)
                    fill(pg.dsn(name), at)
            source_counts = counts(pg.dsn("src"))
            small_counts = counts(pg.dsn("src_small"))
            print(f"    src: {source_counts}", flush=True)
            results = _measure(bench, exported, loaded, source_counts, small_counts)
            _report(results, args, source_counts, small_counts, work)
            if args.profile:
                _profile(bench, source_counts)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


def _restore_target(bench: Bench, name: str) -> str:
    bench.clone(name)
    return name


def _check_counts(bench: Bench, database: str, expected: dict[str, int], ledger: int, what: str) -> None:
    found = counts(bench.pg.dsn(database), list(expected))
    wanted = {**expected, "log": expected["log"] + ledger}
    if found != wanted:
        raise SystemExit(f"{what}: row counts differ from the source: {found} != {wanted}")


def _measure(
    bench: Bench, exported: list[str], loaded: list[str], source: dict[str, int], small: dict[str, int]
) -> dict[str, Measurement]:
    pg, work, args = bench.pg, bench.work, bench.args
    runs: dict[str, list[Measurement]] = {}

    def record(measurement: Measurement) -> Measurement:
        runs.setdefault(measurement.name, []).append(measurement)
        m = measurement
        detail = f"  slowest tables: {m.extra['tables']}" if "tables" in m.extra else ""
        print(f"    {m.name:<20} {m.seconds:8.2f}s  peak RSS {m.peak_rss_mb:6.0f} MB{detail}", flush=True)
        return measurement

    for attempt in range(args.repeat):
        suffix = f"r{attempt}"
        copy_dir, naive_dir = work / f"copy-{suffix}", work / f"naive-{suffix}"
        store, small_store = work / f"store-{suffix}", work / f"store-small-{suffix}"
        print(f"--- measuring (round {attempt + 1} of {args.repeat})", flush=True)
        record(bench.run("copy-out", {"dsn": pg.dsn("src"), "dir": str(copy_dir), "tables": exported}))
        backup = record(
            bench.run(
                "ours-backup", {"url": pg.psycopg_url("src"), "store": str(store), "fernet_key": bench.fernet_key}
            )
        )
        first = attempt == 0
        if first and not args.skip_naive:
            record(bench.run("naive-out", {"dsn": pg.dsn("src"), "dir": str(naive_dir), "tables": exported}))

        target = _restore_target(bench, "tgt_copy")
        record(bench.run("copy-in", {"dsn": pg.dsn(target), "dir": str(copy_dir), "tables": loaded}))
        _check_counts(bench, target, source, 0, "copy-in")
        bench.drop(target)

        target = _restore_target(bench, "tgt_ours")
        spec = {
            "url": pg.psycopg_url(target),
            "store": str(store),
            "backup_id": backup.extra["backup_id"],
            "fernet_key": bench.fernet_key,
        }
        record(bench.run("ours-restore", spec))
        _check_counts(bench, target, source, 1, "ours-restore")
        bench.drop(target)

        if first and not (args.skip_naive or args.skip_naive_in):
            target = _restore_target(bench, "tgt_naive")
            record(bench.run("naive-in", {"dsn": pg.dsn(target), "dir": str(naive_dir), "tables": loaded}))
            _check_counts(bench, target, source, 0, "naive-in")
            bench.drop(target)

        name = "ours-backup@small"
        spec = {"url": pg.psycopg_url("src_small"), "store": str(small_store), "fernet_key": bench.fernet_key}
        small_backup = record(bench.run(name, spec))
        target = _restore_target(bench, "tgt_small")
        spec = {
            "url": pg.psycopg_url(target),
            "store": str(small_store),
            "backup_id": small_backup.extra["backup_id"],
            "fernet_key": bench.fernet_key,
        }
        record(bench.run("ours-restore@small", spec))
        _check_counts(bench, target, small, 1, "ours-restore at the small scale")
        bench.drop(target)

        runs.setdefault("sizes", []).append(
            Measurement("sizes", 0, 0, 0, {"copy": _size(copy_dir), "naive": _size(naive_dir), "ours": _size(store)})
        )
        for folder in (copy_dir, naive_dir, store, small_store):
            if attempt < args.repeat - 1:
                shutil.rmtree(folder, ignore_errors=True)
    return {name: _best(measured) for name, measured in runs.items()}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _report(
    results: dict[str, Measurement],
    args: argparse.Namespace,
    source: dict[str, int],
    small: dict[str, int],
    work: Path,
) -> None:
    mb = 1 << 20
    sizes = results["sizes"].extra
    out_bytes = {"copy-out": sizes["copy"], "ours-backup": sizes["ours"], "naive-out": sizes["naive"]}
    rows = sum(source.values())
    print()
    tables = ", ".join(source)
    print(f"=== results: scale {args.scale} ({rows:,} rows in {tables}); fast measurements best of {args.repeat}")
    print(f"{'operation':<20} {'seconds':>9} {'rows/s':>11} {'peak RSS MB':>12} {'(at start)':>11} {'output MB':>10}")
    for name in ("copy-out", "ours-backup", "naive-out", "copy-in", "ours-restore", "naive-in"):
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
        ("backup / copy-out", backup.seconds / results["copy-out"].seconds, f"<= {BACKUP_VS_COPY}x"),
        ("restore / copy-in", restore.seconds / results["copy-in"].seconds, f"<= {RESTORE_VS_COPY}x"),
    ]
    if "naive-out" in results:
        lines.append(("naive-out / backup", results["naive-out"].seconds / backup.seconds, "(speed-up over naive)"))
    if "naive-in" in results:
        lines.append(("naive-in / restore", results["naive-in"].seconds / restore.seconds, "(speed-up over naive)"))
    verdicts: list[tuple[str, bool]] = [
        ("backup within 1.5x raw COPY", lines[0][1] <= BACKUP_VS_COPY),
        ("restore within 2x raw COPY", lines[1][1] <= RESTORE_VS_COPY),
        (f"backup peak RSS {backup.peak_rss_mb:.0f} MB < {RSS_LIMIT_MB:.0f} MB", backup.peak_rss_mb < RSS_LIMIT_MB),
        (f"restore peak RSS {restore.peak_rss_mb:.0f} MB < {RSS_LIMIT_MB:.0f} MB", restore.peak_rss_mb < RSS_LIMIT_MB),
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
                f"{name} RSS flat ({ratio:.2f}x for {1 / args.small_factor:g}x the data, <= {FLAT_TOLERANCE})",
                ratio <= FLAT_TOLERANCE,
            )
        )
    print(f"{'ratio':<32} {'value':>7}")
    for label, value, note in lines:
        print(f"{label:<32} {value:6.2f}x  {note}")
    print()
    for label, ok in verdicts:
        print(f"{_verdict(ok)}  {label}")
    print(f"(output MB: raw COPY csv, our Parquet+zstd backup, naive csv; working files under {work})")
    print(f"(Arrow memory pool of the backup: {results['ours-backup'].extra.get('arrow_pool', '?')})")


def _profile(bench: Bench, source: dict[str, int]) -> None:
    import pstats  # noqa: PLC0415 - only when profiling

    pg, work = bench.pg, bench.work
    print("\n=== cProfile of ours-backup and ours-restore (timings inflated by the profiler)")
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
        print(f"\n--- {measurement.name}: {measurement.seconds:.1f}s under cProfile; top functions by own time")
        stats = pstats.Stats(measurement.extra["profile"], stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    sys.exit(main())
