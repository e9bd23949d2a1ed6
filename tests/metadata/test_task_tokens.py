"""No Step Functions task token and no trigger conf reaches a backup in plaintext, on a real Airflow
2.11 SQLite database: the token is dropped from the run conf (the callback reference and the rest of
the conf are kept), and the audit log's trigger events are sealed like its CLI events."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import backup_prefix
from mwaa_control.metadata.pickles import load_plain
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from tests.metadata.databases import NOW, Templates, make_env, populate

TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAA-SEKRET-task-token"
LEGACY = {"mwaa_control": {"task_token": TOKEN, "region": "eu-west-1"}, "partner": "ACME ☃", "n": [1, {"x": None}]}
REFERENCE = {
    "mwaa_control": {"callback_id": "cb-7", "table": "callbacks", "region": "eu-west-1", "task_token": TOKEN + "-2"},
    "day": "2024-01-02",
}
TRIGGER_CONF = "SEKRET-trigger-conf-in-the-audit-log"
EVENTS = ("trigger", "api.post_dag_run", "ui.post_dag_run", "trigger_dag_run")


def _scan(folder: Path, needles: list[str]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        blobs = [path.read_bytes().decode("latin-1")]
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
            blobs.append(json.dumps(rows, default=repr))
            blobs += [v.decode("latin-1") for r in rows for v in r.values() if isinstance(v, bytes)]
        found += [f"{n} in {path.name}" for b in blobs for n in needles if n in b]
    return found


def test_task_tokens_and_trigger_conf_never_reach_a_backup(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source = make_env(templates.v211, tmp_path, "src", kms)
    populate(source, conf=pickle.dumps(LEGACY, protocol=pickle.HIGHEST_PROTOCOL))
    source.sql(
        "INSERT INTO dag_run (dag_id, execution_date, run_id, run_type, state, clear_number, log_template_id, conf)"
        " VALUES ('etl', '2026-11-22 10:00:00.000000', 'manual__2', 'manual', 'success', 0, 1, ?)",
        (pickle.dumps(REFERENCE, protocol=4),),
    )
    for event in EVENTS:
        extra = json.dumps({"conf": json.dumps({"password": TRIGGER_CONF, "event": event}), "dag_id": "etl"})
        source.sql(
            "INSERT INTO log (dttm, event, dag_id, owner, extra) VALUES (?, ?, 'etl', 'admin', ?)", (NOW, event, extra)
        )
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    folder = Path(source.store.url) / backup_prefix("etl-prod", manifest.backup_id)

    assert _scan(folder, [TOKEN, TRIGGER_CONF]) == []
    assert manifest.stripped_task_tokens == 2
    confs = {
        r["run_id"]: load_plain(r["conf"], where="dag_run.conf")
        for r in pq.read_table(folder / "tables/dag_run/part-00000.parquet").to_pylist()
    }
    assert confs["manual__1"] == {"mwaa_control": {"region": "eu-west-1"}, "partner": "ACME ☃", "n": [1, {"x": None}]}
    assert confs["manual__2"] == {
        "mwaa_control": {"callback_id": "cb-7", "table": "callbacks", "region": "eu-west-1"},
        "day": "2024-01-02",
    }

    # Restored: the conf without the token, the audit log as it was.
    target = make_env(templates.v211, tmp_path, "dst", kms, source.store)
    RestoreEngine(open_database(target.url), target.store).restore(
        RestoreRequest("etl-prod", manifest.backup_id, source.keys, target.fernet)
    )
    restored = {
        run_id: load_plain(conf, where="conf") for run_id, conf in target.sql("SELECT run_id, conf FROM dag_run")
    }
    assert restored == confs
    logged = dict(target.sql("SELECT event, extra FROM log WHERE event IN (?, ?, ?, ?)", EVENTS))
    assert logged == dict(source.sql("SELECT event, extra FROM log WHERE event IN (?, ?, ?, ?)", EVENTS))
