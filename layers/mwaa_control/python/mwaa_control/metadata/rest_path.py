"""Airflow 3 on MWAA: task code cannot reach the metadata database, so backup and restore go
through the REST API (InvokeRestApi) and, where the API redacts, the CLI token API.

Restored: variables (values of sensitive keys read with `variables get`, which does not redact),
connections except what the API redacts, pools, and DAG pause states (once the DAGs are parsed).
Archived for analysis only: DAG runs and task instances, in the same Parquet tables and column
names as a database backup, so the Athena queries work on both.

Not restorable on Airflow 3, and why:
- run and task history: the API can create runs but not finished ones with their states, dates
  and tries; writing them would need database access that MWAA does not give on Airflow 3;
- connection passwords and sensitive extra fields: the API returns `***` and MWAA's CLI allow-list
  has no `connections get`/`export`. Keep connection secrets in a secrets backend (Secrets Manager);
  the manifest lists every connection whose secret was not exported;
- XComs, the audit log, triggers, dataset/asset events: no API writes them.

Backups are authenticated like database backups (authentication.py, one shared helper): the
manifest's MAC is written under the KMS data key, and a restore checks it, for the environment
and backup id it was asked for, before it reads a file. Task tokens in run confs are dropped.

The REST restore is not one transaction; its equivalent is idempotence: every step is an
overwrite-or-skip bulk action, so re-running after a failure converges and a second run changes
nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mwaa_control.airflow.client import AirflowClient
from mwaa_control.airflow.errors import AirflowNotFound
from mwaa_control.metadata.authentication import BackupKey, check_name, open_backup, write_manifest
from mwaa_control.metadata.backup import write_table
from mwaa_control.metadata.catalog import Role, SealedColumn
from mwaa_control.metadata.errors import MetadataError, RestoreRefused
from mwaa_control.metadata.manifest import (
    MANIFEST,
    InFlightTask,
    Manifest,
    RestoreReport,
    TableRestore,
    backup_prefix,
    new_backup_id,
)
from mwaa_control.metadata.restore import fetch_verified
from mwaa_control.metadata.schema import ARROW_TYPES, Column, Kind, Table
from mwaa_control.metadata.sealing import KeyService, Sealer
from mwaa_control.metadata.store import BackupStore, scratch_dir
from mwaa_control.metadata.task_tokens import without_task_token

log = logging.getLogger(__name__)

SOURCE = "airflow-rest-api"
REDACTED = "***"
T, N, B, F, TS, J = Kind.TEXT, Kind.INTEGER, Kind.BOOLEAN, Kind.FLOAT, Kind.TIMESTAMP, Kind.JSON

# (table, role, restorable, [(column, kind, API field)])
LAYOUT: dict[str, tuple[Role, bool, list[tuple[str, Kind, str]]]] = {
    "variable": (Role.CONFIGURATION, True, [("key", T, "key"), ("val", T, "value"), ("description", T, "description")]),
    "connection": (
        Role.CONFIGURATION,
        True,
        [
            ("conn_id", T, "connection_id"),
            ("conn_type", T, "conn_type"),
            ("description", T, "description"),
            ("host", T, "host"),
            ("schema", T, "schema"),
            ("login", T, "login"),
            ("password", T, "password"),
            ("port", N, "port"),
            ("extra", T, "extra"),
        ],
    ),
    "slot_pool": (
        Role.CONFIGURATION,
        True,
        [
            ("pool", T, "name"),
            ("slots", N, "slots"),
            ("description", T, "description"),
            ("include_deferred", B, "include_deferred"),
        ],
    ),
    "dag": (
        Role.CONFIGURATION,
        True,
        [
            ("dag_id", T, "dag_id"),
            ("is_paused", B, "is_paused"),
            ("is_stale", B, "is_stale"),
            ("fileloc", T, "fileloc"),
        ],
    ),
    "dag_run": (
        Role.HISTORY,
        False,
        [
            ("dag_id", T, "dag_id"),
            ("run_id", T, "dag_run_id"),
            ("logical_date", TS, "logical_date"),
            ("run_after", TS, "run_after"),
            ("queued_at", TS, "queued_at"),
            ("start_date", TS, "start_date"),
            ("end_date", TS, "end_date"),
            ("data_interval_start", TS, "data_interval_start"),
            ("data_interval_end", TS, "data_interval_end"),
            ("last_scheduling_decision", TS, "last_scheduling_decision"),
            ("state", T, "state"),
            ("run_type", T, "run_type"),
            ("triggered_by", T, "triggered_by"),
            ("conf", J, "conf"),
            ("note", T, "note"),
        ],
    ),
    "task_instance": (
        Role.HISTORY,
        False,
        [
            ("id", T, "id"),
            ("dag_id", T, "dag_id"),
            ("run_id", T, "dag_run_id"),
            ("task_id", T, "task_id"),
            ("map_index", N, "map_index"),
            ("logical_date", TS, "logical_date"),
            ("start_date", TS, "start_date"),
            ("end_date", TS, "end_date"),
            ("duration", F, "duration"),
            ("state", T, "state"),
            ("try_number", N, "try_number"),
            ("max_tries", N, "max_tries"),
            ("hostname", T, "hostname"),
            ("pool", T, "pool"),
            ("pool_slots", N, "pool_slots"),
            ("queue", T, "queue"),
            ("priority_weight", N, "priority_weight"),
            ("operator", T, "operator"),
            ("queued_dttm", TS, "queued_when"),
            ("executor", T, "executor"),
            ("rendered_map_index", T, "rendered_map_index"),
            ("note", T, "note"),
        ],
    ),
}
SEALED = {"variable": ["val"], "connection": ["password", "extra"]}


def _table(name: str) -> Table:
    role, _, columns = LAYOUT[name]
    return Table(
        name=name,
        columns=[Column(c, kind, True) for c, kind, _ in columns],
        primary_key=(),
        unique_keys=[],
        references=[],
        role=role,
        why="exported through the REST API (Airflow 3)",
        classified=True,
        sealed=[SealedColumn(name, c, None, detect_fernet=False) for c in SEALED.get(name, [])],
    )


def _value(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind is Kind.TIMESTAMP:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if kind is Kind.JSON:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if kind is Kind.INTEGER:
        return int(value)
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.BOOLEAN:
        return bool(value)
    return str(value)


def _is_redacted(value: Any) -> bool:
    if value == REDACTED:
        return True
    if isinstance(value, str) and REDACTED in value:
        try:
            return REDACTED in json.dumps(json.loads(value))
        except ValueError:
            return False
    return False


def _is_json_object(value: Any) -> bool:
    if not isinstance(value, str) or not value.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False


class RestBackup:
    def __init__(self, airflow: AirflowClient, store: BackupStore) -> None:
        self.airflow = airflow
        self.store = store

    def backup(
        self,
        environment: str,
        keys: KeyService,
        *,
        backup_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pause_states: Mapping[str, bool] | None = None,
        in_flight: list[InFlightTask] | None = None,
        drained: bool = False,
    ) -> Manifest:
        """`pause_states`: the DAGs' states before a drain paused them (pause/rest_fallback.py), which
        the backup records instead of the paused ones the API now shows; `in_flight`: tasks that still
        ran when the drain gave up waiting."""
        if self.airflow.major < 3:
            raise MetadataError("the REST path is for Airflow 3; Airflow 2 backs up from the database (export DAG)")
        backup_id = check_name(backup_id or new_backup_id(clock()), "backup id")
        prefix = backup_prefix(check_name(environment, "environment"), backup_id)
        if self.store.exists(f"{prefix}/{MANIFEST}"):
            raise MetadataError(f"backup {prefix} already exists; backups are never overwritten")
        started = clock()
        key = BackupKey.create(keys, environment, backup_id)
        sealer = key.sealer()
        not_exported: dict[str, list[str]] = {}
        sources = {
            "variable": self._variables(),
            "connection": self._connections(not_exported),
            "slot_pool": list(self.airflow.paged("/pools", "pools")),
            "dag": list(self.airflow.paged("/dags", "dags")),
            "dag_run": list(self.airflow.batch_list("/dags/~/dagRuns/list", "dag_runs")),
            "task_instance": list(self.airflow.batch_list("/dags/~/dagRuns/~/taskInstances/list", "task_instances")),
        }
        if pause_states is not None:
            for dag in sources["dag"]:
                dag["is_paused"] = pause_states.get(str(dag["dag_id"]), bool(dag["is_paused"]))
        stripped = 0
        for run in sources["dag_run"]:
            run["conf"], dropped = without_task_token(run.get("conf"))
            stripped += dropped
        sealed = [0]
        tables = {}
        try:
            with scratch_dir() as scratch:
                for name, items in sources.items():
                    table = _table(name)
                    rows = [i for i in items if not str(i.get("dag_id", "")).startswith("mwaa_control_")]
                    entry = write_table(
                        self.store, table, iter([self._batch(table, rows, sealer, sealed)]), Path(scratch), prefix
                    )
                    entry.restorable = LAYOUT[name][1]
                    tables[name] = entry
            manifest = Manifest(
                backup_id=backup_id,
                environment=environment,
                created_at=clock(),
                started_at=started,
                airflow_version=self.airflow.airflow_version,
                schema_revision=None,
                source_dialect=SOURCE,
                tables=tables,
                excluded_tables={},
                excluded_dag_prefix="mwaa_control_",
                pause_states={d["dag_id"]: bool(d["is_paused"]) for d in sources["dag"]},
                in_flight=list(in_flight or []),
                drained=drained,
                envelope=key.envelope,
                sealed_values=sealed[0],
                not_exported=not_exported,
                stripped_task_tokens=stripped,
            )
            write_manifest(self.store, prefix, manifest, key)
        except BaseException:
            # Only what this backup wrote: a drain's pause states next to it stay for the failure path.
            self.store.delete_prefix(f"{prefix}/tables")
            raise
        return manifest

    def _variables(self) -> list[dict[str, Any]]:
        variables = list(self.airflow.paged("/variables", "variables"))
        for variable in variables:
            # The API redacts values of sensitive keys and re-serialises JSON objects (losing their
            # formatting and redacting sensitive fields inside); the CLI prints what is stored.
            if _is_redacted(variable.get("value")) or _is_json_object(variable.get("value")):
                variable["value"] = self.airflow.variable_from_cli(variable["key"])
        return variables

    def _connections(self, not_exported: dict[str, list[str]]) -> list[dict[str, Any]]:
        connections = list(self.airflow.paged("/connections", "connections"))
        for connection in connections:
            if _is_redacted(connection.get("password")):
                not_exported.setdefault("connection.password", []).append(connection["connection_id"])
                connection["password"] = None
            extra = connection.get("extra")
            if _is_redacted(extra):
                # Only the redacted fields are lost: the others are kept.
                kept = {k: v for k, v in json.loads(str(extra)).items() if v != REDACTED}
                not_exported.setdefault("connection.extra", []).append(connection["connection_id"])
                connection["extra"] = json.dumps(kept)
        return connections

    @staticmethod
    def _batch(table: Table, items: list[dict[str, Any]], sealer: Sealer, counter: list[int]) -> pa.RecordBatch:
        _, _, layout = LAYOUT[table.name]
        sealed = {s.column for s in table.sealed}
        arrays = []
        for column, kind, field in layout:
            values = [_value(kind, item.get(field)) for item in items]
            if column in sealed:
                where = f"{table.name}.{column}"
                values = [None if v is None else sealer.seal(v, fernet=False, where=where) for v in values]
                counter[0] += sum(v is not None for v in values)
            arrays.append(pa.array(values, type=ARROW_TYPES[kind]))
        return pa.RecordBatch.from_arrays(arrays, schema=table.arrow_schema())


class RestRestore:
    def __init__(self, airflow: AirflowClient, store: BackupStore) -> None:
        self.airflow = airflow
        self.store = store

    def restore(
        self,
        environment: str,
        backup_id: str,
        keys: KeyService,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        target_environment: str | None = None,
    ) -> RestoreReport:
        """Restore the backup `backup_id` written for `environment` into this client's Airflow
        (`target_environment` names it in the report). Always authenticated: no waiver here."""
        started = clock()
        opened = open_backup(self.store, environment, backup_id, keys)
        manifest = opened.manifest
        sealer = opened.sealer()
        if sealer is None:
            raise RestoreRefused("the backup has no data key: it cannot hold secrets this restore needs")
        results: list[TableRestore] = []
        problems: list[str] = []
        with scratch_dir() as scratch:
            files = fetch_verified(self.store, opened, Path(scratch))
            rows = {
                name: self._rows(files[name], name, sealer)
                for name in ("variable", "connection", "slot_pool", "dag")
                if name in files
            }
        results.append(self._bulk("variable", "/variables", rows.get("variable", []), self._variable, "overwrite"))
        # Skip, never overwrite: a redacted password would replace the target's real one with nothing.
        results.append(self._bulk("connection", "/connections", rows.get("connection", []), self._connection, "skip"))
        results.append(self._bulk("slot_pool", "/pools", rows.get("slot_pool", []), self._pool, "overwrite"))
        results.append(self._pause_states(rows.get("dag", []), problems))
        for field, ids in manifest.not_exported.items():
            problems.append(f"{field} not in the backup (redacted by the API) for: {', '.join(ids)}")
        return RestoreReport(
            restore_id=f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}",
            backup_id=backup_id,
            environment=target_environment or environment,
            source_environment=environment,
            status="restored",
            started_at=started,
            finished_at=clock(),
            tables=results,
            reencrypted_values=0,
            verified=not any(p.startswith("DAG") for p in problems),
            authenticated=opened.authenticated is True,
            problems=problems,
        )

    @staticmethod
    def _rows(path: Path, name: str, sealer: Sealer) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        for column in SEALED.get(name, []):
            for row in rows:
                if row.get(column) is not None:
                    row[column] = sealer.unseal(row[column], where=f"{name}.{column}")[0]
        return rows

    @staticmethod
    def _variable(row: dict[str, Any]) -> dict[str, Any]:
        return {"key": row["key"], "value": row["val"], "description": row["description"]}

    @staticmethod
    def _connection(row: dict[str, Any]) -> dict[str, Any]:
        body = {
            "connection_id": row["conn_id"],
            "conn_type": row["conn_type"],
            "description": row["description"],
            "host": row["host"],
            "schema": row["schema"],
            "login": row["login"],
            "port": row["port"],
            "password": row["password"],
            "extra": row["extra"],
        }
        return body

    @staticmethod
    def _pool(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": row["pool"],
            "slots": row["slots"],
            "description": row["description"],
            "include_deferred": bool(row["include_deferred"]),
        }

    def _bulk(
        self,
        table: str,
        path: str,
        rows: list[dict[str, Any]],
        body: Callable[[dict[str, Any]], dict[str, Any]],
        on_existence: str,
    ) -> TableRestore:
        result = TableRestore(table=table, role=Role.CONFIGURATION.value, in_backup=len(rows))
        if not rows:
            return result
        response = self.airflow.rest(
            "PATCH",
            path,
            body={
                "actions": [
                    {"action": "create", "entities": [body(r) for r in rows], "action_on_existence": on_existence}
                ]
            },
        )
        created = response.get("create", {}) if isinstance(response, dict) else {}
        failures = created.get("errors") or []
        if failures:
            raise RestoreRefused(f"{table}: the API refused {len(failures)} entities: {json.dumps(failures)[:500]}")
        written = len(created.get("success") or [])
        if on_existence == "overwrite":
            # The API does not say which existed: overwriting with the same values is a no-op.
            result.updated = written
        else:
            result.inserted, result.matched = written, len(rows) - written
        return result

    def _pause_states(self, dags: list[dict[str, Any]], problems: list[str]) -> TableRestore:
        result = TableRestore(table="dag", role=Role.CONFIGURATION.value, in_backup=len(dags))
        present = {d["dag_id"]: bool(d["is_paused"]) for d in self.airflow.paged("/dags", "dags")}
        for dag in dags:
            dag_id, paused = dag["dag_id"], bool(dag["is_paused"])
            if dag_id not in present:
                problems.append(f"DAG {dag_id} is not parsed in the target yet; its pause state ({paused}) is pending")
                continue
            result.matched += 1
            if present[dag_id] != paused:
                try:
                    self.airflow.set_paused(dag_id, paused)
                    result.updated += 1
                except AirflowNotFound:
                    problems.append(f"DAG {dag_id} disappeared while its pause state was applied")
        return result
