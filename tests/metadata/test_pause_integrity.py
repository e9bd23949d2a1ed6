"""What a pause demands of its backup before anything is deleted (pause/integrity.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.errors import BackupCorrupt
from mwaa_control.pause.integrity import verify_for_deletion
from tests.metadata.databases import Templates, make_env, populate

ENVIRONMENT = "etl-prod"


@pytest.mark.parametrize("path", ["database", "worker-database", "rest"])
def test_only_a_backup_that_restores_history_lets_a_pause_delete(
    templates: Templates,
    tmp_path: Path,
    kms: Any,
    path: str,
) -> None:
    source = make_env(templates.v211, tmp_path, "src", kms)
    populate(source)
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest(ENVIRONMENT, source.keys, source.fernet, path=path)
    )
    # An export (no deletion follows) accepts every path: the backup is authentic and complete.
    exported = verify_for_deletion(source.store, source.keys, ENVIRONMENT, manifest.backup_id, before_delete=False)
    assert exported.rows == sum(t.rows for t in manifest.tables.values())
    if path == "rest":
        with pytest.raises(BackupCorrupt, match=r"REST API.*nothing is deleted"):
            verify_for_deletion(source.store, source.keys, ENVIRONMENT, manifest.backup_id)
    else:
        assert verify_for_deletion(source.store, source.keys, ENVIRONMENT, manifest.backup_id).tables
