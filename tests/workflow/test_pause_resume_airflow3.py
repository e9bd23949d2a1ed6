"""Pause and resume of Airflow 3.0.6 environments on the local cloud: the real ASL, the real Lambdas,
real Airflow 3 on a PostgreSQL metadata database, and the export/import DAGs running the engine over
the database credentials the emulated workers carry (DB_SECRETS/POSTGRES_*), with Airflow's ORM
blocked in task code as on a real Airflow 3 worker. Without those credentials the export refuses the
pause before anything is paused, and nothing is deleted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from localcloud import LocalCloud
from localcloud.airflow.backend import AirflowBackend
from localcloud.airflow.seed_matrix import seed_source
from localcloud.lifecycle import failures, run_until_done, start, upload_environment_files
from localcloud.network import SharedVpc, build_shared_vpc
from localcloud.postgres import PostgresServer
from mwaa_control.composition import airflow_client
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import Manifest, RestoreReport
from tests.airflow.test_metadata_rest import VARIABLES, seed
from tests.metadata.compare import decrypt, expected_target, multiset, without_ledger
from tests.metadata.test_matrix import _detached, _dump, _without_json_task_token
from tests.workflow.test_pause_resume import (
    DAG_BUCKET,
    Observers,
    create_environment,
    drain_queue,
    entered,
    lock_of,
    observe,
    state_record,
)

RELEASE = "3.0.6"
OWN = "mwaa_control_"
BACK_UP = "Back up the metadata (export DAG, drained)"
DELETE = "Delete the environment and wait until it is gone"
HELLO_3 = """
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("hello", start_date=datetime(2024, 1, 1), schedule=None, catchup=False, is_paused_upon_creation=False):
    EmptyOperator(task_id="only")
"""
DRAIN = {"timeout": 10, "poll": 2, "on_timeout": "proceed"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def airflow3_cloud(
    postgres: PostgresServer,
) -> Iterator[tuple[LocalCloud, SharedVpc, Observers]]:
    with LocalCloud() as cloud:
        cloud.emulator.postgres = postgres
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.client("s3").create_bucket(Bucket=DAG_BUCKET)
        yield cloud, vpc, observe(cloud)


def _create(cloud: LocalCloud, vpc: SharedVpc, name: str) -> AirflowBackend:
    version = upload_environment_files(cloud, DAG_BUCKET, {"hello": HELLO_3})
    create_environment(
        cloud,
        vpc,
        name,
        AirflowVersion=RELEASE,
        DagS3Path="dags",
        PluginsS3Path="plugins.zip",
        PluginsS3ObjectVersion=version,
    )
    backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
    backend.ensure_ready()
    assert backend.release == RELEASE and (backend.db_url or "").startswith("postgresql"), backend.database_url
    return backend


def _create_without_credentials(cloud: LocalCloud, vpc: SharedVpc, name: str) -> AirflowBackend:
    """An Airflow 3 environment whose workers carry no metadata database credentials."""
    cloud.emulator.without_worker_credentials.add(name)
    backend = _create(cloud, vpc, name)
    assert "DB_SECRETS" not in backend.environment()
    return backend


def _pause_states(backend: AirflowBackend) -> dict[str, bool]:
    engine = sa.create_engine(backend.host_database_url())
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT dag_id, is_paused FROM dag")).all()
    finally:
        engine.dispose()
    return {str(r[0]): bool(r[1]) for r in rows if not str(r[0]).startswith(OWN)}


def _databases(postgres: PostgresServer) -> set[str]:
    return {row[0] for row in postgres.query("postgres", "SELECT datname FROM pg_database")}


def _object(cloud: LocalCloud, key: str) -> bytes:
    bucket = cloud.physical["MetadataBackupBucket"]
    return bytes(cloud.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def _restore_report(cloud: LocalCloud, name: str, backup_id: str) -> RestoreReport:
    prefix = f"backups/{name}/{backup_id}/restores/"
    listed = cloud.client("s3").list_objects_v2(Bucket=cloud.physical["MetadataBackupBucket"], Prefix=prefix)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert len(keys) == 1, keys
    return RestoreReport.model_validate_json(_object(cloud, keys[0]))


def _missing_rows(
    source: dict[str, list[dict[str, Any]]],
    after: dict[str, list[dict[str, Any]]],
    report: RestoreReport,
    schema: Any,
    source_key: str,
    target_key: str,
) -> dict[str, list[str]]:
    """Per restored table, the source's rows (the control plane's own DAGs left out, as backups
    leave them out; ids mapped; secrets decrypted under each side's own Fernet key) that the resumed
    environment does not hold. History must come back exactly. Configuration the new environment
    made itself (its DAGs, bundle, log template) is matched by identity, as the restore matches it,
    and must then carry the backup's values wherever the restore overwrites them."""
    missing: dict[str, list[str]] = {}
    for table in sorted(t.table for t in report.tables):
        original = [r for r in source.get(table, []) if not str(r.get("dag_id") or "").startswith(OWN)]
        rows = decrypt(_detached(original, table, schema), table, source_key)
        actual = decrypt(without_ledger(table, after.get(table, [])), table, target_key)
        if table == "dag_run":
            rows = [_without_json_task_token(r) for r in rows]
            actual = [_without_json_task_token(r) for r in actual]
        configuration = schema.tables[table].role.value == "configuration"
        expected = expected_target(table, rows, actual if configuration else [], schema, report)
        lacking = multiset(expected) - multiset(actual)
        missing[table] = list(lacking)[:2]
    return missing


def test_an_airflow_3_environment_is_paused_and_resumed_with_its_run_history(
    airflow3_cloud: tuple[LocalCloud, SharedVpc, Observers], postgres: PostgresServer
) -> None:
    cloud, vpc, observers = airflow3_cloud
    name = "etl-af3"
    first = _create(cloud, vpc, name)
    seeded = seed_source(first)
    assert seeded["secret_markers"], "the seed planted secrets"
    source = _dump(first.host_database_url())
    paused_before = _pause_states(first)
    assert source["dag_run"] and source["task_instance"] and False in paused_before.values()
    database = (first.db_url or "").rsplit("/", 1)[-1]

    pause = start(cloud, "PauseStateMachine", "pause-af3", {"environment": name, "drain": DRAIN})
    described = run_until_done(cloud, pause, timeout=900)
    assert described["status"] == "SUCCEEDED", failures(cloud, pause)
    assert cloud.client("mwaa").list_environments()["Environments"] == []
    assert database not in _databases(postgres), "deleting the environment deletes its database"
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "PAUSED"
    backup_id = record["last_good_backup_id"]
    manifest = Manifest.model_validate_json(_object(cloud, f"backups/{name}/{backup_id}/manifest.json"))
    assert manifest.path == "worker-database"
    assert {"dag_run", "task_instance", "xcom"} <= set(manifest.tables)
    assert all(entry.restorable for entry in manifest.tables.values())
    assert manifest.pause_states == paused_before  # the states from before the drain paused them

    resume = start(cloud, "ResumeStateMachine", "resume-af3", {"environment": name})
    described = run_until_done(cloud, resume, timeout=900)
    assert described["status"] == "SUCCEEDED", failures(cloud, resume)
    second = cloud.emulator.airflow(cloud.account, cloud.region, name)
    assert second.fernet_key != first.fernet_key and second.db_url != first.db_url

    after = _dump(second.host_database_url())
    report = _restore_report(cloud, name, backup_id)
    assert report.status == "restored" and report.verified
    schema = open_database(second.host_database_url()).reflect()
    missing = _missing_rows(source, after, report, schema, first.fernet_key, second.fernet_key)
    assert {"dag_run", "task_instance", "variable", "connection", "slot_pool", "xcom", "log"} <= set(missing)
    assert {t: rows for t, rows in missing.items() if rows} == {}
    # Secrets came back readable under the new environment's own Fernet key (decrypt() raised otherwise),
    # and the planted passwords are among them.
    restored_secrets = json.dumps(decrypt(after["connection"], "connection", second.fernet_key), default=str)
    assert any(marker in restored_secrets for marker in seeded["secret_markers"])
    paused_after = _pause_states(second)
    assert {d: paused_after.get(d) for d in paused_before} == paused_before
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "ACTIVE"
    assert lock_of(cloud, name) is None
    announced = [e["detail-type"] for e in drain_queue(cloud, observers.events)]
    assert announced == ["MWAA Environment Paused", "MWAA Environment Resumed"]


def test_an_airflow_3_environment_is_exported_on_schedule_without_pausing_anything(
    airflow3_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = airflow3_cloud
    name = "export-af3"
    backend = _create(cloud, vpc, name)
    paused_before = _pause_states(backend)

    export = start(cloud, "ExportStateMachine", "export-af3", {"environment": name})
    described = run_until_done(cloud, export, timeout=900)

    assert described["status"] == "SUCCEEDED", failures(cloud, export)
    assert cloud.client("mwaa").get_environment(Name=name)["Environment"]["Status"] == "AVAILABLE"
    assert _pause_states(backend) == paused_before  # no drain by default: nothing was paused
    record = state_record(cloud, name)
    assert record is not None and record["last_export_backup_id"] and record["last_good_backup_id"] is None
    manifest = json.loads(_object(cloud, f"backups/{name}/{record['last_export_backup_id']}/manifest.json"))
    assert manifest["path"] == "worker-database" and manifest["tables"]["dag_run"]["rows"] >= 0
    assert lock_of(cloud, name) is None
    assert [e["detail-type"] for e in drain_queue(cloud, observers.events)] == ["MWAA Metadata Exported"]


def test_without_worker_credentials_the_export_refuses_the_pause_and_nothing_is_deleted(
    airflow3_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = airflow3_cloud
    name = "no-creds-af3"
    backend = _create_without_credentials(cloud, vpc, name)
    paused_before = _pause_states(backend)
    assert paused_before.get("hello") is False

    pause = start(cloud, "PauseStateMachine", "pause-no-creds", {"environment": name, "drain": DRAIN})
    described = run_until_done(cloud, pause, timeout=900)

    assert described["status"] == "FAILED"
    states = entered(cloud, pause)
    assert BACK_UP in states and DELETE not in states
    assert cloud.client("mwaa").get_environment(Name=name)["Environment"]["Status"] == "AVAILABLE"
    assert _pause_states(backend) == paused_before, "the export failed before the drain paused anything"
    assert any("NoWorkerDatabase" in f for f in failures(cloud, pause))
    alerts = drain_queue(cloud, observers.alerts)
    assert len(alerts) == 1
    assert "carry no database credentials" in alerts[0]["Message"] and "DB_SECRETS" in alerts[0]["Message"]
    announced = drain_queue(cloud, observers.events)
    assert [e["detail-type"] for e in announced] == ["MWAA Environment Pause Failed"]
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "PAUSE_FAILED" and record["last_good_backup_id"] is None
    assert lock_of(cloud, name) is None
    keys = cloud.client("s3").list_objects_v2(Bucket=cloud.physical["MetadataBackupBucket"], Prefix="backups/")
    assert not any(o["Key"].endswith("manifest.json") for o in keys.get("Contents", []))


REST_BACK_UP = "Back up through the REST API (drained)"
REST_RESTORE = "Restore through the REST API (once the DAGs are parsed)"


def test_without_worker_credentials_a_pause_that_accepts_the_rest_path_losses_pauses_and_resumes(
    airflow3_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = airflow3_cloud
    name = "rest-af3"
    backend = _create_without_credentials(cloud, vpc, name)
    seed(backend)
    paused_before = _pause_states(backend)
    assert paused_before.get("hello") is False

    # When the pause accepts what the REST path does not restore
    pause = start(
        cloud,
        "PauseStateMachine",
        "pause-rest",
        {"environment": name, "drain": DRAIN, "accept_rest_path_losses": True},
    )
    described = run_until_done(cloud, pause, timeout=900)

    # Then it backs up through the REST API, deletes on that backup and says what will not come back
    assert described["status"] == "SUCCEEDED", failures(cloud, pause)
    states = entered(cloud, pause)
    assert BACK_UP in states and REST_BACK_UP in states and DELETE in states
    assert cloud.client("mwaa").list_environments()["Environments"] == []
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "PAUSED"
    backup_id = record["last_good_backup_id"]
    manifest = Manifest.model_validate_json(_object(cloud, f"backups/{name}/{backup_id}/manifest.json"))
    assert manifest.path == "rest" and manifest.drained
    assert manifest.pause_states.get("hello") is False, "the states from before the drain paused them"
    assert manifest.not_exported == {"connection.password": ["warehouse"]}
    assert not manifest.tables["dag_run"].restorable
    output = json.loads(described["output"])
    assert any("connection.password" in w for w in output["finished"]["result"]["warnings"])
    assert [e["detail-type"] for e in drain_queue(cloud, observers.events)] == ["MWAA Environment Paused"]

    # And a resume restores through the REST API what it can: variables (the redacted one too),
    # connections without their password, pools, and the DAGs' pause states
    resume = start(cloud, "ResumeStateMachine", "resume-rest", {"environment": name})
    described = run_until_done(cloud, resume, timeout=900)
    assert described["status"] == "SUCCEEDED", failures(cloud, resume)
    assert REST_RESTORE in entered(cloud, resume)
    second = cloud.emulator.airflow(cloud.account, cloud.region, name)
    assert second.fernet_key != backend.fernet_key
    airflow = airflow_client(name, mwaa=cloud.client("mwaa"))
    assert {k: airflow.variable_from_cli(k) for k in VARIABLES} == VARIABLES
    pools = {p["name"]: p for p in airflow.paged("/pools", "pools")}
    assert pools["etl_pool"]["slots"] == 7
    connection = airflow.rest("GET", "/connections/warehouse")
    assert (connection["host"], connection["login"]) == ("db.internal", "etl")
    assert _pause_states(second).get("hello") is False
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "ACTIVE" and lock_of(cloud, name) is None
    assert [e["detail-type"] for e in drain_queue(cloud, observers.events)] == ["MWAA Environment Resumed"]


def test_a_rest_path_drain_that_times_out_deletes_nothing_and_unpauses_the_dags(
    airflow3_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = airflow3_cloud
    name = "rest-slow-af3"
    backend = _create_without_credentials(cloud, vpc, name)
    airflow = airflow_client(name, mwaa=cloud.client("mwaa"))
    airflow.trigger_dag("hello", run_id="manual__long")
    deadline = time.monotonic() + 120
    while airflow.dag_run("hello", "manual__long").state != "success" and time.monotonic() < deadline:
        time.sleep(1)
    # A task still running on a worker, as the database records it (the emulator runs tasks one after
    # another: a really long task would also hold back the export DAG this pause triggers first)
    engine = sa.create_engine(backend.host_database_url())
    try:
        with engine.begin() as db:
            db.execute(sa.text("UPDATE dag_run SET state = 'running' WHERE run_id = 'manual__long'"))
            changed = db.execute(sa.text("UPDATE task_instance SET state = 'running' WHERE run_id = 'manual__long'"))
            assert changed.rowcount == 1
    finally:
        engine.dispose()
    paused_before = _pause_states(backend)
    assert paused_before == {"hello": False}

    # When a pause that accepts the REST path drains, aborting when its timeout passes
    drain = {"timeout": 60, "on_timeout": "abort"}
    pause = start(
        cloud, "PauseStateMachine", "pause-slow", {"environment": name, "drain": drain, "accept_rest_path_losses": True}
    )
    described = run_until_done(cloud, pause, timeout=600)

    # Then the drain waited (retried while the task ran), gave up, deleted nothing and unpaused the DAGs
    assert described["status"] == "FAILED"
    states = entered(cloud, pause)
    assert REST_BACK_UP in states and DELETE not in states
    assert any("DrainTimedOut" in f for f in failures(cloud, pause)), failures(cloud, pause)
    assert cloud.client("mwaa").get_environment(Name=name)["Environment"]["Status"] == "AVAILABLE"
    assert _pause_states(backend) == paused_before
    bucket = cloud.physical["MetadataBackupBucket"]
    left = cloud.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"backups/{name}/").get("Contents", [])
    assert left == [], "the drain's pause states are removed once put back; no backup was written"
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "PAUSE_FAILED" and lock_of(cloud, name) is None
    alerts = drain_queue(cloud, observers.alerts)
    assert len(alerts) == 1 and "DrainTimedOut" in alerts[0]["Message"]
