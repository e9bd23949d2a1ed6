"""A damaged backup (truncated or unparsable manifest, no manifest.mac, a KMS error) is reported as
damaged, never as a traceback, and never stops `list` or a restore of the newest intact backup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.manifest import MANIFEST, MANIFEST_MAC, backup_prefix
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import LocalStore
from mwaa_control.metadata.verify import latest_backup, list_backups, verify_backup
from mwaactl.main import app
from tests.metadata.databases import Templates, make_env, populate

runner = CliRunner()


class FailingKms(KmsKeyService):
    """KMS unreachable or throttling: not a forgery, but nothing can be proved."""

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes:
        raise ConnectionError("kms.us-east-1.amazonaws.com: connection reset")


def _damaged_store(templates: Templates, tmp: Path, kms: Any) -> tuple[LocalStore, Any, dict[str, str]]:
    source = make_env(templates.v211, tmp, "src", kms)
    populate(source, secrets=False)
    engine = BackupEngine(open_database(source.url), source.store)
    ids = {}
    for name, stamp in (("intact", "20261101T000000Z"), ("truncated", "20261102T000000Z")):
        ids[name] = f"{stamp}-{name}"
        engine.backup(BackupRequest("etl-prod", source.keys, source.fernet, backup_id=ids[name]))
    for name, stamp in (("garbage", "20261103T000000Z"), ("nomac", "20261104T000000Z"), ("empty", "20261105T000000Z")):
        ids[name] = f"{stamp}-{name}"
        engine.backup(BackupRequest("etl-prod", source.keys, source.fernet, backup_id=ids[name]))
    root = Path(source.store.url)

    def folder(name: str) -> Path:
        return root / backup_prefix("etl-prod", ids[name])

    manifest = folder("truncated") / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[: len(manifest.read_bytes()) // 2])
    (folder("garbage") / MANIFEST).write_bytes(b"\xff\xfe not json \x00")
    (folder("nomac") / MANIFEST_MAC).unlink()
    (folder("empty") / MANIFEST).write_bytes(b"")
    return source.store, source.keys, ids


def test_list_reports_damaged_backups_and_restore_takes_the_newest_intact_one(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    store, keys, ids = _damaged_store(templates, tmp_path, kms)
    listed = {b.backup_id: b for b in list_backups(store, "etl-prod", keys)}
    assert set(listed) == set(ids.values())
    assert listed[ids["intact"]].status == "verified"
    for name in ("truncated", "garbage", "nomac", "empty"):
        assert listed[ids[name]].status == "damaged", (name, listed[ids[name]])
        assert listed[ids[name]].authenticated is False
    assert latest_backup(store, "etl-prod", keys) == ids["intact"]
    unchecked = {b.backup_id: b for b in list_backups(store, "etl-prod", None)}
    assert unchecked[ids["truncated"]].status == "damaged"
    assert unchecked[ids["intact"]].status == "not checked"
    report = verify_backup(store, "etl-prod", ids["truncated"], keys)
    assert not report.ok and "manifest" in report.problems[0]


def test_a_kms_error_makes_a_backup_unverifiable_not_a_traceback(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    store, keys, ids = _damaged_store(templates, tmp_path, kms)
    failing = FailingKms(kms, keys.key_id)
    listed = {b.backup_id: b for b in list_backups(store, "etl-prod", failing)}
    assert listed[ids["intact"]].status == "damaged" and "KMS" in listed[ids["intact"]].authentication
    with pytest.raises(Exception, match="no authenticated backup") as raised:
        latest_backup(store, "etl-prod", failing)
    assert type(raised.value).__module__.startswith("mwaa_control")


def test_cli_list_and_restore_survive_a_damaged_newest_backup(templates: Templates, tmp_path: Path, kms: Any) -> None:
    store, keys, ids = _damaged_store(templates, tmp_path, kms)
    common = ["--from", store.url, "-e", "etl-prod", "--kms-key-id", keys.key_id, "--region", "us-east-1"]
    listed = runner.invoke(app, ["metadata", "list", *common])
    assert listed.exit_code == 0, listed.output
    assert listed.exception is None or isinstance(listed.exception, SystemExit)
    line = next(line for line in listed.output.splitlines() if ids["truncated"][:15] in line)
    assert "damaged" in line
    assert "5 backups: 1 verified, 4 damaged" in listed.output
    target = make_env(templates.v211, tmp_path, "dst", kms)
    done = runner.invoke(
        app,
        ["metadata", "restore", "--db-url", target.url, *common, "--fernet-key-env", "TARGET_FERNET"],
        env={"TARGET_FERNET": target.fernet},
    )
    assert done.exit_code == 0, done.output
    assert f"restored {ids['intact']}" in done.output
    named = runner.invoke(
        app,
        ["metadata", "restore", "--db-url", target.url, *common, "--backup-id", ids["truncated"]],
        env={"AIRFLOW__CORE__FERNET_KEY": target.fernet},
    )
    assert named.exit_code == 1 and not isinstance(named.exception, ValueError | KeyError | TypeError)
    assert "damaged" in named.output or "manifest" in named.output
