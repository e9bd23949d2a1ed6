"""The check a pause makes before it deletes anything, light enough for a Lambda (no pyarrow):
the backup's manifest authenticates under KMS for this environment and backup id, every file the
manifest lists is there with its recorded size and SHA-256, and the snapshot authenticates too.

It proves the backup is complete and untouched since its writer (the environment's own export DAG,
which also runs the full verification with Parquet and pickle checks before it reports success)
closed it. It cannot prove the writer exported the right rows: the row counts are the writer's."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mwaa_control.metadata.authentication import open_backup
from mwaa_control.metadata.errors import BackupCorrupt
from mwaa_control.metadata.sealing import KeyService
from mwaa_control.metadata.store import BackupStore, scratch_dir
from mwaa_control.pause.models import VerifiedBackup

CHUNK = 1 << 20


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def verify_for_deletion(
    store: BackupStore,
    keys: KeyService,
    environment: str,
    backup_id: str,
    *,
    before_delete: bool = True,
    accept_rest_path_losses: bool = False,
) -> VerifiedBackup:
    """Proves the backup complete and untouched. `before_delete` (a pause, not an export): it must
    also hold run history, so a backup taken through the REST API (which archives history for
    Athena but cannot restore it) lets an environment be deleted only when the operator accepted
    that (`accept_rest_path_losses`); what it will not restore is in the result."""
    opened = open_backup(store, environment, backup_id, keys)  # refuses anything unauthenticated
    manifest = opened.manifest
    if not manifest.tables:
        raise BackupCorrupt(f"backup {backup_id} of {environment} lists no tables")
    if before_delete and manifest.path == "rest" and not accept_rest_path_losses:
        raise BackupCorrupt(
            f"backup {backup_id} of {environment} was taken through the REST API: its run history and "
            "connection passwords cannot be restored, so it cannot stand in for the environment unless the pause "
            "accepts that (accept_rest_path_losses); nothing is deleted"
        )
    files = 0
    total = 0
    with scratch_dir() as scratch:
        local = Path(scratch) / "file"
        for name, table in manifest.tables.items():
            for entry in table.files:
                store.get_file(f"{opened.prefix}/{entry.path}", local)
                digest, size = _sha256(local)
                if size != entry.bytes or digest != entry.sha256:
                    raise BackupCorrupt(
                        f"backup {backup_id} of {environment}: {entry.path} ({name}) is not the file the manifest "
                        f"records ({size} bytes, sha256 {digest[:12]}; expected {entry.bytes}, {entry.sha256[:12]})"
                    )
                files += 1
                total += size
                local.unlink()
    return VerifiedBackup(
        environment=environment,
        backup_id=backup_id,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables.values()),
        files=files,
        bytes=total,
        authentication=opened.authentication,
        snapshot="",
        drained=manifest.drained,
        in_flight=len(manifest.in_flight),
        path=manifest.path,
        not_restored=dict(manifest.not_restored),
        seconds=None
        if manifest.started_at is None
        else max(0.0, (manifest.created_at - manifest.started_at).total_seconds()),
    )
