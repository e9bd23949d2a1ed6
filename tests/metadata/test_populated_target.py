"""Restores into a target that already holds rows (the normal case: a new environment's DAG
processor has registered datasets, its scheduler has a job, operators made pools and connections),
on real freshly migrated Airflow 2.11 and 2.9 SQLite schemas. The full round trips with Airflow's
own seeding are in test_round_trip.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.errors import RestoreRefused
from mwaa_control.metadata.manifest import Manifest
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.verify import verify_restore
from mwaactl.main import app
from tests.metadata.databases import (
    Env,
    Templates,
    add_datasets,
    add_history_without_keys,
    make_env,
    populate,
    target_rows,
)

runner = CliRunner()
SOURCE_DATASETS = ["s3://lake/orders", "s3://lake/customers", "s3://lake/invoices"]
EVENTS = (
    "SELECT d.uri, e.extra, e.source_dag_id FROM dataset_event e LEFT JOIN dataset d ON d.id = e.dataset_id"
    " ORDER BY e.extra"
)


@pytest.fixture(params=["v211", "v292"])
def template(request: pytest.FixtureRequest, templates: Templates) -> Path:
    path: Path = getattr(templates, request.param)
    return path


def _source(template: Path, tmp: Path, kms: Any, tag: str = "one") -> tuple[Env, Manifest]:
    source = make_env(template, tmp, "src", kms)
    populate(source)
    add_datasets(source, SOURCE_DATASETS, events=True)
    add_history_without_keys(source, tag)
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    return source, manifest


def _target(template: Path, tmp: Path, kms: Any, source: Env, *, rows: bool = True) -> Env:
    target = make_env(template, tmp, "dst", kms, source.store)
    if rows:
        target_rows(target)
        # The target's DAG processor registered the source's datasets too, in another order.
        add_datasets(target, list(reversed(SOURCE_DATASETS)), events=False)
    return target


def _restore(source: Env, target: Env, manifest: Manifest, **options: Any) -> Any:
    return RestoreEngine(open_database(target.url), source.store).restore(
        RestoreRequest("etl-prod", manifest.backup_id, source.keys, options.pop("key", target.fernet), **options)
    )


# Finding 1: dataset events follow their dataset ------------------------------------------------


def test_dataset_events_keep_their_dataset_when_ids_shift(template: Path, tmp_path: Path, kms: Any) -> None:
    source, manifest = _source(template, tmp_path, kms)
    target = _target(template, tmp_path, kms, source)
    _restore(source, target, manifest)
    assert target.sql(EVENTS) == source.sql(EVENTS)


# Finding 2: verification compares meaning --------------------------------------------------------


def test_verify_fails_when_a_dataset_event_points_at_the_wrong_dataset(
    template: Path, tmp_path: Path, kms: Any
) -> None:
    source, manifest = _source(template, tmp_path, kms)
    target = _target(template, tmp_path, kms, source)
    _restore(source, target, manifest)
    database = open_database(target.url)
    assert verify_restore(database, source.store, "etl-prod", manifest.backup_id, target.fernet, keys=source.keys).ok
    orders, customers = (target.sql("SELECT id FROM dataset WHERE uri = ?", (u,))[0][0] for u in SOURCE_DATASETS[:2])
    target.sql("UPDATE dataset_event SET dataset_id = ? WHERE dataset_id = ?", (customers, orders))
    report = verify_restore(database, source.store, "etl-prod", manifest.backup_id, target.fernet, keys=source.keys)
    assert not report.ok
    assert any("dataset_event" in p and "s3://lake/orders" in p for p in report.problems), report.problems


# Finding 3: the target's Fernet key is proved, or the operator says it cannot be -----------------


def test_a_key_that_does_not_open_the_targets_connections_is_refused(template: Path, tmp_path: Path, kms: Any) -> None:
    source, manifest = _source(template, tmp_path, kms)
    target = _target(template, tmp_path, kms, source)
    before = target.dump()
    with pytest.raises(RestoreRefused, match="connection 'target_conn'"):
        _restore(source, target, manifest, key=Fernet.generate_key().decode())
    assert target.dump() == before


def test_an_unverifiable_key_is_refused_unless_the_operator_accepts_it(
    template: Path, tmp_path: Path, kms: Any
) -> None:
    source, manifest = _source(template, tmp_path, kms)
    target = _target(template, tmp_path, kms, source, rows=False)
    before = target.dump()
    with pytest.raises(RestoreRefused, match="cannot be verified"):
        _restore(source, target, manifest)
    assert target.dump() == before
    report = _restore(source, target, manifest, accept_unverifiable_fernet_key=True)
    assert report.status == "restored" and report.fernet_key_verified is False
    assert any("not verifiable" in p for p in report.problems)


def test_a_rerun_with_the_right_key_repairs_secrets_restored_under_a_wrong_one(
    template: Path, tmp_path: Path, kms: Any
) -> None:
    source, manifest = _source(template, tmp_path, kms)
    target = _target(template, tmp_path, kms, source, rows=False)
    wrong = Fernet.generate_key().decode()
    _restore(source, target, manifest, key=wrong, accept_unverifiable_fernet_key=True)
    with pytest.raises(RestoreRefused, match="repair_secrets"):  # a plain rerun says how, and changes nothing
        _restore(source, target, manifest)
    # Nothing but the secrets being repaired is encrypted in the target: the key is still unproved.
    with pytest.raises(RestoreRefused, match="cannot be verified"):
        _restore(source, target, manifest, repair_secrets=True)
    report = _restore(source, target, manifest, repair_secrets=True, accept_unverifiable_fernet_key=True)
    assert report.status == "secrets-repaired" and report.reencrypted_values >= 1
    (value,) = target.sql("SELECT val FROM variable WHERE key = 'k'")[0]
    assert Fernet(target.fernet.encode()).decrypt(value.encode()) == b"SEKRET-value"
    database = open_database(target.url)
    assert verify_restore(database, source.store, "etl-prod", manifest.backup_id, target.fernet, keys=source.keys).ok


# Finding 5: overlapping backups converge -----------------------------------------------------------


def test_a_second_overlapping_backup_adds_no_duplicate_history(template: Path, tmp_path: Path, kms: Any) -> None:
    source, first = _source(template, tmp_path, kms)
    add_history_without_keys(source, "two")  # history written after the first backup
    second = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    target = _target(template, tmp_path, kms, source)
    _restore(source, target, first)
    _restore(source, target, second)
    for table in ("job", "trigger", "dataset_event"):
        expected = source.sql(f"SELECT COUNT(*) FROM {table}")[0][0]
        own = {"job": 1, "trigger": 0, "dataset_event": 0}[table]
        assert target.sql(f"SELECT COUNT(*) FROM {table}")[0][0] == expected + own, table
    events = "SELECT COUNT(*) FROM log WHERE event LIKE 'edit-%'"
    assert target.sql(events) == source.sql(events)


def test_cli_refuses_an_unverifiable_key_until_told_and_then_says_so(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    source, manifest = _source(templates.v211, tmp_path, kms)
    target = _target(templates.v211, tmp_path, kms, source, rows=False)
    arguments = ["metadata", "restore", "--db-url", target.url, "--from", source.store.url, "-e", "etl-prod"]
    arguments += ["--backup-id", manifest.backup_id, "--kms-key-id", source.keys.key_id, "--region", "us-east-1"]
    env = {"AIRFLOW__CORE__FERNET_KEY": target.fernet}
    refused = runner.invoke(app, arguments, env=env)
    assert refused.exit_code == 1 and "--accept-unverifiable-fernet-key" in refused.output
    done = runner.invoke(app, [*arguments, "--accept-unverifiable-fernet-key"], env=env)
    assert done.exit_code == 0, done.output
    assert "Fernet key NOT VERIFIED" in done.output


def test_the_backups_dataset_extra_wins_over_the_targets(templates: Templates, tmp_path: Path, kms: Any) -> None:
    """Datasets are configuration: on a conflict (same URI) the backup's extra wins, as documented."""
    source, manifest = _source(templates.v211, tmp_path, kms)
    target = _target(templates.v211, tmp_path, kms, source)
    query = "SELECT uri, extra FROM dataset WHERE uri LIKE 's3://lake/%' ORDER BY uri"
    assert target.sql(query) != source.sql(query)
    _restore(source, target, manifest)
    assert target.sql(query) == source.sql(query)


def test_links_to_tables_that_are_not_restored_are_cleared_and_reported(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    """A note's author (a web user: not restored) is cleared, and the report says so per column,
    as it says on Airflow 3 that runs and task instances lose their DAG version."""
    source = make_env(templates.v211, tmp_path, "src", kms)
    populate(source)
    source.sql(
        "INSERT INTO ab_user (id, first_name, last_name, username, email, active) VALUES (7, 'A', 'B', 'ab', 'a@b', 1)"
    )
    source.sql(
        "INSERT INTO dag_run_note (user_id, dag_run_id, content, created_at, updated_at)"
        " SELECT 7, id, 'checked ☃', ?, ? FROM dag_run",
        ("2026-11-21 10:00:00.000000", "2026-11-21 10:00:00.000000"),
    )
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    target = _target(templates.v211, tmp_path, kms, source)
    report = _restore(source, target, manifest)
    notes = next(t for t in report.tables if t.table == "dag_run_note")
    assert notes.detached_columns == {"user_id": 1}
    assert any(n.startswith("dag_run_note.user_id: 1 links to ab_user cleared") for n in report.notes), report.notes
    assert target.sql("SELECT user_id, content FROM dag_run_note") == [(None, "checked ☃")]
