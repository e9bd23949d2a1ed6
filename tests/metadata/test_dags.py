"""The export and import DAGs inside real Airflow 2.11 (SQLAlchemy 1.4, psycopg2) on PostgreSQL, as
MWAA runs them: `mwaa_control` on the Python path as plugins.zip puts it, S3 and KMS answered by a
moto server. Given a seeded source, when the export DAG runs there and the import DAG runs in a new
environment, then the target holds the source's history and configuration, re-encrypted, and the
export's own run is not part of it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from moto.server import ThreadedMotoServer

from localcloud.airflow.backend import AirflowBackend
from localcloud.postgres import PostgresServer, free_port
from mwaa_control.metadata.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "mwaa_control_metadata.py"
PACKAGE = ROOT / "layers" / "mwaa_control" / "python"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _aws(moto_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


def _client(service: str, moto_url: str) -> Any:
    return boto3.client(
        service, region_name=REGION, endpoint_url=moto_url, aws_access_key_id="t", aws_secret_access_key="t"
    )


def _run_dag(backend: AirflowBackend, dag_id: str, conf: dict[str, Any], moto_url: str) -> str:
    env = {**backend.environment(), **_aws(moto_url), "PYTHONPATH": str(PACKAGE)}
    done = subprocess.run(
        [str(backend.venv / "bin" / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
        cwd=backend.home,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url.replace("+psycopg2", "+psycopg"))
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def test_export_and_import_dags(postgres: PostgresServer, moto_url: str, tmp_path: Path) -> None:
    source = AirflowBackend(tmp_path / "source", release="2.11.0", db_url=postgres.create_database("dags_src"))
    target = AirflowBackend(tmp_path / "target", release="2.11.0", db_url=postgres.create_database("dags_dst"))
    seeded = source.seed_metadata()
    target.ensure_ready()
    for backend in (source, target):
        backend.dags_folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(DAG_FILE, backend.dags_folder / DAG_FILE.name)
    kms, s3 = _client("kms", moto_url), _client("s3", moto_url)
    key_id = kms.create_key()["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket="metadata-backups")
    conf = {"environment": "etl-prod", "location": "s3://metadata-backups/mwaa", "kms_key_id": key_id}

    _run_dag(source, "mwaa_control_metadata_export", conf, moto_url)

    listed = s3.list_objects_v2(Bucket="metadata-backups", Prefix="mwaa/backups/etl-prod/")["Contents"]
    manifests = [o["Key"] for o in listed if o["Key"].endswith("/manifest.json")]
    assert len(manifests) == 1
    assert manifests[0].replace("manifest.json", "manifest.mac") in {o["Key"] for o in listed}
    manifest = Manifest.model_validate_json(s3.get_object(Bucket="metadata-backups", Key=manifests[0])["Body"].read())
    assert manifest.airflow_version == "2.11.0" and manifest.sealed_values > 0
    # The export's own run was running while it read: it is not in the backup.
    assert manifest.tables["dag_run"].rows == seeded["table_counts"]["dag_run"]
    assert _scalar(source.db_url or "", "SELECT COUNT(*) FROM dag_run WHERE dag_id LIKE 'mwaa_control_%'") == 1
    body = b"".join(s3.get_object(Bucket="metadata-backups", Key=o["Key"])["Body"].read() for o in listed)
    assert not any(marker.encode() in body for marker in seeded["secret_markers"])

    _run_dag(target, "mwaa_control_metadata_import", {**conf, "backup_id": manifest.backup_id}, moto_url)

    url = target.db_url or ""
    own = "dag_id NOT LIKE 'mwaa_control_%'"
    for table in ("dag_run", "task_instance", "xcom", "variable", "connection"):
        restored = _scalar(
            url,
            f"SELECT COUNT(*) FROM {table}"
            + (f" WHERE {own}" if table != "variable" and table != "connection" else ""),
        )
        assert restored == seeded["table_counts"][table], table
    fernet = Fernet(target.fernet_key.encode())
    encrypted = _scalar(url, "SELECT val FROM variable WHERE is_encrypted LIMIT 1")
    assert fernet.decrypt(encrypted.encode())
    ledger = _scalar(url, "SELECT extra FROM log WHERE event = 'mwaa-control:restore'")
    assert json.loads(ledger)["backup_id"] == manifest.backup_id


def test_rows_larger_than_the_parsers_block_are_backed_up(postgres: PostgresServer, tmp_path: Path) -> None:
    """A serialised DAG or XCom of several MB does not fit one CSV block: the table is read again."""
    from mwaa_control.metadata.backup import BackupEngine, BackupRequest
    from mwaa_control.metadata.database import CSV_BLOCK, open_database
    from mwaa_control.metadata.store import LocalStore

    backend = AirflowBackend(tmp_path / "big", release="2.11.0", db_url=postgres.create_database("big_rows"))
    backend.ensure_ready()
    url = (backend.db_url or "").replace("+psycopg2", "+psycopg")
    big = 'naïve ☃,\n"' * (3 * CSV_BLOCK // 10)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO log (dttm, event, extra) VALUES (now(), 'success', :extra)"), {"extra": big}
        )
    engine.dispose()
    store = LocalStore(tmp_path / "backups")
    manifest = BackupEngine(open_database(url), store).backup(BackupRequest("big", None, None))
    path = Path(store.url) / "backups/big" / manifest.backup_id / "tables/log/part-00000.parquet"
    assert big in pq.read_table(path).column("extra").to_pylist()


SETTINGS_PROBE = r"""
import importlib.util, json, sys
from types import SimpleNamespace

spec = importlib.util.spec_from_file_location("dags_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

import mwaa_control.metadata.restore as restore

requests = []


class Recorder:
    def __init__(self, database, store):
        pass

    def restore(self, request):
        requests.append(request)
        moment = __import__("datetime").datetime(2026, 11, 30)
        return SimpleNamespace(status="restored", tables=[], restore_id="r", started_at=moment, finished_at=moment)


restore.RestoreEngine = Recorder
module._database = lambda: None
module._keys = lambda key: key
results = {}
base = {"environment": "etl-staging", "location": "/tmp/nowhere"}
try:
    module.export_metadata(dag_run=SimpleNamespace(conf=base))
    results["export"] = "ran"
except ValueError as error:
    results["export"] = str(error)
for name, conf in {
    "own": {**base, "kms_key_id": "k", "backup_id": "b1"},
    "named": {**base, "kms_key_id": "k", "backup_id": "b1", "source_environment": "etl-prod"},
    "waiver": {**base, "kms_key_id": "k", "backup_id": "b1", "allow_unauthenticated": True},
}.items():
    module.import_metadata(dag_run=SimpleNamespace(conf=conf))
    request = requests[-1]
    results[name] = [request.environment, request.source_environment, request.allow_unauthenticated]
try:
    module.import_metadata(dag_run=SimpleNamespace(conf={**base, "backup_id": "b1"}))
    results["import without key"] = "ran"
except ValueError as error:
    results["import without key"] = str(error)
print(json.dumps(results))
"""


def test_the_dags_always_use_a_kms_key_and_never_waive_authentication(tmp_path: Path) -> None:
    """The export refuses to run without a KMS key (its backup could not be authenticated); the
    import restores another environment's backup only when the conf names it, and ignores any
    request to accept an unauthenticated backup."""
    backend = AirflowBackend(tmp_path / "probe", release="2.11.0")
    env = {**backend.environment(), "PYTHONPATH": str(PACKAGE)}
    done = subprocess.run(
        [str(backend.venv / "bin" / "python"), "-W", "ignore", "-c", SETTINGS_PROBE, str(DAG_FILE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert "kms_key_id" in results["export"]
    assert "kms_key_id" in results["import without key"]
    assert results["own"] == ["etl-staging", "etl-staging", False]
    assert results["named"] == ["etl-staging", "etl-prod", False]
    assert results["waiver"] == ["etl-staging", "etl-staging", False]
