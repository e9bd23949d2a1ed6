"""Bad input gets a clear error and changes nothing, and the drain before a pause behaves, on real
(freshly migrated) Airflow 2.11 and 2.9 SQLite schemas with a few rows written the way Airflow
writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography.fernet import Fernet

from mwaa_control.metadata.backup import BackupEngine, BackupRequest, Drain
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.errors import (
    BackupCorrupt,
    DrainTimeout,
    MetadataError,
    RestoreRefused,
    SchemaMismatch,
    SealingError,
)
from mwaa_control.metadata.manifest import Manifest, backup_prefix
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.store import LocalStore
from tests.metadata.databases import Env, Templates, make_env, populate


def test_wrong_source_fernet_key_fails_and_leaves_no_partial_backup(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env)
    with pytest.raises(SealingError, match=r"variable\.val of k cannot be decrypted"):
        BackupEngine(open_database(env.url), env.store).backup(
            BackupRequest("etl-prod", env.keys, Fernet.generate_key().decode(), backup_id="b1")
        )
    assert not (Path(env.store.url) / backup_prefix("etl-prod", "b1")).exists()


def test_secrets_without_a_kms_key_are_refused(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env)
    with pytest.raises(MetadataError, match="give a key to seal them"):
        BackupEngine(open_database(env.url), env.store).backup(BackupRequest("etl-prod", None, env.fernet))


def _backed_up(source_template: Path, target_template: Path, tmp: Path, kms: Any) -> tuple[Env, Manifest, Env, bytes]:
    """A populated source backed up, and a target sharing its store, dumped before any restore."""
    source = make_env(source_template, tmp, "src", kms)
    populate(source)
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    target = make_env(target_template, tmp, "dst", kms, source.store)
    return source, manifest, target, target.dump()


def test_restore_into_another_airflow_version_changes_nothing(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source, manifest, target, before = _backed_up(templates.v292, templates.v211, tmp_path, kms)
    with pytest.raises(SchemaMismatch, match="same Airflow version"):
        RestoreEngine(open_database(target.url), source.store).restore(
            RestoreRequest("etl-prod", manifest.backup_id, source.keys, target.fernet)
        )
    assert target.dump() == before


def test_corrupt_backup_and_missing_keys_are_refused(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source, manifest, target, before = _backed_up(templates.v211, templates.v211, tmp_path, kms)
    restore = RestoreEngine(open_database(target.url), source.store)
    with pytest.raises(RestoreRefused, match="Fernet key"):
        restore.restore(RestoreRequest("etl-prod", manifest.backup_id, source.keys, None))
    with pytest.raises(RestoreRefused, match="without the key that wrapped its data key"):
        restore.restore(RestoreRequest("etl-prod", manifest.backup_id, None, target.fernet))
    part = Path(source.store.url) / backup_prefix("etl-prod", manifest.backup_id) / "tables/dag_run/part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match="checksum"):
        restore.restore(RestoreRequest("etl-prod", manifest.backup_id, source.keys, target.fernet))
    assert target.dump() == before


def test_drain_times_out_puts_pause_states_back(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env, running=True)
    with pytest.raises(DrainTimeout, match="still running or queued"):
        BackupEngine(open_database(env.url), env.store).backup(
            BackupRequest("etl-prod", env.keys, env.fernet, drain=Drain(timeout=0, poll=0))
        )
    assert dict(env.sql("SELECT dag_id, is_paused FROM dag")) == {"etl": 0, "reports": 1}
    assert not list(Path(env.store.url).rglob("manifest.json"))


def test_drain_can_proceed_and_record_what_was_in_flight(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env, running=True)
    manifest = BackupEngine(open_database(env.url), env.store).backup(
        BackupRequest("etl-prod", env.keys, env.fernet, drain=Drain(timeout=0, poll=0, on_timeout="proceed"))
    )
    assert [(t.dag_id, t.task_id, t.state) for t in manifest.in_flight] == [("etl", "load", "running")]
    # The backup keeps the pause states from before the drain, and they are put back afterwards.
    assert manifest.pause_states == {"etl": False, "reports": True}
    assert dict(env.sql("SELECT dag_id, is_paused FROM dag")) == {"etl": 0, "reports": 1}


def test_drain_waits_for_running_tasks_then_leaves_dags_paused(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env, running=True)
    waits: list[float] = []

    def task_finishes(seconds: float) -> None:
        waits.append(seconds)
        env.sql("UPDATE task_instance SET state = 'success'")

    manifest = BackupEngine(open_database(env.url), env.store).backup(
        BackupRequest(
            "etl-prod",
            env.keys,
            env.fernet,
            drain=Drain(timeout=60, poll=5, leave_paused=True),
            sleep=task_finishes,
            clock=lambda: datetime(2026, 11, 21, tzinfo=UTC),
        )
    )
    assert waits == [5] and manifest.in_flight == [] and manifest.drained
    assert manifest.pause_states == {"etl": False, "reports": True}
    assert dict(env.sql("SELECT dag_id, is_paused FROM dag")) == {"etl": 1, "reports": 1}


def test_failed_backup_puts_pause_states_back_even_before_a_pause(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env)

    class FailingStore(LocalStore):
        def put_file(self, key: str, source: Path) -> None:
            if "task_instance" in key:
                raise OSError("disk full")
            super().put_file(key, source)

    store = FailingStore(tmp_path / "failing")
    with pytest.raises(OSError, match="disk full"):
        BackupEngine(open_database(env.url), store).backup(
            BackupRequest("etl-prod", env.keys, env.fernet, drain=Drain(timeout=0, leave_paused=True), backup_id="b")
        )
    assert dict(env.sql("SELECT dag_id, is_paused FROM dag")) == {"etl": 0, "reports": 1}
    assert not (tmp_path / "failing" / backup_prefix("etl-prod", "b")).exists()


def test_pause_states_are_recorded_before_the_drain(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env)
    manifest = BackupEngine(open_database(env.url), env.store).backup(
        BackupRequest("etl-prod", env.keys, env.fernet, drain=Drain(timeout=0, leave_paused=True))
    )
    recorded = Path(env.store.url) / backup_prefix("etl-prod", manifest.backup_id) / "pause-states.json"
    assert json.loads(recorded.read_text()) == {"etl": False, "reports": True}


def test_restore_with_a_key_that_is_not_the_targets_changes_nothing(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    source = make_env(templates.v211, tmp_path, "src", kms)
    populate(source)
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest("etl-prod", source.keys, source.fernet)
    )
    target = make_env(templates.v211, tmp_path, "dst", kms, source.store)
    token = Fernet(target.fernet.encode()).encrypt(b"target's own").decode()
    target.sql("INSERT INTO variable (key, val, is_encrypted) VALUES ('own', ?, 1)", (token,))
    before = target.dump()
    with pytest.raises(RestoreRefused, match="does not decrypt the target's variable 'own'"):
        RestoreEngine(open_database(target.url), source.store).restore(
            RestoreRequest("etl-prod", manifest.backup_id, source.keys, source.fernet)
        )
    assert target.dump() == before


def test_a_key_with_a_null_part_matches_nothing() -> None:
    from mwaa_control.metadata.restore import _key_in

    batch = pa.RecordBatch.from_pydict({"dag_id": ["a", "a"], "logical_date": [None, "2024"]})
    existing = pa.table({"dag_id": ["a", "a"], "logical_date": [None, "2024"]})
    assert _key_in(batch, ("dag_id", "logical_date"), existing).to_pylist() == [False, True]
    assert _key_in(batch, ("logical_date",), existing).to_pylist() == [False, True]


def test_drain_never_sleeps_past_its_timeout(templates: Templates, tmp_path: Path, kms: Any) -> None:
    """A 3-second drain polling every 15 seconds waits 3 seconds, not 15 (it took 16)."""
    env = make_env(templates.v211, tmp_path, "src", kms)
    populate(env, running=True)
    now = [datetime(2026, 11, 21, tzinfo=UTC)]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += timedelta(seconds=seconds)

    with pytest.raises(DrainTimeout):
        BackupEngine(open_database(env.url), env.store).backup(
            BackupRequest(
                "etl-prod", env.keys, env.fernet, drain=Drain(timeout=3, poll=15), sleep=sleep, clock=lambda: now[0]
            )
        )
    assert waits == [3]


def test_the_manifest_records_the_airflow_versions_of_the_schema(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    """Without --airflow-version, the releases sharing the database's schema revision."""
    for template, expected in ((templates.v211, ">=2.10.3,<3.0.0"), (templates.v292, ">=2.9.2,<2.10.0")):
        env = make_env(template, tmp_path, template.parent.name, kms)
        populate(env)
        manifest = BackupEngine(open_database(env.url), env.store).backup(
            BackupRequest("etl-prod", env.keys, env.fernet)
        )
        assert (manifest.airflow_version, manifest.airflow_version_source) == (expected, "schema revision")
