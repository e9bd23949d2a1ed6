"""Backup -> fresh database -> restore, on real Airflow metadata databases (SQLite and PostgreSQL)
of Airflow 2.11 and 2.9, seeded by Airflow itself with hostile data (multi-line JSON in conf and
log extras, unicode, large values, mapped and deferred tasks with their triggers, XComs, datasets,
pools, paused and active DAGs, notes by web users) and restored under a different Fernet key."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from moto import mock_aws

from localcloud.airflow.backend import SEEDER, AirflowBackend
from localcloud.postgres import PostgresServer
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.catalog import Role
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import Manifest, RestoreReport, backup_prefix
from mwaa_control.metadata.pickles import load_plain
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.schema import Schema
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import LocalStore
from mwaa_control.metadata.verify import VerifyReport, verify_backup, verify_restore
from tests.analytics.athena import athena, query_file, run_query
from tests.metadata.compare import (
    decrypt,
    expected_target,
    multiset,
    read_table,
    without_ledger,
    without_task_token,
)

RELEASES = ["2.11.0", "2.9.2"]
DIALECTS = ["sqlite", "postgresql"]


class Interrupted(Exception):
    pass


@dataclass
class RoundTrip:
    release: str
    dialect: str
    source: AirflowBackend
    target: AirflowBackend
    seeded: dict[str, Any]
    store: LocalStore
    manifest: Manifest
    schema: Schema
    before: dict[str, list[dict[str, Any]]]
    after_interrupted: dict[str, list[dict[str, Any]]]
    interrupted_error: str
    report: RestoreReport
    after_restore: dict[str, list[dict[str, Any]]]
    second: RestoreReport
    after_second: dict[str, list[dict[str, Any]]]
    verified: VerifyReport
    backup_verified: VerifyReport
    target_seeded: dict[str, Any]
    corrupted: VerifyReport
    source_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _url(backend_home: Path, dialect: str, postgres: PostgresServer | None, name: str) -> str | None:
    if dialect == "sqlite":
        return None
    assert postgres is not None
    return postgres.create_database(name)


def _engine_url(backend: AirflowBackend) -> str:
    url = backend.db_url or f"sqlite:///{backend.home / 'airflow.db'}"
    return url.replace("postgresql+psycopg2://", "postgresql+psycopg://")


def _seed_target(target: AirflowBackend) -> dict[str, Any]:
    """The target as a new environment holds it before a restore (seed_metadata.py --target): its
    DAG processor's datasets (one of its own registered first: every id differs from the
    source's), its scheduler job, a pool and a connection encrypted under its Fernet key."""
    target.ensure_ready()
    done = target._run([str(target.venv / "bin" / "python"), str(SEEDER), "--target"], timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    seeded: dict[str, Any] = json.loads(lines[-1])
    return seeded


@contextlib.contextmanager
def _wrong_dataset(url: str) -> Iterator[None]:
    """One restored dataset event pointed at another dataset, for as long as the block runs."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            row = connection.execute(sa.text("SELECT id, dataset_id FROM dataset_event ORDER BY id")).first()
            assert row is not None, "the seed records dataset events"
            event, dataset = row
            other = connection.execute(
                sa.text("SELECT MIN(id) FROM dataset WHERE id <> :dataset"), {"dataset": dataset}
            ).scalar_one()
            connection.execute(
                sa.text("UPDATE dataset_event SET dataset_id = :other WHERE id = :event"),
                {"other": other, "event": event},
            )
        yield
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE dataset_event SET dataset_id = :dataset WHERE id = :event"),
                {"dataset": dataset, "event": event},
            )
    finally:
        engine.dispose()


def _dump(url: str, tables: list[str]) -> dict[str, list[dict[str, Any]]]:
    engine = sa.create_engine(url)
    try:
        return {t: read_table(engine, t) for t in tables}
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=[(r, d) for r in RELEASES for d in DIALECTS], ids=lambda p: f"{p[0]}-{p[1]}")
def trip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoundTrip]:
    release, dialect = request.param
    postgres = request.getfixturevalue("postgres") if dialect == "postgresql" else None
    tag = release.replace(".", "")
    source_home, target_home = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("target")
    source = AirflowBackend(source_home, release=release, db_url=_url(source_home, dialect, postgres, f"src_{tag}"))
    target = AirflowBackend(target_home, release=release, db_url=_url(target_home, dialect, postgres, f"dst_{tag}"))
    assert source.fernet_key != target.fernet_key
    seeded = source.seed_metadata()
    target_seeded = _seed_target(target)
    store = LocalStore(tmp_path_factory.mktemp("backups"))
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        keys = KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])
        source_db, target_db = open_database(_engine_url(source)), open_database(_engine_url(target))
        manifest = BackupEngine(source_db, store).backup(
            BackupRequest(
                environment="etl-prod", keys=keys, source_fernet_key=source.fernet_key, airflow_version=release
            )
        )
        schema = target_db.reflect()
        tables = sorted(schema.tables)
        before = _dump(_engine_url(target), tables)

        def interrupt(table: str) -> None:
            if table == "task_instance":
                raise Interrupted(f"killed after {table}")

        with pytest.raises(Interrupted) as interrupted:
            RestoreEngine(target_db, store).restore(
                RestoreRequest("etl-prod", manifest.backup_id, keys, target.fernet_key, after_table=interrupt)
            )
        after_interrupted = _dump(_engine_url(target), tables)
        report = RestoreEngine(target_db, store).restore(
            RestoreRequest("etl-prod", manifest.backup_id, keys, target.fernet_key)
        )
        after_restore = _dump(_engine_url(target), tables)
        second = RestoreEngine(target_db, store).restore(
            RestoreRequest("etl-prod", manifest.backup_id, keys, target.fernet_key)
        )
        after_second = _dump(_engine_url(target), tables)
        verified = verify_restore(target_db, store, "etl-prod", manifest.backup_id, target.fernet_key)
        backup_verified = verify_backup(store, "etl-prod", manifest.backup_id)
        with _wrong_dataset(_engine_url(target)):
            corrupted = verify_restore(target_db, store, "etl-prod", manifest.backup_id, target.fernet_key)
    yield RoundTrip(
        release,
        dialect,
        source,
        target,
        seeded,
        store,
        manifest,
        schema,
        before,
        after_interrupted,
        str(interrupted.value),
        report,
        after_restore,
        second,
        after_second,
        verified,
        backup_verified,
        target_seeded,
        corrupted,
        _dump(_engine_url(source), sorted(manifest.tables)),
    )


def test_backup_is_complete_and_verifiable(trip: RoundTrip) -> None:
    assert trip.backup_verified.ok, trip.backup_verified.problems
    counts = trip.seeded["table_counts"]
    for table, entry in trip.manifest.tables.items():
        assert entry.rows == counts[table], table
    for table in ("dag_run", "task_instance", "xcom", "log", "trigger", "dataset_event", "variable", "connection"):
        assert trip.manifest.tables[table].rows > 0, table
    assert trip.manifest.schema_revision == trip.seeded["alembic_revision"]
    assert not any(t.startswith("ab_") for t in trip.manifest.tables)
    assert "session" in trip.manifest.excluded_tables


def test_backup_bytes_hold_no_seeded_secret(trip: RoundTrip) -> None:
    """Neither what Airflow encrypts nor what it keeps in plaintext (task tokens in run confs, the
    trigger form's conf in the audit log)."""
    plaintext = trip.seeded["plaintext_secret_markers"]
    assert len(plaintext) >= 4
    source = json.dumps(trip.source_rows["dag_run"] + trip.source_rows["log"], default=repr)
    assert all(marker in source for marker in plaintext), "the seed's plaintext secrets are in the source"
    markers = trip.seeded["secret_markers"] + plaintext
    assert len(markers) >= 9
    folder = Path(trip.store.url) / backup_prefix("etl-prod", trip.manifest.backup_id)
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        blobs = [path.read_bytes().decode("latin-1")]
        if path.suffix == ".parquet":
            # Parquet pages are compressed: scan the decoded values too.
            blobs.append(json.dumps(pq.read_table(path).to_pylist(), default=repr))
        for blob in blobs:
            for marker in markers:
                assert marker not in blob, f"{marker} in plaintext in {path.name}"


def test_task_tokens_are_dropped_and_counted(trip: RoundTrip) -> None:
    assert trip.manifest.stripped_task_tokens == 2
    blocks = [
        load_plain(r["conf"], where="dag_run.conf")["mwaa_control"]
        for r in trip.after_restore["dag_run"]
        if isinstance(r["conf"], bytes) and b"mwaa_control" in r["conf"]
    ]
    reference = {"callback_id": "cb-0001", "table": "mwaa-control-callbacks", "region": "us-east-1"}
    assert sorted(blocks, key=str) == sorted([{"region": "us-east-1"}, reference], key=str)


def test_restore_reproduces_every_table_row_for_row(trip: RoundTrip) -> None:
    assert trip.report.status == "restored" and trip.report.verified
    restored = {t.table for t in trip.report.tables}
    assert {
        "dag_run",
        "task_instance",
        "xcom",
        "log",
        "job",
        "trigger",
        "variable",
        "connection",
        "slot_pool",
    } <= restored
    for table in sorted(restored):
        shape = trip.schema.tables[table]
        assert shape.role in (Role.HISTORY, Role.CONFIGURATION)
        source = decrypt(trip.source_rows[table], table, trip.source.fernet_key)
        before = decrypt(trip.before[table], table, trip.target.fernet_key)
        actual = decrypt(without_ledger(table, trip.after_restore[table]), table, trip.target.fernet_key)
        if table == "dag_run":  # the backup drops task tokens from run confs, and nothing else
            source, actual = [without_task_token(r) for r in source], [without_task_token(r) for r in actual]
        expected = expected_target(table, source, before, trip.schema, trip.report)
        assert multiset(actual) == multiset(expected), table


def test_references_point_at_the_same_parents(trip: RoundTrip) -> None:
    rows = trip.after_restore
    runs = {r["id"]: (r["dag_id"], r["run_id"]) for r in rows["dag_run"]}
    for xcom in rows["xcom"]:
        assert runs[xcom["dag_run_id"]] == (xcom["dag_id"], xcom["run_id"])
    triggers = {t["id"] for t in rows["trigger"]}
    deferred = [ti for ti in rows["task_instance"] if ti["trigger_id"] is not None]
    assert deferred and all(ti["trigger_id"] in triggers for ti in deferred)
    jobs = {j["id"]: j for j in rows["job"]}
    with_job = [ti for ti in rows["task_instance"] if ti["job_id"] is not None]
    assert with_job, "the seed makes task instances reference their task jobs"
    for ti in with_job:
        assert (jobs[ti["job_id"]]["job_type"], jobs[ti["job_id"]]["dag_id"]) == ("LocalTaskJob", ti["dag_id"])
        assert jobs[ti["queued_by_job_id"]]["job_type"] == "SchedulerJob"
    created = [r for r in rows["dag_run"] if r["creating_job_id"] is not None]
    assert created and all(jobs[r["creating_job_id"]]["job_type"] == "SchedulerJob" for r in created)
    held = [t for t in rows["trigger"] if t["triggerer_id"] is not None]
    assert held and all(jobs[t["triggerer_id"]]["job_type"] == "TriggererJob" for t in held)
    templates = {t["id"] for t in rows["log_template"]}
    assert all(r["log_template_id"] in templates for r in rows["dag_run"] if r["log_template_id"] is not None)


def test_secrets_are_reencrypted_for_the_target_and_airflow_reads_them(trip: RoundTrip) -> None:
    assert trip.report.reencrypted_values >= trip.manifest.sealed_values > 0
    variable = next(v for v in trip.source_rows["variable"] if v["is_encrypted"])
    expected = decrypt([variable], "variable", trip.source.fernet_key)[0]["val"].removeprefix("decrypted:")
    printed = trip.target.cli(["variables", "get", variable["key"]])
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.rstrip("\n").endswith(expected.rstrip("\n"))


def test_pause_states_come_back(trip: RoundTrip) -> None:
    source = {d["dag_id"]: d["is_paused"] for d in trip.source_rows["dag"]}
    target = {d["dag_id"]: d["is_paused"] for d in trip.after_restore["dag"]}
    assert set(source.values()) == {True, False}
    assert {k: target[k] for k in source} == source


def test_interrupted_restore_leaves_the_target_unchanged(trip: RoundTrip) -> None:
    assert "killed after task_instance" in trip.interrupted_error
    for table, rows in trip.before.items():
        assert multiset(trip.after_interrupted[table]) == multiset(rows), table


def test_second_restore_changes_nothing(trip: RoundTrip) -> None:
    assert trip.second.status == "already-restored"
    for table, rows in trip.after_restore.items():
        assert multiset(trip.after_second[table]) == multiset(rows), table


def test_restored_database_verifies_against_the_manifest(trip: RoundTrip) -> None:
    assert trip.verified.ok, (trip.verified.problems, [t for t in trip.verified.tables if not t.ok])


def test_monthly_dag_performance_query_over_the_backup(trip: RoundTrip) -> None:
    """The persist-and-analyse article's query, as deployed to Athena, on this backup of real runs
    (DuckDB standing in for Athena), against the seed's own per-month statistics."""
    connection = athena(Path(trip.store.url))
    rows = run_query(connection, query_file("monthly_dag_performance.sql"), "etl-prod", trip.manifest.backup_id)
    got = {(r["dag_id"], r["run_month"].strftime("%Y-%m")): r for r in rows}
    compared = 0
    for dag_id, months in trip.seeded["monthly_stats"].items():
        for month, stats in months.items():
            if stats["success"] + stats["failed"] != stats["runs"] or stats["min_duration_s"] is None:
                continue  # the query counts finished runs only
            row = got[(dag_id, month)]
            assert (row["num_executions"], row["num_success"], row["num_failed"]) == (
                stats["runs"],
                stats["success"],
                stats["failed"],
            )
            assert row["min_duration"] == pytest.approx(stats["min_duration_s"], abs=1e-3)
            assert row["max_duration"] == pytest.approx(stats["max_duration_s"], abs=1e-3)
            assert row["avg_duration"] == pytest.approx(stats["avg_duration_s"], abs=1e-3)
            compared += 1
    assert compared >= 3
    monthly = sorted((k, v) for k, v in got.items() if k[0] == "seed_monthly")
    for (_, previous), (_, current) in itertools.pairwise(monthly):
        assert current["prev_month_avg_duration"] == pytest.approx(previous["avg_duration"])
        assert current["var_duration"] == pytest.approx(current["avg_duration"] - previous["avg_duration"])


def test_the_target_already_held_rows_and_keeps_them(trip: RoundTrip) -> None:
    """Not an empty database: datasets its DAG processor registered (one of its own first, so the
    ids differ), its scheduler job, its pool and its encrypted connection, all still there."""
    before = trip.before
    assert trip.target_seeded["datasets"][0] == trip.target_seeded["target_dataset"]
    assert {"target_pool"} <= {p["pool"] for p in before["slot_pool"]}
    assert any(j["hostname"] == "target-scheduler" for j in before["job"])
    assert any(c["conn_id"] == "target_conn" and c["is_encrypted"] for c in before["connection"])
    source_ids = {d["uri"]: d["id"] for d in trip.source_rows["dataset"]}
    target_ids = {d["uri"]: d["id"] for d in before["dataset"]}
    shared = set(source_ids) & set(target_ids)
    assert shared and all(source_ids[u] != target_ids[u] for u in shared), "the ids must differ to test anything"
    for table in ("dataset", "slot_pool", "job", "connection"):
        kept = {
            json.dumps(r, sort_keys=True, default=repr) for r in decrypt(before[table], table, trip.target.fernet_key)
        }
        after = decrypt(trip.after_restore[table], table, trip.target.fernet_key)
        now = {json.dumps(r, sort_keys=True, default=repr) for r in after}
        if table != "dataset":  # the backup's extra wins on the datasets both had
            assert kept <= now, table
    assert trip.report.fernet_key_verified is True


def test_dataset_events_keep_their_datasets(trip: RoundTrip) -> None:
    def events(rows: dict[str, list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
        uris = {d["id"]: d["uri"] for d in rows["dataset"]}
        return sorted(
            (uris.get(e["dataset_id"]), e["source_dag_id"], e["source_run_id"], e["timestamp"].isoformat())
            for e in rows["dataset_event"]
        )

    assert events(trip.source_rows) and events(trip.after_restore) == events(trip.source_rows)


def test_a_link_to_the_wrong_row_fails_verification(trip: RoundTrip) -> None:
    assert trip.verified.ok
    assert not trip.corrupted.ok
    assert any(p.startswith("dataset_event:") for p in trip.corrupted.problems), trip.corrupted.problems
