"""The manifest of a backup: written last, so a backup without one is incomplete and never restored."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, Field

FORMAT = "mwaa-control-metadata/1"
MANIFEST = "manifest.json"
MANIFEST_MAC = "manifest.mac"
PAUSE_STATES = "pause-states.json"


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
    airflow_version: str | None
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


class TableRestore(BaseModel):
    table: str
    role: str
    in_backup: int
    inserted: int = 0
    matched: int = 0
    updated: int = 0
    detached_references: int = 0
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
    authenticated: bool = False
    """True when the manifest's MAC checked out under the data key KMS unwrapped for the source
    environment and backup id; False only when the operator allowed an unauthenticated backup."""
    problems: list[str] = Field(default_factory=list)
