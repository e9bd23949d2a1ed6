"""Verification: of a backup against its own manifest, and of a restored database against the
backup it came from. Both return a report; neither changes anything."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from cryptography.fernet import InvalidToken, MultiFernet
from pydantic import BaseModel, Field

from mwaa_control.metadata.catalog import SealedColumn
from mwaa_control.metadata.database import Database, Reader, quote
from mwaa_control.metadata.errors import MetadataError
from mwaa_control.metadata.manifest import MANIFEST, backup_prefix
from mwaa_control.metadata.restore import LEDGER_EVENT, RESTORED_ROLES, fetch_verified, load_manifest
from mwaa_control.metadata.schema import Kind
from mwaa_control.metadata.sealing import fernet_from
from mwaa_control.metadata.store import BackupStore, scratch_dir


class TableCheck(BaseModel):
    table: str
    in_backup: int
    in_target: int | None = None
    missing_keys: int | None = None
    ok: bool


class VerifyReport(BaseModel):
    environment: str
    backup_id: str
    checked: str
    """"backup" (files against the manifest) or "restore" (a database against the backup)."""
    ok: bool
    tables: list[TableCheck] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


class BackupSummary(BaseModel):
    environment: str
    backup_id: str
    created_at: str
    airflow_version: str | None
    schema_revision: str | None
    tables: int
    rows: int
    bytes: int
    in_flight: int


def list_backups(store: BackupStore, environment: str | None = None) -> list[BackupSummary]:
    environments = [environment] if environment else store.list_prefixes("backups")
    found = []
    for env in environments:
        for backup_id in store.list_prefixes(f"backups/{env}"):
            if not store.exists(f"{backup_prefix(env, backup_id)}/{MANIFEST}"):
                continue  # incomplete: its manifest was never written
            manifest = load_manifest(store, env, backup_id)
            found.append(
                BackupSummary(
                    environment=env,
                    backup_id=backup_id,
                    created_at=manifest.created_at.isoformat(),
                    airflow_version=manifest.airflow_version,
                    schema_revision=manifest.schema_revision,
                    tables=len(manifest.tables),
                    rows=sum(t.rows for t in manifest.tables.values()),
                    bytes=sum(f.bytes for t in manifest.tables.values() for f in t.files),
                    in_flight=len(manifest.in_flight),
                )
            )
    return found


def latest_backup(store: BackupStore, environment: str) -> str:
    backups = sorted(list_backups(store, environment), key=lambda b: b.created_at)
    if not backups:
        raise MetadataError(f"no complete backup of {environment} in {store.url}")
    return backups[-1].backup_id


def verify_backup(store: BackupStore, environment: str, backup_id: str) -> VerifyReport:
    manifest = load_manifest(store, environment, backup_id)
    report = VerifyReport(environment=environment, backup_id=backup_id, checked="backup", ok=True)
    with scratch_dir() as scratch:
        try:
            fetch_verified(store, manifest, Path(scratch))
        except MetadataError as error:
            report.ok = False
            report.problems.append(str(error))
    for name, entry in manifest.tables.items():
        report.tables.append(TableCheck(table=name, in_backup=entry.rows, ok=report.ok))
    return report


def verify_restore(
    database: Database, store: BackupStore, environment: str, backup_id: str, target_fernet_key: str | None = None
) -> VerifyReport:
    """Every restored table holds at least the backup's rows; every natural key that does not
    depend on a regenerated id is present; the ledger row exists; secrets decrypt with the key."""
    manifest = load_manifest(store, environment, backup_id)
    schema = database.reflect()
    report = VerifyReport(environment=environment, backup_id=backup_id, checked="restore", ok=True)
    fernet = fernet_from(target_fernet_key)
    regenerated = {t.name for t in schema.tables.values() if t.surrogate_id}
    with scratch_dir() as scratch, database.snapshot() as reader:
        files = fetch_verified(store, manifest, Path(scratch))
        ledger = reader.query("SELECT extra FROM log WHERE event = ?", (LEDGER_EVENT,))
        if not any(backup_id in str(extra) for (extra,) in ledger):
            report.problems.append("the target's audit log has no record of this restore")
        for table in schema.ordered(RESTORED_ROLES):
            entry = manifest.tables.get(table.name)
            if entry is None:
                continue
            count = int(reader.query(f"SELECT COUNT(*) FROM {quote(table.name)}")[0][0])  # noqa: S608
            check = TableCheck(table=table.name, in_backup=entry.rows, in_target=count, ok=count >= entry.rows)
            remapped = {c for r in table.references if r.parent in regenerated for c in r.columns}
            plain = {c.name for c in table.columns if c.kind in (Kind.TEXT, Kind.INTEGER)}
            key = next((k for k in table.identities if not set(k) & remapped and set(k) <= plain), None)
            if key and entry.rows:
                check.missing_keys = _missing_keys(reader, table.name, key, files[table.name])
                check.ok = check.ok and check.missing_keys == 0
            if fernet is not None:
                report.problems += _undecryptable(reader, table.name, table.sealed, fernet)
            report.tables.append(check)
    report.ok = not report.problems and all(t.ok for t in report.tables)
    return report


def _missing_keys(reader: Reader, table: str, key: tuple[str, ...], path: Path) -> int:
    names = ", ".join(quote(c) for c in key)
    rows = reader.query(f"SELECT {names} FROM {quote(table)}")  # noqa: S608
    present = {tuple(str(v) for v in row) for row in rows}
    backup = pq.read_table(path, columns=list(key))
    missing = 0
    for row in zip(*(backup.column(c).to_pylist() for c in key), strict=True):
        if any(v is None for v in row):
            continue
        if tuple(str(v) for v in row) not in present:
            missing += 1
    return missing


def _undecryptable(reader: Reader, table: str, sealed: list[SealedColumn], fernet: MultiFernet) -> list[str]:
    problems = []
    for column in sealed:
        flag, name = column.flag, column.column
        if flag is None:
            continue
        rows = reader.query(
            f"SELECT {quote(name)} FROM {quote(table)} WHERE {quote(flag)} = ? AND {quote(name)} IS NOT NULL",  # noqa: S608
            (True,),
        )
        for (value,) in rows:
            try:
                fernet.decrypt(str(value).encode())
            except InvalidToken:
                problems.append(f"{table}.{name}: a value does not decrypt with the target Fernet key")
                break
    return problems
