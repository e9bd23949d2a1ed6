"""Metadata export and import DAGs for MWAA, deployed by the control plane to the environment's DAG
folder (the `mwaa_control` package comes in plugins.zip, see the README).

The engine needs the metadata database. On Airflow 2 it runs over Airflow's own engine
(`airflow.settings.engine`; the manifest says path "database"). Airflow 3 removes the ORM from task
code, so there it runs over a connection the task opens itself with the credentials MWAA 3 workers
carry (`mwaa_control.metadata.worker_database`; path "worker-database"). An Airflow 3 worker
without them fails the task at once, before anything is paused: run history could not be backed up.

Both are triggered by the pause/resume workflow through the CLI token API with a conf like

    {"environment": "etl-prod", "location": "s3://bucket/prefix", "kms_key_id": "arn:aws:kms:...",
     "drain": {"timeout": 1800, "on_timeout": "abort", "leave_paused": true},   # export only
     "backup_id": "20261121T213305Z-1a2b3c4d",    # import: required; export: optional (the workflow's)
     "source_environment": "etl-prod-old",             # import only, optional: another env's backup
     "mwaa_control": {"callback_id": "...", "environment": "...", "table": "...", "region": "..."}}

Both need the KMS key: the export's backup is authenticated with it (a backup without is refused
by restores), and the import restores only an authenticated backup, never an unauthenticated one,
whatever the conf says.

and report back to Step Functions through the callback contract: the result (backup id, row
counts) on success, the error on failure. Their own runs are never exported (`mwaa_control_`
prefix), so a restore cannot bring back a half-finished export.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

try:  # Airflow 3 (the Task SDK and the standard provider); Airflow 2 has the older locations only
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
    from airflow.operators.python import PythonOperator

EXPORT_DAG_ID = "mwaa_control_metadata_export"
IMPORT_DAG_ID = "mwaa_control_metadata_import"
HEARTBEAT_SECONDS = 120
"""Well inside the pause workflow's default HeartbeatSeconds (900)."""


def _settings(conf: dict[str, Any]) -> tuple[str, str, str]:
    missing = [k for k in ("environment", "location", "kms_key_id") if not conf.get(k)]
    if missing:
        raise ValueError(f"the run conf needs {', '.join(missing)} (the KMS key authenticates every backup)")
    return str(conf["environment"]), str(conf["location"]), str(conf["kms_key_id"])


def _keys(kms_key_id: str) -> Any:
    from mwaa_control.adapters.clients import client
    from mwaa_control.metadata.sealing import KmsKeyService

    return KmsKeyService(client("kms"), kms_key_id)


NO_CREDENTIALS = (
    "this Airflow 3 environment's workers carry no database credentials (DB_SECRETS/POSTGRES_*): "
    "run history cannot be backed up; pausing it would lose it (a pause that accepts that backs up "
    "through the REST API instead: mwaactl pause --accept-rest-losses)"
)


def _airflow_major() -> int:
    import airflow

    return int(str(airflow.__version__).split(".", maxsplit=1)[0])


def _database() -> Any:
    """The engine's database: Airflow's own engine on Airflow 2; on Airflow 3 (no ORM in task code)
    a connection of this task's own, from the worker's database variables (_backup_path says which)."""
    import os

    from mwaa_control.metadata.database import open_database

    if _airflow_major() < 3:
        from airflow import settings

        return open_database(settings.engine)
    from mwaa_control.metadata.worker_database import NoWorkerDatabase, worker_database

    found = worker_database(os.environ)
    if found is None:
        raise NoWorkerDatabase(NO_CREDENTIALS)
    return open_database(found.engine())


def _backup_path() -> str:
    """What the manifest records as the path the backup took (see _database)."""
    return "database" if _airflow_major() < 3 else "worker-database"


def export_metadata(**context: Any) -> dict[str, Any]:
    import airflow
    from airflow.configuration import conf as airflow_conf

    from mwaa_control.metadata.backup import BackupEngine, BackupRequest, Drain
    from mwaa_control.metadata.store import open_store

    conf = context["dag_run"].conf or {}
    environment, location, kms_key_id = _settings(conf)
    # First: an Airflow 3 worker without database credentials fails here, before any DAG is paused.
    database = _database()
    drain = conf.get("drain")
    if drain is True:
        drain = {}
    elif drain not in (None, False) and not isinstance(drain, dict):
        raise ValueError("conf drain is true, false or an object {timeout, poll, on_timeout, leave_paused}")
    request = BackupRequest(
        environment=environment,
        keys=_keys(kms_key_id),
        source_fernet_key=airflow_conf.get("core", "fernet_key", fallback=None),
        airflow_version=airflow.__version__,
        drain=Drain(**drain) if isinstance(drain, dict) else None,  # unknown keys fail here, before any work
        # The pause workflow names the backup (its snapshot is stored under the same id).
        backup_id=str(conf["backup_id"]) if conf.get("backup_id") else None,
        path=_backup_path(),
    )
    # A run of the pause workflow first proves its step still waits: a run that started late (queued
    # behind busy workers, or after the workflow gave up) must not pause every DAG for nobody.
    _workflow_still_waits(conf)
    with _heartbeats(conf):
        manifest = BackupEngine(database, open_store(location, kms_key_id=kms_key_id)).backup(request)
    try:
        # The drain left DAGs paused for the delete that follows: if nobody waits any more (the step
        # timed out while the export ran), nothing will delete or resume this environment.
        _workflow_still_waits(conf)
    except Exception:
        if request.drain is not None and request.drain.leave_paused:
            _put_pause_states_back(database, manifest.pause_states)
        raise
    return {
        "backup_id": manifest.backup_id,
        "environment": manifest.environment,
        "tables": len(manifest.tables),
        "rows": sum(t.rows for t in manifest.tables.values()),
        "in_flight": len(manifest.in_flight),
        "path": manifest.path,
    }


def import_metadata(**context: Any) -> dict[str, Any]:
    from mwaa_control.metadata.store import open_store

    conf = context["dag_run"].conf or {}
    environment, location, kms_key_id = _settings(conf)
    store = open_store(location, kms_key_id=kms_key_id)
    # Never "the latest": after a failed resume, the latest backup may be of the empty replacement.
    backup_id = conf.get("backup_id")
    if not backup_id:
        raise ValueError("the run conf needs backup_id (the workflow passes the one its export made)")
    with _heartbeats(conf):
        report = _restore(store, environment, backup_id, kms_key_id, conf)
    return {
        "backup_id": backup_id,
        "source_environment": str(conf.get("source_environment") or environment),
        "status": report.status,
        "inserted": sum(t.inserted for t in report.tables),
        "matched": sum(t.matched for t in report.tables),
        "restore_id": report.restore_id,
        "seconds": round((report.finished_at - report.started_at).total_seconds(), 3),
    }


def _restore(store: Any, environment: str, backup_id: str, kms_key_id: str, conf: dict[str, Any]) -> Any:
    from airflow.configuration import conf as airflow_conf

    from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest

    return RestoreEngine(_database(), store).restore(
        RestoreRequest(
            environment=environment,
            backup_id=backup_id,
            keys=_keys(kms_key_id),
            target_fernet_key=airflow_conf.get("core", "fernet_key", fallback=None),
            source_environment=str(conf.get("source_environment") or environment),
            allow_unauthenticated=False,  # never from a run conf: anyone who can trigger could ask
            # The key is this environment's own [core] fernet_key: the target's by construction,
            # even when a new environment holds no encrypted value that could prove it.
            accept_unverifiable_fernet_key=True,
        )
    )


def _workflow_still_waits(conf: dict[str, Any]) -> None:
    """For a run the control plane triggered: one heartbeat, which fails (and fails the task before
    anything is paused) when the waiting step is gone: timed out, stopped, or already reported."""
    from mwaa_control.airflow.callback import from_conf

    callback = from_conf(conf)
    if callback is not None:
        callback.heartbeat()


def _put_pause_states_back(database: Any, states: dict[str, bool]) -> None:
    """Unpause the DAGs that were unpaused before the drain, over the engine's own connection (no
    ORM: Airflow 3 forbids it in task code)."""
    unpaused = sorted(dag_id for dag_id, paused in states.items() if paused is False)
    for start in range(0, len(unpaused), 500):
        chunk = unpaused[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        database.run(f"UPDATE dag SET is_paused = ? WHERE dag_id IN ({marks})", (False, *chunk))  # noqa: S608


@contextmanager
def _heartbeats(conf: dict[str, Any]) -> Iterator[None]:
    """Keeps the waiting workflow step alive while the work runs (its HeartbeatSeconds)."""
    from mwaa_control.airflow.callback import from_conf

    callback = from_conf(conf)
    if callback is None:
        yield
        return
    with callback.heartbeats(every=HEARTBEAT_SECONDS):
        yield


def report_result(task: str, **context: Any) -> None:
    """Tell the waiting workflow the outcome, with the result of the work."""
    from mwaa_control.airflow.callback import from_conf

    callback = from_conf(context["dag_run"].conf)
    if callback is not None:
        callback.success(context["ti"].xcom_pull(task_ids=task) or {})


def report_failure(context: dict[str, Any]) -> None:
    from mwaa_control.airflow.callback import report_failure as report

    report(context)


def report_work_failure(context: dict[str, Any]) -> None:
    """The work task failed: the workflow gets the exception's type and message (the engine's
    messages name tables, rows and ids, never values), not only "the run failed"."""
    from mwaa_control.airflow.callback import CallbackError, from_conf

    callback = from_conf(context["dag_run"].conf)
    error = context.get("exception")
    if callback is None or error is None:
        return
    with suppress(CallbackError):  # already reported (the DAG-level callback may run first)
        callback.failure(type(error).__name__, str(error)[:4000])


for dag_id, work, task_id in (
    (EXPORT_DAG_ID, export_metadata, "export_metadata"),
    (IMPORT_DAG_ID, import_metadata, "import_metadata"),
):
    with DAG(
        dag_id,
        start_date=datetime(2024, 1, 1),
        schedule=None,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        on_failure_callback=report_failure,
        tags=["mwaa-control"],
        doc_md=__doc__,
    ) as dag:
        done = PythonOperator(task_id=task_id, python_callable=work, retries=0, on_failure_callback=report_work_failure)
        report = PythonOperator(
            task_id="report_to_workflow", python_callable=report_result, op_kwargs={"task": task_id}
        )
        done >> report
    globals()[dag_id] = dag
