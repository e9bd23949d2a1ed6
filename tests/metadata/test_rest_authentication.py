"""The Airflow 3 REST path writes authenticated manifests and checks them like a database restore
does; no task token of a run conf reaches its backup. Against an in-memory stand-in for the Airflow
3 REST API (the real one is exercised in tests/airflow/test_metadata_rest.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mwaa_control.metadata.errors import BackupNotAuthentic
from mwaa_control.metadata.manifest import MANIFEST, MANIFEST_MAC, backup_prefix
from mwaa_control.metadata.rest_path import RestBackup, RestRestore
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import LocalStore

TOKEN = "AQCEAAAA-SEKRET-rest-task-token"


class FakeAirflow3:
    """The few REST calls the REST path makes, answered from dictionaries."""

    major = 3
    airflow_version = "3.0.6"

    def __init__(self) -> None:
        self.variables = [{"key": "plain", "value": "SEKRET-var", "description": None}]
        self.connections: list[dict[str, Any]] = []
        self.pools = [{"name": "default_pool", "slots": 128, "description": None, "include_deferred": False}]
        self.dags = [{"dag_id": "hello", "is_paused": True, "is_stale": False, "fileloc": "/dags/hello.py"}]
        self.runs = [
            {
                "dag_id": "hello",
                "dag_run_id": "manual__1",
                "state": "success",
                "conf": {"mwaa_control": {"task_token": TOKEN, "callback_id": "cb-1"}, "partner": "ACME"},
            }
        ]
        self.written: list[tuple[str, str, Any]] = []

    def paged(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        yield from {"/variables": self.variables, "/connections": self.connections, "/pools": self.pools}.get(
            path, self.dags
        )

    def batch_list(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        yield from (self.runs if key == "dag_runs" else [])

    def variable_from_cli(self, key: str) -> str:
        return next(str(v["value"]) for v in self.variables if v["key"] == key)

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        self.written.append((method, path, body))
        entities = body["actions"][0]["entities"]
        return {"create": {"success": [str(i) for i in range(len(entities))], "errors": []}}

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.written.append(("PATCH", f"/dags/{dag_id}", {"is_paused": paused}))


@pytest.fixture
def keys(kms: Any) -> KmsKeyService:
    return KmsKeyService(kms, kms.create_key()["KeyMetadata"]["KeyId"])


def test_rest_backups_are_authenticated_and_hold_no_task_token(tmp_path: Path, keys: KmsKeyService) -> None:
    store = LocalStore(tmp_path)
    manifest = RestBackup(FakeAirflow3(), store).backup("af3", keys)  # type: ignore[arg-type]
    folder = tmp_path / backup_prefix("af3", manifest.backup_id)
    assert (folder / MANIFEST_MAC).exists()
    assert manifest.stripped_task_tokens == 1
    runs = pq.read_table(folder / "tables/dag_run/part-00000.parquet").to_pylist()
    assert json.loads(runs[0]["conf"]) == {"mwaa_control": {"callback_id": "cb-1"}, "partner": "ACME"}
    for path in (p for p in folder.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("latin-1")
        if path.suffix == ".parquet":
            text += json.dumps(pq.read_table(path).to_pylist(), default=str)
        assert TOKEN not in text, path

    target = FakeAirflow3()
    report = RestRestore(target, store).restore("af3", manifest.backup_id, keys)  # type: ignore[arg-type]
    assert report.authenticated is True and target.written


@pytest.mark.parametrize("change", ["manifest altered", "mac removed", "presented as another environment"])
def test_an_altered_rest_backup_is_refused_before_anything_is_written(
    tmp_path: Path, keys: KmsKeyService, change: str
) -> None:
    store = LocalStore(tmp_path)
    manifest = RestBackup(FakeAirflow3(), store).backup("af3", keys)  # type: ignore[arg-type]
    folder = tmp_path / backup_prefix("af3", manifest.backup_id)
    environment = "af3"
    if change == "manifest altered":
        document = json.loads((folder / MANIFEST).read_bytes())
        document["pause_states"] = {"hello": False}
        (folder / MANIFEST).write_text(json.dumps(document, indent=2))
    elif change == "mac removed":
        (folder / MANIFEST_MAC).unlink()
    else:
        environment = "af3-other"
        shutil.copytree(folder, tmp_path / backup_prefix(environment, manifest.backup_id))
    target = FakeAirflow3()
    with pytest.raises(BackupNotAuthentic, match=r"manifest\.mac|KMS"):
        RestRestore(target, store).restore(environment, manifest.backup_id, keys)  # type: ignore[arg-type]
    assert target.written == []
