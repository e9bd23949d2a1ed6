"""A manifest is untrusted bytes until its MAC checks out: nothing parses it before, a deeply
nested or oversized one is refused before any parser sees it, and every way it can fail to parse
is the typed "damaged manifest" error, never a RecursionError that stops `list` or the choice of
the newest backup."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mwaa_control.metadata.authentication import (
    ALGORITHM,
    MAC_FORMAT,
    MAX_MANIFEST_DEPTH,
    BackupKey,
    ManifestDamaged,
    claimed_created_at,
    manifest_mac,
    open_backup,
)
from mwaa_control.metadata.errors import BackupCorrupt, BackupNotAuthentic, MetadataError
from mwaa_control.metadata.manifest import MANIFEST, MANIFEST_MAC, Manifest, backup_prefix
from mwaa_control.metadata.store import LocalStore
from mwaa_control.metadata.verify import list_backups

ENVIRONMENT, BACKUP_ID = "etl-prod", "20990101T000000Z-deadbeef"
DEEP = b"[" * 200_000


class FakeKeys:
    """A KMS that wraps by prefixing the context: enough to make and unwrap data keys."""

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        key = os.urandom(32)
        return key, json.dumps(context, sort_keys=True).encode() + b"|" + key, "fake-key"

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes:
        wrapped_for, _, key = encrypted.partition(b"|")  # the context holds no "|"; the key may
        if wrapped_for != json.dumps(context, sort_keys=True).encode():
            raise PermissionError("AccessDeniedException")
        return key


def _manifest(key: BackupKey) -> Manifest:
    return Manifest(
        backup_id=BACKUP_ID,
        environment=ENVIRONMENT,
        created_at=datetime(2099, 1, 1, tzinfo=UTC),
        airflow_version="2.11.0",
        schema_revision="5f2621c13b39",
        source_dialect="sqlite",
        tables={},
        excluded_tables={},
        excluded_dag_prefix="mwaa_control_",
        pause_states={},
        in_flight=[],
        drained=True,
        envelope=key.envelope,
        sealed_values=0,
    )


def _write(store: LocalStore, raw: bytes, mac_of: bytes | None, key: BackupKey | None) -> None:
    prefix = backup_prefix(ENVIRONMENT, BACKUP_ID)
    store.put_bytes(f"{prefix}/{MANIFEST}", raw)
    if mac_of is not None and key is not None:
        document = {"format": MAC_FORMAT, "algorithm": ALGORITHM, "mac": manifest_mac(key.data_key, mac_of)}
        store.put_bytes(f"{prefix}/{MANIFEST_MAC}", json.dumps(document).encode())


def _envelope_then(key: BackupKey, tail: bytes) -> bytes:
    """A manifest that opens with a genuine envelope (so KMS unwraps) and then nests deep."""
    head = json.dumps({"envelope": key.envelope.model_dump()})[:-1].encode()
    return head + b', "tables": ' + tail


@pytest.fixture
def keys() -> FakeKeys:
    return FakeKeys()


@pytest.fixture
def key(keys: FakeKeys) -> BackupKey:
    return BackupKey.create(keys, ENVIRONMENT, BACKUP_ID)


def test_a_deep_manifest_with_a_well_formed_mac_is_refused_not_a_crash(
    tmp_path: Path, keys: FakeKeys, key: BackupKey
) -> None:
    """Nothing parses it before the MAC: the forgery is refused as such."""
    store = LocalStore(tmp_path)
    _write(store, _envelope_then(key, DEEP), b"anything", key)
    with pytest.raises(BackupNotAuthentic, match="does not match"):
        open_backup(store, ENVIRONMENT, BACKUP_ID, keys)


def test_an_authentic_but_deep_manifest_is_refused_before_parsing(
    tmp_path: Path, keys: FakeKeys, key: BackupKey
) -> None:
    """Written with the environment's own key (its execution role can): still never parsed."""
    store = LocalStore(tmp_path)
    raw = _envelope_then(key, DEEP)
    _write(store, raw, raw, key)
    with pytest.raises(ManifestDamaged, match=rf"nested more than {MAX_MANIFEST_DEPTH}"):
        open_backup(store, ENVIRONMENT, BACKUP_ID, keys)


@pytest.mark.parametrize("raw", [DEEP, b"{" * 5000, b'{"a": ' * 3000, b"\xff\xfe", b"", b"[1, 2]"])
def test_an_unauthenticated_damaged_manifest_is_a_typed_error(tmp_path: Path, raw: bytes) -> None:
    store = LocalStore(tmp_path)
    _write(store, raw, None, None)
    with pytest.raises(BackupCorrupt):
        open_backup(store, ENVIRONMENT, BACKUP_ID, None, allow_unauthenticated=True)


def test_a_nested_mac_document_is_refused(tmp_path: Path, keys: FakeKeys, key: BackupKey) -> None:
    store = LocalStore(tmp_path)
    _write(store, _manifest(key).model_dump_json(indent=2).encode(), None, None)
    store.put_bytes(f"{backup_prefix(ENVIRONMENT, BACKUP_ID)}/{MANIFEST_MAC}", b"[" * 4000)
    with pytest.raises(BackupNotAuthentic, match=r"manifest\.mac"):
        open_backup(store, ENVIRONMENT, BACKUP_ID, keys)


def test_list_backups_reports_a_deep_manifest_as_damaged(tmp_path: Path, keys: FakeKeys, key: BackupKey) -> None:
    store = LocalStore(tmp_path)
    _write(store, _envelope_then(key, DEEP), b"anything", key)
    (summary,) = list_backups(store, keys=keys)
    assert summary.authenticated is False and "damaged" in summary.authentication


def test_a_genuine_manifest_still_opens(tmp_path: Path, keys: FakeKeys, key: BackupKey) -> None:
    store = LocalStore(tmp_path)
    raw = _manifest(key).model_dump_json(indent=2).encode()
    _write(store, raw, raw, key)
    opened = open_backup(store, ENVIRONMENT, BACKUP_ID, keys)
    assert opened.authenticated is True and opened.manifest.backup_id == BACKUP_ID


def test_the_claimed_time_never_parses_the_document() -> None:
    """What latest_backup orders candidates by, read without a parser that can recurse."""
    assert claimed_created_at(DEEP) is None
    assert claimed_created_at(b'{"created_at": "nonsense"}') is None
    raw = b'{\n  "format": "x",\n  "created_at": "2099-01-01T00:00:00Z",\n  "tables": {}}'
    assert claimed_created_at(raw) == datetime(2099, 1, 1, tzinfo=UTC)


def test_every_open_failure_is_a_metadata_error(tmp_path: Path, keys: FakeKeys, key: BackupKey) -> None:
    for index, raw in enumerate((DEEP, b"[]" * 100_000, b'{"envelope": ' * 10_000, b'"\\"' * 100_000)):
        store = LocalStore(tmp_path / str(index))
        _write(store, raw, b"x", key)
        with pytest.raises(MetadataError):
            open_backup(store, ENVIRONMENT, BACKUP_ID, keys)
