"""Real (freshly migrated) Airflow 2.11 and 2.9 SQLite metadata databases with a few rows written
the way Airflow writes them, for the refusal and authentication tests."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import LocalStore

NOW = "2026-11-21 10:00:00.000000"


@dataclass
class Templates:
    v211: Path
    v292: Path


@dataclass
class Env:
    path: Path
    url: str
    fernet: str
    store: LocalStore
    keys: KmsKeyService

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return db.execute(statement, params).fetchall()

    def dump(self) -> bytes:
        with sqlite3.connect(self.path) as db:
            return "\n".join(db.iterdump()).encode()


def make_env(template: Path, tmp: Path, name: str, kms: Any, store: LocalStore | None = None) -> Env:
    path = tmp / f"{name}.db"
    shutil.copy(template, path)
    keys = KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])
    return Env(path, f"sqlite:///{path}", Fernet.generate_key().decode(), store or LocalStore(tmp / "b"), keys)


def populate(env: Env, *, running: bool = False, secrets: bool = True, conf: bytes | None = None) -> None:
    """Two DAGs, a run (its conf pickled as Airflow 2 pickles it, when given) and a task instance;
    with `secrets`, an encrypted variable."""
    if secrets:
        token = Fernet(env.fernet.encode()).encrypt(b"SEKRET-value").decode()
        env.sql("INSERT INTO variable (key, val, is_encrypted) VALUES ('k', ?, 1)", (token,))
    for dag_id, paused in (("etl", 0), ("reports", 1)):
        env.sql(
            "INSERT INTO dag (dag_id, is_paused, is_active, max_active_tasks, max_consecutive_failed_dag_runs,"
            " has_task_concurrency_limits) VALUES (?, ?, 1, 16, 0, 0)",
            (dag_id, paused),
        )
    env.sql(
        "INSERT INTO dag_run (dag_id, execution_date, run_id, run_type, state, clear_number, log_template_id, conf)"
        " VALUES ('etl', ?, 'manual__1', 'manual', ?, 0, 1, ?)",
        (NOW, "running" if running else "success", conf),
    )
    env.sql(
        "INSERT INTO task_instance (task_id, dag_id, run_id, map_index, state, pool, pool_slots, try_number)"
        " VALUES ('load', 'etl', 'manual__1', -1, ?, 'default_pool', 1, 1)",
        ("running" if running else "success",),
    )


def add_datasets(env: Env, uris: list[str], *, events: bool) -> None:
    """Datasets as the DAG processor registers them (in this order: ids follow it), and, with
    `events`, one dataset event per dataset, recorded by the etl run's load task."""
    for uri in uris:
        env.sql(
            "INSERT INTO dataset (uri, extra, created_at, updated_at, is_orphaned) VALUES (?, ?, ?, ?, 0)",
            (uri, f'{{"registered_by": "{env.path.stem}"}}', NOW, NOW),
        )
        if events:
            env.sql(
                "INSERT INTO dataset_event (dataset_id, extra, source_task_id, source_dag_id, source_run_id,"
                " source_map_index, timestamp) SELECT id, ?, 'load', 'etl', 'manual__1', -1, ? FROM dataset"
                " WHERE uri = ?",
                (f'{{"for": "{uri}"}}', NOW, uri),
            )


def add_history_without_keys(env: Env, tag: str) -> None:
    """A scheduler job, a trigger and audit-log rows: tables without a natural key."""
    env.sql(
        "INSERT INTO job (dag_id, state, job_type, start_date, latest_heartbeat, hostname, unixname)"
        " VALUES (NULL, 'success', 'SchedulerJob', ?, ?, ?, 'airflow')",
        (NOW, NOW, f"scheduler-{tag}"),
    )
    env.sql(
        "INSERT INTO trigger (classpath, kwargs, created_date) VALUES (?, ?, ?)",
        (f"seed.triggers.{tag}", '{"poll": 5}', NOW),
    )
    env.sql(
        "INSERT INTO log (dttm, event, dag_id, owner, extra) VALUES (?, ?, 'etl', 'admin', ?)",
        (NOW, f"edit-{tag}", '{"what": "pause"}'),
    )


def target_rows(env: Env) -> None:
    """What a freshly created environment already holds before any restore: a dataset its DAG
    processor registered, its own scheduler job, a pool and a connection encrypted under its key
    (and no variable: the old key check only looked at variables)."""
    add_datasets(env, ["s3://target/registered-first"], events=False)
    env.sql(
        "INSERT INTO job (dag_id, state, job_type, start_date, latest_heartbeat, hostname, unixname)"
        " VALUES (NULL, 'running', 'SchedulerJob', ?, ?, 'target-scheduler', 'airflow')",
        (NOW, NOW),
    )
    env.sql("INSERT INTO slot_pool (pool, slots, description, include_deferred) VALUES ('target_pool', 3, '', 0)")
    own_connection(env)


def own_connection(env: Env) -> None:
    """A connection the environment's operators made, its password encrypted under the
    environment's Fernet key: what proves a Fernet key given for a restore is this one's."""
    token = Fernet(env.fernet.encode()).encrypt(b"target's own password").decode()
    env.sql(
        "INSERT INTO connection (conn_id, conn_type, password, is_encrypted, is_extra_encrypted)"
        " VALUES ('target_conn', 'http', ?, 1, 0)",
        (token,),
    )
