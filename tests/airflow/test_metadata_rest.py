"""Airflow 3 on MWAA: metadata backup and restore through the REST API and the CLI token API,
against real Airflow 3.0 behind the MWAA emulator. Given a source environment with variables
(one under a sensitive key the API redacts), a connection with a password, a pool, a paused and an
unpaused DAG and a finished run; when it is backed up and restored into a new environment; then
what the API allows comes back, what it does not is reported, and a second restore changes nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from localcloud import LocalCloud
from localcloud.airflow.backend import AirflowBackend
from mwaa_control.airflow.client import AirflowClient
from mwaa_control.composition import airflow_client
from mwaa_control.metadata.manifest import backup_prefix
from mwaa_control.metadata.rest_path import RestBackup, RestRestore
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import LocalStore
from tests.airflow.conftest import HELLO_DAG
from tests.conftest import build_shared_vpc, create_request

VARIABLES = {
    "plain": "SEKRET-var-plain",
    "db_password": "SEKRET-redacted-by-the-api",
    "json_doc": json.dumps({"a": [1, 2], "text": "SEKRET-json\nnaïve ☃"}, indent=2),
}


SEED = """
import json
from airflow.models import Connection, Variable
from airflow.models.pool import Pool
from airflow.utils.session import create_session

for key, value in json.loads({variables!r}).items():
    Variable.set(key, value)
with create_session() as session:
    session.add(Connection(conn_id="warehouse", conn_type="postgres", host="db.internal", port=5432, login="etl",
                           password="SEKRET-conn-password", extra=json.dumps({{"sslmode": "require"}})))
Pool.create_or_update_pool("etl_pool", 7, "ETL \\u2603 pool", include_deferred=False)
"""


def seed(backend: AirflowBackend) -> None:
    """VARIABLES, the `warehouse` connection with its password and `etl_pool`, written by Airflow
    itself in one process instead of one CLI call each (every Airflow call costs seconds here)."""
    seeded = subprocess.run(
        [str(backend.venv / "bin" / "python"), "-c", SEED.format(variables=json.dumps(VARIABLES))],
        env=backend.environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert seeded.returncode == 0, seeded.stderr[-2000:]


@dataclass
class Pair:
    cloud: LocalCloud
    source: AirflowClient
    target: AirflowClient
    source_backend: AirflowBackend
    target_backend: AirflowBackend
    keys: KmsKeyService
    store: LocalStore


def _environment(cloud: LocalCloud, name: str) -> tuple[AirflowClient, AirflowBackend]:
    vpc = build_shared_vpc(cloud.client("ec2"))
    cloud.client("mwaa").create_environment(
        **create_request(name, vpc, EndpointManagement="SERVICE", AirflowVersion="3.0.6")
    )
    cloud.run_for(timedelta(minutes=30))
    backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
    backend.ensure_ready()
    for dag_id in ("hello", "reports"):
        (backend.dags_folder / f"{dag_id}.py").write_text(HELLO_DAG.format(dag_id=dag_id))
    return airflow_client(name, mwaa=cloud.client("mwaa")), backend


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with LocalCloud() as cloud:
        source, source_backend = _environment(cloud, "af3-source")
        target, target_backend = _environment(cloud, "af3-target")
        source_backend.parse_dags()
        seed(source_backend)
        source.set_paused("reports", False)
        # Airflow 3's `dags test` needs the execution API server; a run marked done is history enough.
        source.trigger_dag("hello", run_id="manual__archived")
        source.rest("PATCH", "/dags/hello/dagRuns/manual__archived", body={"state": "success"})
        kms = cloud.client("kms")
        keys = KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])
        store = LocalStore(tmp_path_factory.mktemp("b"))
        yield Pair(cloud, source, target, source_backend, target_backend, keys, store)


def test_airflow3_backup_and_restore_through_the_api(pair: Pair) -> None:
    manifest = RestBackup(pair.source, pair.store).backup("af3-source", pair.keys)
    prefix = Path(pair.store.url) / backup_prefix("af3-source", manifest.backup_id)

    # Secrets are sealed: no plaintext in any file, whatever the compression.
    for path in prefix.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("latin-1")
            if path.suffix == ".parquet":
                text += json.dumps(pq.read_table(path).to_pylist(), default=str)
            assert "SEKRET" not in text, path
    assert manifest.not_exported == {"connection.password": ["warehouse"]}
    assert manifest.tables["dag_run"].rows >= 1 and not manifest.tables["dag_run"].restorable
    runs = pq.read_table(prefix / "tables/dag_run/part-00000.parquet").to_pylist()
    assert any(r["dag_id"] == "hello" and r["state"] == "success" for r in runs)

    # The target has not parsed its DAGs yet: everything else is restored, pause states pending.
    first = RestRestore(pair.target, pair.store).restore("af3-source", manifest.backup_id, pair.keys)
    assert any("not parsed" in p for p in first.problems) and not first.verified
    assert {k: pair.target.variable_from_cli(k) for k in VARIABLES} == VARIABLES
    pools = {p["name"]: p for p in pair.target.paged("/pools", "pools")}
    assert (pools["etl_pool"]["slots"], pools["etl_pool"]["description"]) == (7, "ETL ☃ pool")
    connection = pair.target.rest("GET", "/connections/warehouse")
    assert (connection["host"], connection["port"], connection["login"]) == ("db.internal", 5432, "etl")
    assert json.loads(connection["extra"]) == {"sslmode": "require"}
    assert any("connection.password" in p and "warehouse" in p for p in first.problems)

    # Once parsed, a re-run applies the pause states and changes nothing else.
    pair.target_backend.parse_dags()
    second = RestRestore(pair.target, pair.store).restore("af3-source", manifest.backup_id, pair.keys)
    assert second.verified
    states = {d["dag_id"]: d["is_paused"] for d in pair.target.paged("/dags", "dags")}
    assert states == {"hello": True, "reports": False}
    by_table = {t.table: t for t in second.tables}
    assert (by_table["connection"].inserted, by_table["connection"].matched) == (0, 1)
    assert (by_table["dag"].matched, by_table["dag"].updated) == (2, 1)
    third = RestRestore(pair.target, pair.store).restore("af3-source", manifest.backup_id, pair.keys)
    assert {t.table: t.updated for t in third.tables}["dag"] == 0
    assert {k: pair.target.variable_from_cli(k) for k in ("json_doc",)} == {"json_doc": VARIABLES["json_doc"]}
