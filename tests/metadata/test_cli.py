"""`mwaactl metadata`: a restore without --backup-id takes the newest AUTHENTICATED backup; an
unauthenticated one needs --allow-unauthenticated; another environment's backup needs
--source-environment. On real Airflow 2.11 SQLite databases, KMS from moto."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mwaa_control.metadata.manifest import MANIFEST_MAC, backup_prefix
from mwaactl.main import app
from tests.metadata.databases import Templates, make_env, populate

runner = CliRunner()


def _backup(url: str, store: Path, environment: str, fernet: str, key: str | None) -> str:
    arguments = ["metadata", "backup", "--db-url", url, "--to", str(store), "-e", environment, "--region", "us-east-1"]
    done = runner.invoke(app, arguments + (["--kms-key-id", key] if key else []), env={"SOURCE_FERNET": fernet})
    assert done.exit_code == 0, done.output
    found = re.search(r"backup (\S+):", done.output)
    assert found, done.output
    return found.group(1)


def _restore(url: str, store: Path, environment: str, fernet: str, key: str, *extra: str) -> Any:
    arguments = ["metadata", "restore", "--db-url", url, "--from", str(store), "-e", environment]
    arguments += ["--kms-key-id", key, "--region", "us-east-1", "--fernet-key-env", "TARGET_FERNET", *extra]
    return runner.invoke(app, arguments, env={"TARGET_FERNET": fernet})


def test_restore_takes_the_newest_authenticated_backup(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source = make_env(templates.v211, tmp_path, "src", kms)
    populate(source, secrets=False)
    store = tmp_path / "store"
    key = source.keys.key_id
    older = _backup(source.url, store, "etl-prod", source.fernet, key)
    newer = _backup(source.url, store, "etl-prod", source.fernet, key)
    (store / backup_prefix("etl-prod", newer) / MANIFEST_MAC).unlink()
    unsigned = _backup(source.url, store, "etl-prod", source.fernet, None)

    target = make_env(templates.v211, tmp_path, "dst", kms)
    done = _restore(target.url, store, "etl-prod", target.fernet, key)
    assert done.exit_code == 0, done.output
    assert f"restored {older}" in done.output

    listed = runner.invoke(
        app, ["metadata", "list", "--from", str(store), "-e", "etl-prod", "--kms-key-id", key, "--region", "us-east-1"]
    )
    assert listed.exit_code == 0, listed.output
    assert "authenticated" in listed.output and "manifest.mac" in listed.output

    other = make_env(templates.v211, tmp_path, "other", kms)
    refused = _restore(other.url, store, "etl-prod", other.fernet, key, "--backup-id", unsigned)
    assert refused.exit_code == 1 and "--allow-unauthenticated" in refused.output
    waived = _restore(
        other.url, store, "etl-prod", other.fernet, key, "--backup-id", unsigned, "--allow-unauthenticated"
    )
    assert waived.exit_code == 0, waived.output
    assert "NOT AUTHENTICATED" in waived.output

    staging = make_env(templates.v211, tmp_path, "staging", kms)
    elsewhere = _restore(staging.url, store, "etl-staging", staging.fernet, key, "--backup-id", older)
    assert elsewhere.exit_code == 1
    named = _restore(
        staging.url, store, "etl-staging", staging.fernet, key, "--backup-id", older, "--source-environment", "etl-prod"
    )
    assert named.exit_code == 0, named.output
