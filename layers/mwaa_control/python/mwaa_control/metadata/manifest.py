"""The manifest of a backup: written last, so a backup without one is incomplete and never restored."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

FORMAT = "mwaa-control-metadata/1"
MANIFEST = "manifest.json"
MANIFEST_MAC = "manifest.mac"
PAUSE_STATES = "pause-states.json"
RESTORE_LEDGER_EVENT = "mwaa-control:restore"
"""The audit-log event a restore records itself with. Never exported: a backup of an environment
that was itself restored would carry it, and restoring that backup would plant a ledger entry
claiming the earlier backup was restored into the new target."""


# Airflow's own map of the release that made each schema revision the head (airflow.utils.db.
# _REVISION_HEADS_MAP of 2.11 and 3.3): a database knows its revision, not the release that wrote
# it, and several releases share a revision, so the manifest records the range they span.
REVISION_HEADS = (
    ("2.7.0", "405de8318b3a"),
    ("2.8.0", "10b52ebd31f7"),
    ("2.8.1", "88344c1d9134"),
    ("2.9.0", "1949afb29106"),
    ("2.9.2", "686269002441"),
    ("2.10.0", "22ed7efa9da2"),
    ("2.10.3", "5f2621c13b39"),
    ("3.0.0", "29ce7909c52b"),
    ("3.0.3", "fe199e1abd77"),
    ("3.1.0", "cc92b33c6709"),
    ("3.1.8", "509b94a1042d"),
    ("3.2.0", "1d6611b6ab7c"),
    ("3.3.0", "d2f4e1b3c5a7"),
)


def airflow_versions_of(revision: str | None) -> str | None:
    """The releases whose schema is `revision`, as a version specifier (">=2.9.2,<2.10.0"); None
    for a revision not in the map (a newer release: the manifest then says only the revision)."""
    for index, (version, head) in enumerate(REVISION_HEADS):
        if head == revision:
            following = REVISION_HEADS[index + 1][0] if index + 1 < len(REVISION_HEADS) else None
            return f">={version},<{following}" if following else f">={version}"
    return None


BackupPath = Literal["database", "worker-database", "rest"]
"""How a backup was taken: "database", the engine over Airflow's own connection (Airflow 2 on MWAA,
or a database URL); "worker-database", the engine over a connection an Airflow 3 task opened
itself with its worker's credentials; "rest", Airflow 3's REST API (rest_path.py)."""
REST_SOURCE_DIALECT = "airflow-rest-api"
"""The source_dialect a REST-path backup records (rest_path.SOURCE)."""
NOT_RESTORED_ON_REST = {
    "dag_run": "archived for Athena only: the REST API cannot create finished runs with their states and dates",
    "task_instance": "archived for Athena only: the REST API cannot create task instances with their tries",
    "xcom, log, trigger, asset_event": "not exported: no API writes them",
}


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable by time, unique without coordination: backups are never overwritten."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def backup_prefix(environment: str, backup_id: str) -> str:
    return f"backups/{environment}/{backup_id}"


class FileEntry(BaseModel):
    path: str
    rows: int
    bytes: int
    sha256: str


class ColumnEntry(BaseModel):
    name: str
    kind: str
    nullable: bool


class TableEntry(BaseModel):
    role: str
    why: str
    classified: bool
    rows: int
    columns: list[ColumnEntry]
    files: list[FileEntry]
    sealed_columns: list[str] = Field(default_factory=list)
    restorable: bool = True
    """False for history archived through the REST API (Airflow 3): kept for analysis only."""


class InFlightTask(BaseModel):
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str


class EnvelopeEntry(BaseModel):
    key_id: str
    encrypted_key: str
    context: dict[str, str]


class Manifest(BaseModel):
    format: str = FORMAT
    backup_id: str
    environment: str
    created_at: datetime
    started_at: datetime | None = None
    """When the export began (after any drain): with created_at, how long it took. None in
    manifests written before it was recorded."""
    airflow_version: str | None
    airflow_version_source: str = "operator"
    """"operator" (--airflow-version) or "schema revision" (the releases sharing the database's
    alembic revision, as a specifier such as ">=2.9.2,<2.10.0")."""
    schema_revision: str | None
    source_dialect: str
    tables: dict[str, TableEntry]
    excluded_tables: dict[str, str]
    excluded_dag_prefix: str
    pause_states: dict[str, bool]
    in_flight: list[InFlightTask]
    drained: bool
    envelope: EnvelopeEntry | None
    sealed_values: int
    not_exported: dict[str, list[str]] = Field(default_factory=dict)
    """What the source would not give (REST path): e.g. connection passwords the API redacts."""
    stripped_task_tokens: int = 0
    """Step Functions task tokens dropped from run confs: a backup never carries a live credential."""
    path: BackupPath = "database"
    """Which path took the backup. Absent from manifests written before it was recorded: inferred
    ("rest" for the REST API's source dialect, else "database")."""
    not_restored: dict[str, str] = Field(default_factory=dict)
    """What a restore of this backup will not bring back, and why (table or field -> reason): the
    tables the database paths exclude, or what the REST path archives only or cannot read."""

    @model_validator(mode="before")
    @classmethod
    def _path_of_older_manifests(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "path" not in data:
            data = {**data, "path": "rest" if data.get("source_dialect") == REST_SOURCE_DIALECT else "database"}
        if "not_restored" not in data:
            data = {**data, "not_restored": not_restored_on(data)}
        return data


def not_restored_on(manifest: dict[str, Any]) -> dict[str, str]:
    """What a restore of a backup taken on its path leaves out, from what its manifest records."""
    if manifest.get("path") == "rest":
        missing = dict(NOT_RESTORED_ON_REST)
        for field, ids in (manifest.get("not_exported") or {}).items():
            missing[str(field)] = f"redacted by the REST API for {len(ids)} entries (keep them in a secrets backend)"
        return missing
    return {str(table): str(why) for table, why in (manifest.get("excluded_tables") or {}).items()}


class TableRestore(BaseModel):
    table: str
    role: str
    in_backup: int
    inserted: int = 0
    matched: int = 0
    updated: int = 0
    detached_references: int = 0
    detached_columns: dict[str, int] = Field(default_factory=dict)
    """Per column: references to tables that are not restored (web users, Airflow 3's DAG
    versions), cleared. A restored run or task instance loses its DAG version link this way."""
    id_offset: int | None = None
    reused_ids: dict[int, int] = Field(default_factory=dict)


class RestoreReport(BaseModel):
    restore_id: str
    backup_id: str
    environment: str
    """The environment restored into."""
    source_environment: str = ""
    """The environment the backup was written for (the same unless the operator named another)."""
    status: str
    """"restored", or "already-restored" when the target's audit log shows this backup was restored."""
    started_at: datetime
    finished_at: datetime
    tables: list[TableRestore]
    reencrypted_values: int
    verified: bool
    """Counts and meaning (every reference resolved to the natural key of the row it points at)
    checked against the backup inside the transaction, before commit."""
    fernet_key_verified: bool | None = None
    """True: the target Fernet key decrypted every encrypted value the target held. False: the
    target held none, and the operator accepted a key nothing could prove. None: no key needed."""
    notes: list[str] = Field(default_factory=list)
    """What a restore cannot bring back, said once (cleared links to tables that are not restored)."""
    authenticated: bool = False
    """True when the manifest's MAC checked out under the data key KMS unwrapped for the source
    environment and backup id; False only when the operator allowed an unauthenticated backup."""
    problems: list[str] = Field(default_factory=list)
