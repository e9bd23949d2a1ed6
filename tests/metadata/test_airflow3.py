"""Airflow 3.0.6's database path: asset events follow their asset when the target registered assets
first (asset_event.asset_id has no foreign key), the restore verifies what rows mean, and a link to
the wrong asset fails verification. On a freshly migrated 3.0.6 SQLite database."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from localcloud.airflow.backend import AirflowBackend
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.verify import verify_restore
from tests.metadata.databases import NOW, Env, make_env, own_connection

RELEASE = "3.0.6"
SOURCE_ASSETS = ["s3://lake/orders", "s3://lake/customers", "s3://lake/invoices"]
EVENTS = (
    "SELECT a.uri, e.extra, e.source_dag_id FROM asset_event e LEFT JOIN asset a ON a.id = e.asset_id ORDER BY e.extra"
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = Path(__file__).resolve().parents[2] / ".airflow" / RELEASE
    # `make test` installs it: a missing one is a failure, not a skip.
    assert (venv / "bin" / "airflow").exists(), f"no Airflow {RELEASE} virtualenv: run make airflow-venvs"
    backend = AirflowBackend(tmp_path_factory.mktemp("af3"), release=RELEASE)
    backend.ensure_ready()
    path = tmp_path_factory.mktemp("af3-template") / "airflow.db"
    shutil.copy(backend.home / "airflow.db", path)
    return path


def _assets(env: Env, uris: list[str], *, events: bool) -> None:
    for uri in uris:
        env.sql(
            'INSERT INTO asset (name, uri, "group", extra, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)',
            (uri, uri, "asset", f'{{"registered_by": "{env.path.stem}"}}', NOW, NOW),
        )
        if events:
            env.sql(
                "INSERT INTO asset_event (asset_id, extra, source_task_id, source_dag_id, source_run_id,"
                " source_map_index, timestamp)"
                " SELECT id, ?, 'load', 'etl', 'manual__1', -1, ? FROM asset WHERE uri = ?",
                (f'{{"for": "{uri}"}}', NOW, uri),
            )


def test_asset_events_keep_their_asset_and_a_wrong_link_fails_verification(
    template: Path, tmp_path: Path, kms: Any
) -> None:
    source = make_env(template, tmp_path, "src", kms)
    token = Fernet(source.fernet.encode()).encrypt(b"SEKRET-value").decode()
    source.sql("INSERT INTO variable (key, val, is_encrypted) VALUES ('k', ?, 1)", (token,))
    _assets(source, SOURCE_ASSETS, events=True)
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    assert manifest.airflow_version == ">=3.0.3,<3.1.0"
    target = make_env(template, tmp_path, "dst", kms, source.store)
    _assets(target, ["s3://target/registered-first", *reversed(SOURCE_ASSETS)], events=False)
    own_connection(target)
    report = RestoreEngine(open_database(target.url), source.store).restore(
        RestoreRequest("etl-prod", manifest.backup_id, source.keys, target.fernet)
    )
    assert report.status == "restored" and report.fernet_key_verified is True
    assert target.sql(EVENTS) == source.sql(EVENTS)
    (value,) = target.sql("SELECT val FROM variable WHERE key = 'k'")[0]
    assert Fernet(target.fernet.encode()).decrypt(value.encode()) == b"SEKRET-value"

    database = open_database(target.url)
    verified = verify_restore(database, source.store, "etl-prod", manifest.backup_id, target.fernet, keys=source.keys)
    assert verified.ok, verified.problems
    orders, customers = (target.sql("SELECT id FROM asset WHERE uri = ?", (u,))[0][0] for u in SOURCE_ASSETS[:2])
    target.sql("UPDATE asset_event SET asset_id = ? WHERE asset_id = ?", (customers, orders))
    corrupted = verify_restore(database, source.store, "etl-prod", manifest.backup_id, target.fernet, keys=source.keys)
    assert not corrupted.ok
    assert any(p.startswith("asset_event:") and "s3://lake/orders" in p for p in corrupted.problems)
