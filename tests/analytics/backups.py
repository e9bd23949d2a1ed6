"""Real Airflow metadata databases and backups of them made by the real backup engine."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from localcloud.airflow.backend import AirflowBackend
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import Manifest
from mwaa_control.metadata.sealing import KeyService
from mwaa_control.metadata.store import LocalStore


def migrated(home: Path, major: int) -> Path:
    """`airflow db migrate` of the local release of that line (LOCAL_RELEASES: 2.11.0, 3.0.6), ~7 s."""
    AirflowBackend(home, major).ensure_ready()
    return home / "airflow.db"


def copy_database(source: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, target_dir / "airflow.db"))


def back_up(database: Path, bucket_root: Path, environment: str, at: datetime, keys: KeyService) -> Manifest:
    engine = BackupEngine(open_database(f"sqlite:///{database}"), LocalStore(bucket_root))
    return engine.backup(BackupRequest(environment=environment, keys=keys, source_fernet_key=None, clock=lambda: at))
