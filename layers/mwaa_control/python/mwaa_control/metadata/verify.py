"""Verification: of a backup against its own manifest, and of a restored database against the
backup it came from. Both return a report; neither changes anything. Each says whether the backup
is authenticated (authentication.py), and says so when it could not check."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from cryptography.fernet import InvalidToken, MultiFernet
from pydantic import BaseModel, Field

from mwaa_control.metadata import pickles
from mwaa_control.metadata.authentication import OpenedBackup, open_backup
from mwaa_control.metadata.catalog import Role, SealedColumn
from mwaa_control.metadata.database import Database, Reader, parquet_batches, quote
from mwaa_control.metadata.errors import MetadataError
from mwaa_control.metadata.executable_content import check_executable_content
from mwaa_control.metadata.manifest import MANIFEST, TableEntry, backup_prefix
from mwaa_control.metadata.restore import (
    BATCH_ROWS,
    LEDGER_EVENT,
    RESTORED_ROLES,
    fetch_verified,
    meaning_problems,
    value_digests,
)
from mwaa_control.metadata.schema import Column, Kind, Table
from mwaa_control.metadata.sealing import KeyService, fernet_from
from mwaa_control.metadata.store import BackupStore, scratch_dir

log = logging.getLogger(__name__)


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
    authenticated: bool | None = None
    """True: MAC verified under the KMS-unwrapped data key; False: cannot be or is not
    authentic; None: not checked (no KMS key given)."""
    authentication: str = ""
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
    authenticated: bool | None
    """As VerifyReport.authenticated; a damaged or forged backup is False, with the reason."""
    authentication: str
    status: str = "not checked"
    """"verified" (the MAC checks out under the KMS-unwrapped key), "damaged" (truncated or
    unparsable manifest, no manifest.mac, a MAC that does not match, KMS refusing or failing: it
    will not be restored), or "not checked" (no KMS key given)."""


def _status(authenticated: bool | None) -> str:
    return {True: "verified", False: "damaged", None: "not checked"}[authenticated]


def list_backups(
    store: BackupStore, environment: str | None = None, keys: KeyService | None = None
) -> list[BackupSummary]:
    """Complete backups (with a manifest). With `keys`, each is authenticated (one KMS Decrypt);
    without, each says "not checked" unless it plainly cannot be authenticated (no manifest.mac)."""
    environments = [environment] if environment else store.list_prefixes("backups")
    found = []
    for env in environments:
        for backup_id in store.list_prefixes(f"backups/{env}"):
            if not store.exists(f"{backup_prefix(env, backup_id)}/{MANIFEST}"):
                continue  # incomplete: its manifest was never written
            found.append(_summary(store, env, backup_id, keys))
    return found


def _summary(store: BackupStore, environment: str, backup_id: str, keys: KeyService | None) -> BackupSummary:
    try:
        opened = open_backup(store, environment, backup_id, keys, allow_unauthenticated=True)
    except Exception as error:  # one unreadable backup (store or KMS failing) must not hide the others
        reason = str(error) if isinstance(error, MetadataError) else f"{type(error).__name__}: {error}"
        return BackupSummary(
            environment=environment,
            backup_id=backup_id,
            created_at="",
            airflow_version=None,
            schema_revision=None,
            tables=0,
            rows=0,
            bytes=0,
            in_flight=0,
            authenticated=False,
            authentication=f"damaged or forged: {reason}",
            status="damaged",
        )
    manifest = opened.manifest
    return BackupSummary(
        environment=environment,
        backup_id=backup_id,
        created_at=manifest.created_at.isoformat(),
        airflow_version=manifest.airflow_version,
        schema_revision=manifest.schema_revision,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables.values()),
        bytes=sum(f.bytes for t in manifest.tables.values() for f in t.files),
        in_flight=len(manifest.in_flight),
        authenticated=opened.authenticated,
        authentication=opened.authentication,
        status=_status(opened.authenticated),
    )


def latest_backup(store: BackupStore, environment: str, keys: KeyService) -> str:
    """The newest AUTHENTICATED backup of an environment (the environment it was written for).
    Unauthenticated, damaged and forged backups are skipped (list_backups says why): whoever can
    write the bucket could otherwise make his backup the newest. Backups are tried newest first by
    the time their manifest claims, and only until one authenticates: one KMS call, usually."""
    candidates: list[tuple[datetime, str]] = []
    for backup_id in store.list_prefixes(f"backups/{environment}"):
        key = f"{backup_prefix(environment, backup_id)}/{MANIFEST}"
        try:
            if store.exists(key):
                candidates.append((_claimed_time(store.get_bytes(key)), backup_id))
        except Exception as error:  # an unreadable manifest is a damaged backup, tried last
            log.warning("backup %s of %s: manifest unreadable: %s", backup_id, environment, error)
            candidates.append((datetime.min.replace(tzinfo=UTC), backup_id))
    skipped: list[str] = []
    for _, backup_id in sorted(candidates, reverse=True):
        try:
            open_backup(store, environment, backup_id, keys)
        except Exception as error:  # damaged, forged, or KMS failing: the next one may be intact
            log.warning("skipping backup %s of %s: %s", backup_id, environment, error)
            skipped.append(backup_id)
            continue
        return backup_id
    detail = f" ({len(skipped)} skipped as unauthenticated or damaged: {', '.join(skipped[:5])})" if skipped else ""
    raise MetadataError(f"no authenticated backup of {environment} in {store.url}{detail}")


def _claimed_time(raw: bytes) -> datetime:
    """Only to order the candidates: a forged time puts a forgery first, where it fails."""
    try:
        moment = datetime.fromisoformat(str(json.loads(raw)["created_at"]).replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, TypeError, KeyError):
        return datetime.min.replace(tzinfo=UTC)


def verify_backup(store: BackupStore, environment: str, backup_id: str, keys: KeyService | None = None) -> VerifyReport:
    """Authentication (with `keys`), every file against the manifest, every pickled value against
    the restricted unpickler. Without keys, the report says authentication was not checked."""
    report = VerifyReport(environment=environment, backup_id=backup_id, checked="backup", ok=True)
    try:
        opened = open_backup(store, environment, backup_id, keys, allow_unauthenticated=True)
    except MetadataError as error:
        report.ok, report.authenticated, report.authentication = False, False, str(error)
        report.problems.append(str(error))
        return report
    report.authenticated, report.authentication = opened.authenticated, opened.authentication
    if opened.authenticated is False:
        report.problems.append(opened.authentication)
    with scratch_dir() as scratch:
        try:
            files = fetch_verified(store, opened, Path(scratch))
            # Every table a database restore would write, whatever the manifest's `restorable` says
            # (the database restore does not read that flag), with the checks the restore runs.
            for name, entry in opened.manifest.tables.items():
                if Role(entry.role) in RESTORED_ROLES:
                    pickles.check_table(_table_of(name, entry), files[name])
            if opened.authenticated is False:
                check_executable_content(files)  # as a restore of an unauthenticated backup would
        except MetadataError as error:
            report.problems.append(str(error))
    report.ok = not report.problems
    for name, entry in opened.manifest.tables.items():
        report.tables.append(TableCheck(table=name, in_backup=entry.rows, ok=report.ok))
    return report


def _table_of(name: str, entry: TableEntry) -> Table:
    return Table(
        name=name,
        columns=[Column(c.name, Kind(c.kind), c.nullable) for c in entry.columns],
        primary_key=(),
        unique_keys=[],
        references=[],
        role=Role(entry.role),
        why=entry.why,
        classified=entry.classified,
    )


def verify_restore(
    database: Database,
    store: BackupStore,
    environment: str,
    backup_id: str,
    target_fernet_key: str | None = None,
    *,
    keys: KeyService | None = None,
) -> VerifyReport:
    """Every restored table holds at least the backup's rows; every backup row has a row of the
    same meaning in the target (its natural key or fingerprint, with every reference resolved to
    the natural key of the row it points at, so a link to the wrong row fails); the ledger row
    exists; secrets decrypt with the key. `environment` is the one the backup was written for."""
    opened: OpenedBackup = open_backup(store, environment, backup_id, keys, allow_unauthenticated=True)
    manifest = opened.manifest
    schema = database.reflect()
    report = VerifyReport(
        environment=environment,
        backup_id=backup_id,
        checked="restore",
        ok=True,
        authenticated=opened.authenticated,
        authentication=opened.authentication,
    )
    fernet = fernet_from(target_fernet_key)
    regenerated = {t.name for t in schema.tables.values() if t.surrogate_id}
    with scratch_dir() as scratch, database.snapshot() as reader:
        files = fetch_verified(store, opened, Path(scratch))
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
                check.missing_keys = _missing_keys(reader, table, key, files[table.name])
                check.ok = check.ok and check.missing_keys == 0
            if fernet is not None:
                report.problems += _undecryptable(reader, table.name, table.sealed, fernet)
            report.tables.append(check)
        restored = [t for t in schema.ordered(RESTORED_ROLES) if t.name in manifest.tables and t.name in files]
        report.problems += meaning_problems(reader, schema, files, restored)
    report.ok = not report.problems and all(t.ok for t in report.tables)
    return report


def _missing_keys(reader: Reader, table: Table, key: tuple[str, ...], path: Path) -> int:
    """Backup rows whose natural key (no column of it null) the target lacks. Both sides are read in
    batches and compared by digests of the key: memory is 8 bytes a row."""
    narrow = replace(table, columns=[table.column(c) for c in key])
    present = [value_digests(batch, narrow, key) for batch in reader.batches(narrow)]
    known = pa.concat_arrays(present) if present else pa.array([], pa.int64())
    missing = 0
    for batch in parquet_batches(path, BATCH_ROWS, columns=list(key)):
        valid = pc.is_valid(batch.column(key[0]))
        for column in key[1:]:
            valid = pc.and_(valid, pc.is_valid(batch.column(column)))
        complete = batch.filter(valid)  # SQL keys treat NULLs as distinct: such a row has no key
        found = pc.is_in(value_digests(complete, narrow, key), value_set=known)
        missing += complete.num_rows - (pc.sum(found.cast(pa.int64())).as_py() or 0)
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
