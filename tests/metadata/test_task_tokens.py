"""No Step Functions task token and no trigger conf reaches a backup in plaintext, on a real Airflow
2.11 SQLite database: the token is dropped from the run conf (the callback reference and the rest of
the conf are kept), and the audit log's trigger events are sealed like its CLI events."""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from localcloud.airflow.backend import venv_for_release
from mwaa_control.airflow.values import conf_json
from mwaa_control.metadata import backup
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import backup_prefix
from mwaa_control.metadata.pickles import load_plain
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.task_tokens import TOKEN_MARKER, strip_audit_extra, stripped_audit_batches
from tests.metadata.databases import NOW, Templates, make_env, own_connection, populate

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
    own_connection(target)
    RestoreEngine(open_database(target.url), target.store).restore(
        RestoreRequest("etl-prod", manifest.backup_id, source.keys, target.fernet)
    )
    restored = {
        run_id: load_plain(conf, where="conf") for run_id, conf in target.sql("SELECT run_id, conf FROM dag_run")
    }
    assert restored == confs
    logged = dict(target.sql("SELECT event, extra FROM log WHERE event IN (?, ?, ?, ?)", EVENTS))
    assert logged == dict(source.sql("SELECT event, extra FROM log WHERE event IN (?, ?, ?, ?)", EVENTS))


# --- audit-log extras: the token value is replaced by a marker, everything else is kept ---------

# What Airflow's own CLI logger writes for `airflow dags trigger -c <conf>` (the control plane's
# CLI path): `cli_action_loggers.default_action_log` stores json.dumps of the host and
# `_build_metrics`'s full_command, the repr of sys.argv with the conf as one JSON argument.
CLI_EXTRA = r"""
import json, sys
from argparse import Namespace
sys.argv = json.loads(sys.stdin.read())
from airflow.utils.cli import _build_metrics
metrics = _build_metrics("dags_trigger", Namespace(dag_id="etl", task_id=None, execution_date=None))
print(json.dumps({"host_name": metrics["host_name"], "full_command": metrics["full_command"]}))
"""


def _cli_extra(argv: list[str], tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "AIRFLOW"))}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    done = subprocess.run(
        [str(venv_for_release("2.11.0") / "bin" / "python"), "-W", "ignore", "-c", CLI_EXTRA],
        input=json.dumps(argv),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _trigger_argv(conf: dict[str, Any]) -> list[str]:
    return ["/usr/local/bin/airflow", "dags", "trigger", "etl", "-r", "manual__7", "-c", conf_json(conf)]


def test_a_cli_trigger_extra_loses_its_task_token_and_keeps_the_rest(tmp_path: Path) -> None:
    confs: list[dict[str, Any]] = [
        LEGACY,
        REFERENCE,
        {**LEGACY, "partner": 'O\'Brien "quoted"'},  # repr switches quotes: the conf is escaped twice
    ]
    for conf in confs:
        extra = _cli_extra(_trigger_argv(conf), tmp_path)
        assert TOKEN in extra
        stripped, count = strip_audit_extra(extra)
        assert stripped is not None and count == 1 and TOKEN not in stripped
        # Byte for byte the same, but for the value.
        token = conf["mwaa_control"]["task_token"]
        assert stripped == extra.replace(token, TOKEN_MARKER)
        argv = ast.literal_eval(json.loads(stripped)["full_command"])
        assert json.loads(argv[-1])["mwaa_control"]["task_token"] == TOKEN_MARKER
        assert json.loads(argv[-1]).get("partner") == conf.get("partner")


@pytest.mark.parametrize(
    "extra",
    [
        json.dumps({"conf": LEGACY, "dag_id": "etl"}),  # a JSON object
        json.dumps({"conf": json.dumps(LEGACY), "dag_id": "etl"}),  # the UI/REST form: conf as a JSON string
        json.dumps({"conf": json.dumps(json.dumps(LEGACY))}),  # and escaped once more
        json.dumps([["conf", json.dumps(LEGACY, indent=2)]]),  # Airflow's UI form fields, pretty-printed
        f"dag_id=etl&task_token={TOKEN}&x=1",  # a query string
    ],
)
def test_every_form_of_an_extra_loses_its_task_token(extra: str) -> None:
    stripped, count = strip_audit_extra(extra)
    assert stripped is not None and count == 1 and TOKEN not in stripped
    assert stripped == extra.replace(TOKEN, TOKEN_MARKER)
    assert strip_audit_extra(stripped) == (stripped, 0)  # idempotent: the marker is no token


def test_extras_without_a_token_are_kept_as_they_are() -> None:
    for extra in (None, "", "{}", json.dumps({"task_token_count": 3}), json.dumps({"conf": {"task_token": None}})):
        assert strip_audit_extra(extra) == (extra, 0)


def test_audit_batches_lose_their_task_tokens_and_keep_every_other_value() -> None:
    """What the backup engine runs over `log` batches before sealing `extra`."""
    extras = [
        json.dumps({"host_name": "ip-10-0-0-1", "full_command": str(_trigger_argv(LEGACY))}),
        None,
        json.dumps({"conf": json.dumps(REFERENCE)}),
        json.dumps({"host_name": "ip-10-0-0-1", "full_command": "['airflow', 'dags', 'list']"}),
    ]
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "event": ["cli_trigger", "x", "trigger", "cli_list"],
            "extra": extras,
        }
    )
    counter = [0]
    (out,) = list(stripped_audit_batches(iter([batch]), counter))
    assert counter == [2]
    assert out.column("id").to_pylist() == [1, 2, 3, 4] and out.schema == batch.schema
    stripped = out.column("extra").to_pylist()
    assert stripped[1] is None and stripped[3] == extras[3]
    assert stripped[0] == extras[0].replace(TOKEN, TOKEN_MARKER)  # type: ignore[union-attr]
    assert stripped[2] == extras[2].replace(TOKEN + "-2", TOKEN_MARKER)  # type: ignore[union-attr]
    unchanged = pa.RecordBatch.from_pydict({"extra": [extras[3]]})
    assert next(stripped_audit_batches(iter([unchanged]), counter)) is unchanged


def test_the_buffer_scan_sends_every_batch_holding_a_token_to_the_strip() -> None:
    """The backup looks for a token once in a batch's data buffer instead of value by value: a batch
    passes untouched only if no value of it can hold one, whatever slice of the buffer it is."""
    plain = json.dumps({"host_name": "ip-10-0-0-1", "full_command": "['airflow', 'dags', 'list']"})
    tokened = json.dumps({"conf": json.dumps(REFERENCE)})
    column = pa.array([plain, None, plain, tokened, plain, plain], pa.string())
    assert not backup._may_hold_token(pa.array([plain, None, ""], pa.string()))
    assert not backup._may_hold_token(pa.array([None, None], pa.string()))
    assert backup._may_hold_token(column)
    # a slice without the token shares the buffer of one with it: sent to the per-value check,
    # which then finds nothing (never the other way round)
    assert backup._may_hold_token(column.slice(0, 3))
    assert backup._may_hold_token(column.slice(3, 1))
    assert backup._may_hold_token(pa.array([pickle.dumps({"task_token": "x"})], pa.binary()))
    assert not backup._may_hold_token(pa.array([pickle.dumps({"other": "x"})], pa.binary()))
    assert backup._may_hold_token(pa.array([tokened], pa.large_string()))  # other types: value by value
    assert not backup._may_hold_token(pa.array([plain], pa.large_string()))
    batches = [
        pa.RecordBatch.from_pydict({"extra": column.slice(0, 3)}),
        pa.RecordBatch.from_pydict({"extra": column.slice(3, 3)}),
        pa.RecordBatch.from_pydict({"extra": pa.array([plain], pa.string())}),
    ]
    counter = [0]
    out = list(backup._token_batches(iter(batches), "extra", lambda b: stripped_audit_batches(b, counter=counter)))
    assert counter == [1]
    assert out[2] is batches[2]
    values = [v for b in out for v in b.column("extra").to_pylist()]
    assert values == [plain, None, plain, tokened.replace(TOKEN + "-2", TOKEN_MARKER), plain, plain, plain]
