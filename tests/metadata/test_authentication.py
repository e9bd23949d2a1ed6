"""A backup is authenticated before a single byte of it is restored, on real Airflow 2.11 and 2.9
SQLite databases. The attacker can write anything under the backup prefix (and recompute every
checksum), and the strongest one can also call KMS for his own environment's encryption context:
none of it restores. Where authentication is waived on purpose, the restricted unpickler still
refuses code in pickled columns. Whatever is refused leaves the target byte for byte unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from mwaa_control.metadata.authentication import backup_context, manifest_mac
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.errors import BackupNotAuthentic, BackupNotFound, MetadataError, UnsafePickle
from mwaa_control.metadata.manifest import MANIFEST, MANIFEST_MAC, Manifest, backup_prefix
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.verify import latest_backup, list_backups, verify_backup
from tests.metadata.databases import Env, Templates, make_env, own_connection, populate

VICTIM, ATTACKER = "etl-prod", "etl-staging"


class OwnEnvironmentOnly(KmsKeyService):
    """What an environment's execution role may do with the backup key: GenerateDataKey and
    Decrypt only with its own environment in the encryption context (the IAM condition on
    kms:EncryptionContext:mwaa-control:environment)."""

    def __init__(self, kms: Any, key_id: str, environment: str) -> None:
        super().__init__(kms, key_id)
        self.environment = environment

    def _allow(self, context: dict[str, str]) -> None:
        if context.get("mwaa-control:environment") != self.environment:
            error = {"Code": "AccessDeniedException", "Message": "not authorized to use this encryption context"}
            raise ClientError({"Error": error}, "GenerateDataKey")

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        self._allow(context)
        return super().generate_data_key(context)

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes:
        self._allow(context)
        return super().decrypt_data_key(encrypted, context)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


# --- what an attacker with write access to the bucket does -------------------------------------


def folder(env: Env, environment: str, backup_id: str) -> Path:
    return Path(env.store.url) / backup_prefix(environment, backup_id)


def plant(where: Path, table: str, column: str, value: bytes) -> None:
    """Replace one pickled column of the first row of a table's Parquet file."""
    path = where / f"tables/{table}/part-00000.parquet"
    data = pq.read_table(path)
    values = data.column(column).to_pylist()
    values[0] = value
    data = data.set_column(data.schema.get_field_index(column), data.schema.field(column), pa.array(values))
    path.unlink()
    pq.write_table(data, path, compression="zstd")


def recompute_checksums(where: Path, change: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    """What anyone who can write the files can do: make the manifest's checksums match again."""
    manifest = json.loads((where / MANIFEST).read_bytes())
    for entry in manifest["tables"].values():
        for item in entry["files"]:
            data = (where / item["path"]).read_bytes()
            item["sha256"], item["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    if change is not None:
        change(manifest)
    raw = json.dumps(manifest, indent=2).encode()
    (where / MANIFEST).write_bytes(raw)
    return raw


def malicious(marker: Path) -> bytes:
    return pickle.dumps({"run": Payload(marker)}, protocol=5)


# --- fixtures ------------------------------------------------------------------------------------


def backed_up(templates: Templates, tmp: Path, kms: Any, *, keys: bool = True) -> tuple[Env, Manifest, Env, bytes]:
    """A source with a run whose conf is pickled (Airflow 2), backed up; a target sharing the store."""
    source = make_env(templates.v211, tmp, "src", kms)
    populate(source, secrets=keys, conf=pickle.dumps({"partner": "ACME ☃"}, protocol=5))
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest(VICTIM, source.keys if keys else None, source.fernet)
    )
    target = make_env(templates.v211, tmp, "dst", kms, source.store)
    own_connection(target)  # a target whose Fernet key can be proved
    target.keys = source.keys
    return source, manifest, target, target.dump()


def restore(target: Env, backup_id: str, **options: Any) -> Any:
    return RestoreEngine(open_database(target.url), target.store).restore(
        RestoreRequest(VICTIM, backup_id, target.keys, target.fernet, **options)
    )


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "column"), [("dag_run", "conf"), ("task_instance", "executor_config")])
def test_a_planted_pickle_with_recomputed_checksums_is_refused(
    templates: Templates, tmp_path: Path, kms: Any, table: str, column: str
) -> None:
    _, manifest, target, before = backed_up(templates, tmp_path, kms)
    where = folder(target, VICTIM, manifest.backup_id)
    marker = tmp_path / "pwned"
    plant(where, table, column, malicious(marker))
    recompute_checksums(where)
    with pytest.raises(BackupNotAuthentic, match=r"manifest\.mac"):
        restore(target, manifest.backup_id)
    assert target.dump() == before
    assert not marker.exists()


def _other_envelope(source: Env) -> dict[str, Any]:
    other = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest(VICTIM, source.keys, source.fernet)
    )
    assert other.envelope is not None
    return other.envelope.model_dump()


def _one_more_log_row(manifest: dict[str, Any]) -> None:
    entry = manifest["tables"]["log"]
    entry["rows"] += 1
    entry["files"][0]["rows"] += 1


ALTERATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "environment": lambda m: m.update(environment=ATTACKER),
    "backup_id": lambda m: m.update(backup_id="20990101T000000Z-00000000"),
    "row counts": _one_more_log_row,
    "pause states": lambda m: m["pause_states"].update(reports=False),
    "envelope context": lambda m: m["envelope"]["context"].update({"mwaa-control:environment": ATTACKER}),
    "envelope key id": lambda m: m["envelope"].update(key_id="arn:aws:kms:us-east-1:123456789012:key/other"),
    "sealed values": lambda m: m.update(sealed_values=0),
}


@pytest.mark.parametrize("field", sorted(ALTERATIONS))
def test_an_altered_manifest_field_is_refused(templates: Templates, tmp_path: Path, kms: Any, field: str) -> None:
    _, manifest, target, before = backed_up(templates, tmp_path, kms)
    where = folder(target, VICTIM, manifest.backup_id)
    recompute_checksums(where, ALTERATIONS[field])
    with pytest.raises(MetadataError, match=r"manifest\.mac|KMS|does not match"):
        restore(target, manifest.backup_id)
    assert target.dump() == before


def test_an_envelope_of_another_backup_is_refused(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source, manifest, target, before = backed_up(templates, tmp_path, kms)
    envelope = _other_envelope(source)
    where = folder(target, VICTIM, manifest.backup_id)
    recompute_checksums(where, lambda m: m.update(envelope=envelope))
    with pytest.raises(BackupNotAuthentic, match="KMS"):
        restore(target, manifest.backup_id)
    assert target.dump() == before


@pytest.mark.parametrize("change", ["byte flipped", "checksums recomputed", "mac altered", "mac removed", "mac junk"])
def test_altered_files_and_macs_are_refused(templates: Templates, tmp_path: Path, kms: Any, change: str) -> None:
    _, manifest, target, before = backed_up(templates, tmp_path, kms)
    where = folder(target, VICTIM, manifest.backup_id)
    part = where / "tables/dag_run/part-00000.parquet"
    mac = where / MANIFEST_MAC
    if change in ("byte flipped", "checksums recomputed"):
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
        if change == "checksums recomputed":
            recompute_checksums(where)
    elif change == "mac altered":
        document = json.loads(mac.read_bytes())
        document["mac"] = ("0" if document["mac"][0] != "0" else "1") + document["mac"][1:]
        mac.write_text(json.dumps(document))
    elif change == "mac removed":
        mac.unlink()
    else:
        mac.write_bytes(b"\x80\x04not json")
    with pytest.raises(MetadataError, match=r"checksum|manifest\.mac"):
        restore(target, manifest.backup_id)
    assert target.dump() == before


@pytest.mark.parametrize("forgery", ["honest context", "claimed context", "own KMS key"])
def test_an_attacker_with_kms_for_his_own_environment_cannot_forge_a_backup_of_another(
    templates: Templates, tmp_path: Path, kms: Any, forgery: str
) -> None:
    """The strongest attacker: he writes the bucket, runs his own environment (etl-staging, whose
    execution role may use the backup key for etl-staging's context), and has a KMS key of his own."""
    victim, manifest, target, before = backed_up(templates, tmp_path, kms)
    key_id = victim.keys.key_id
    his_keys = OwnEnvironmentOnly(kms, key_id, ATTACKER)
    his = make_env(templates.v211, tmp_path, "attacker", kms, victim.store)
    populate(his, conf=pickle.dumps({"partner": "ACME ☃"}, protocol=5))

    # He cannot make a backup of the victim's environment: KMS refuses the victim's context.
    with pytest.raises(ClientError, match="AccessDenied"):
        BackupEngine(open_database(his.url), his.store).backup(BackupRequest(VICTIM, his_keys, his.fernet))

    # He backs up his own environment, plants code, and presents the result as the victim's.
    own = BackupEngine(open_database(his.url), his.store).backup(BackupRequest(ATTACKER, his_keys, his.fernet))
    assert own.envelope is not None
    source = folder(his, ATTACKER, own.backup_id)
    marker = tmp_path / "pwned"
    plant(source, "dag_run", "conf", malicious(marker))
    forged_id = own.backup_id
    if forgery == "own KMS key":
        his_key = kms.create_key()["KeyMetadata"]["KeyId"]
        plaintext, encrypted, his_key_arn = KmsKeyService(kms, his_key).generate_data_key(
            backup_context(VICTIM, forged_id)
        )
        envelope = {
            "key_id": his_key_arn,
            "encrypted_key": base64.b64encode(encrypted).decode(),
            "context": backup_context(VICTIM, forged_id),
        }
    else:
        # He may unwrap his own backup's data key: it is his environment's context.
        plaintext = his_keys.decrypt_data_key(base64.b64decode(own.envelope.encrypted_key), own.envelope.context)
        envelope = own.envelope.model_dump()
        if forgery == "claimed context":
            envelope["context"] = backup_context(VICTIM, forged_id)

    def as_victims(document: dict[str, Any]) -> None:
        document.update(environment=VICTIM, envelope=envelope)

    raw = recompute_checksums(source, as_victims)
    (source / MANIFEST_MAC).unlink(missing_ok=True)
    (source / MANIFEST_MAC).write_text(
        json.dumps(
            {"format": "mwaa-control-manifest-mac/1", "algorithm": "HMAC-SHA256", "mac": manifest_mac(plaintext, raw)}
        )
    )
    shutil.move(source, folder(his, VICTIM, forged_id))

    with pytest.raises(BackupNotAuthentic, match="KMS"):
        restore(target, forged_id)
    assert target.dump() == before
    assert not marker.exists()
    assert latest_backup(victim.store, VICTIM, victim.keys) == manifest.backup_id


@pytest.mark.parametrize(
    ("table", "column", "row"), [("dag_run", "conf", "manual__1"), ("task_instance", "executor_config", "load")]
)
def test_the_unpickler_refuses_code_even_when_authentication_is_waived(
    templates: Templates, tmp_path: Path, kms: Any, table: str, column: str, row: str
) -> None:
    """Defence in depth: with --allow-unauthenticated, a planted pickle is still refused."""
    _, manifest, target, before = backed_up(templates, tmp_path, kms)
    where = folder(target, VICTIM, manifest.backup_id)
    marker = tmp_path / "pwned"
    plant(where, table, column, malicious(marker))
    recompute_checksums(where)
    (where / MANIFEST_MAC).unlink()
    with pytest.raises(UnsafePickle, match=rf"{table}\.{column} of .*{row}.*(posix|os)\.system"):
        restore(target, manifest.backup_id, allow_unauthenticated=True)
    assert target.dump() == before
    assert not marker.exists()


def test_an_unauthenticated_backup_restores_only_when_the_operator_says_so(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    """A backup made without a KMS key (or by an older version) has no manifest.mac."""
    _, manifest, target, before = backed_up(templates, tmp_path, kms, keys=False)
    assert not (folder(target, VICTIM, manifest.backup_id) / MANIFEST_MAC).exists()
    with pytest.raises(BackupNotAuthentic, match="--allow-unauthenticated"):
        restore(target, manifest.backup_id)
    assert target.dump() == before
    report = restore(target, manifest.backup_id, allow_unauthenticated=True)
    assert report.status == "restored" and report.authenticated is False
    assert any("not authenticated" in p for p in report.problems)


def test_a_backup_restores_into_another_environment_only_when_its_source_is_named(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    _, manifest, target, before = backed_up(templates, tmp_path, kms)

    def into_staging(**options: Any) -> Any:
        return RestoreEngine(open_database(target.url), target.store).restore(
            RestoreRequest(ATTACKER, manifest.backup_id, target.keys, target.fernet, **options)
        )

    with pytest.raises(BackupNotFound):
        into_staging()
    # The same files presented as staging's own backup: their data key is bound to etl-prod.
    shutil.copytree(folder(target, VICTIM, manifest.backup_id), folder(target, ATTACKER, manifest.backup_id))
    with pytest.raises(BackupNotAuthentic, match="KMS"):
        into_staging()
    assert target.dump() == before
    report = into_staging(source_environment=VICTIM)
    assert (report.status, report.authenticated) == ("restored", True)
    assert (report.environment, report.source_environment, report.backup_id) == (ATTACKER, VICTIM, manifest.backup_id)


def test_the_latest_backup_is_the_newest_authenticated_one(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source, good, _, _ = backed_up(templates, tmp_path, kms)
    engine = BackupEngine(open_database(source.url), source.store)
    unauthenticated = engine.backup(BackupRequest(VICTIM, source.keys, source.fernet))
    (folder(source, VICTIM, unauthenticated.backup_id) / MANIFEST_MAC).unlink()
    tampered = engine.backup(BackupRequest(VICTIM, source.keys, source.fernet))
    recompute_checksums(
        folder(source, VICTIM, tampered.backup_id), lambda m: m.update(created_at="2099-01-01T00:00:00Z")
    )

    assert latest_backup(source.store, VICTIM, source.keys) == good.backup_id
    listed = {b.backup_id: b for b in list_backups(source.store, VICTIM, keys=source.keys)}
    assert listed[good.backup_id].authenticated is True
    assert listed[unauthenticated.backup_id].authenticated is False
    assert "manifest.mac" in listed[unauthenticated.backup_id].authentication
    assert listed[tampered.backup_id].authenticated is False
    assert "does not match" in listed[tampered.backup_id].authentication
    unchecked = {b.backup_id: b for b in list_backups(source.store, VICTIM)}
    assert unchecked[good.backup_id].authenticated is None
    assert "not checked" in unchecked[good.backup_id].authentication
    assert unchecked[unauthenticated.backup_id].authenticated is False

    # Nothing authenticated left: no backup is chosen.
    shutil.rmtree(folder(source, VICTIM, good.backup_id))
    with pytest.raises(MetadataError, match="no authenticated backup"):
        latest_backup(source.store, VICTIM, source.keys)


def test_verify_says_whether_a_backup_is_authenticated(templates: Templates, tmp_path: Path, kms: Any) -> None:
    _, manifest, target, _ = backed_up(templates, tmp_path, kms)
    checked = verify_backup(target.store, VICTIM, manifest.backup_id, keys=target.keys)
    assert checked.ok and checked.authenticated is True
    unchecked = verify_backup(target.store, VICTIM, manifest.backup_id)
    assert unchecked.ok and unchecked.authenticated is None
    assert "not checked" in unchecked.authentication
    recompute_checksums(folder(target, VICTIM, manifest.backup_id), lambda m: m.update(pause_states={}))
    tampered = verify_backup(target.store, VICTIM, manifest.backup_id, keys=target.keys)
    assert not tampered.ok and tampered.authenticated is False
    assert any("manifest.mac" in p for p in tampered.problems)
