"""Authentication of backups: who wrote a backup is proved before a single byte of it is restored.

Why a MAC under a KMS-wrapped key, and not the manifest's checksums alone: a restore writes pickled
columns (dag_run.conf on Airflow 2, executor_config) that Airflow later unpickles, so whoever can
write a backup can run code in the target environment. Checksums prove nothing: whoever writes
the files recomputes them. What an attacker with write access to the bucket cannot do is make KMS
unwrap a data key for an environment that is not his.

The design:
- Every backup gets a data key from KMS `GenerateDataKey` under the encryption context
  `{"mwaa-control:environment": <env>, "mwaa-control:backup": <backup_id>}`. IAM lets each
  environment's execution role call GenerateDataKey/Decrypt only with its own environment in that
  context, so only that environment's backup writer (and the control plane) can make a key that
  unwraps for it; and the backup id in the context binds the key to that one backup.
- Two keys are derived from the data key, never used for anything else: the data key itself seals
  secrets (AES-256-GCM, the sealed-value format of sealing.py, unchanged), and HKDF-SHA256 with the
  info string `MAC_INFO` derives the MAC key. HKDF output is independent of its input key for any
  other use, so the two purposes never share a key.
- `manifest.mac` holds HMAC-SHA256 over the exact bytes of manifest.json (no re-serialisation, so a
  different pydantic cannot change what is checked). It is written before manifest.json, which
  stays the completion marker: a backup with a manifest and no MAC was written without a key, or
  by an older version.
- To open a backup, the reader builds the expected context itself from the environment and backup
  id it was asked for (never from the manifest), unwraps the data key with it (a backup of another
  environment, or under another id, fails in KMS), checks the MAC with `hmac.compare_digest`,
  only then parses the manifest, and refuses one that names another environment or backup id or
  records another context. Only then are files downloaded and checked against its checksums.
- Nothing parses manifest.json before its MAC checks out: the two strings KMS needs are read from
  the raw bytes with a pattern (a wrong pick fails in KMS or at the MAC, never elsewhere). Before
  any parser sees it (authenticated or not: an environment's own role can write an authentic
  manifest), a manifest over `MAX_MANIFEST_BYTES` or nested deeper than `MAX_MANIFEST_DEPTH` is
  refused, and every parse failure (RecursionError included) is `ManifestDamaged`, a
  BackupCorrupt: listing and choosing the newest backup skip it instead of crashing.

What it does not stop: whoever can write the bucket can delete backups, or hide newer ones so that
an older authenticated backup is the newest; and an environment's own execution role can write a
valid backup of its own environment (it writes the real ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from mwaa_control.metadata.errors import BackupCorrupt, BackupNotAuthentic, MetadataError
from mwaa_control.metadata.manifest import MANIFEST, MANIFEST_MAC, EnvelopeEntry, Manifest, backup_prefix
from mwaa_control.metadata.sealing import KeyService, LocalKeyMismatch, LocalKeyService, Sealer
from mwaa_control.metadata.store import BackupStore

MAC_FORMAT = "mwaa-control-manifest-mac/1"
ALGORITHM = "HMAC-SHA256"
MAC_INFO = b"mwaa-control:metadata-backup:manifest-mac:v1"
ENVIRONMENT_KEY = "mwaa-control:environment"
BACKUP_KEY = "mwaa-control:backup"
MAX_MANIFEST_BYTES = 16 << 20
"""A backup of thousands of tables, DAGs and files has a manifest of a few MB. Checking the nesting
of the largest allowed one, at its most hostile, takes about 4 s."""
MAX_MAC_BYTES = 4096
MAX_MANIFEST_DEPTH = 32
"""A real manifest nests 6 levels (tables, entry, files, item); parsers recurse per level."""
# Everything but the brackets that nest: JSON strings (their brackets are text) and runs of other
# bytes, coalesced into few matches. Possessive, and an unterminated string runs to the end: no
# start is ever retried, so it is linear whatever the input.
NOT_NESTING = re.compile(rb'(?:[^"\[\]{}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z))++', re.DOTALL)
NESTING = [0] * 256
NESTING[ord("[")] = NESTING[ord("{")] = 1
NESTING[ord("]")] = NESTING[ord("}")] = -1
# What KMS needs, as the writer (pydantic, field order fixed) lays it out: ARNs and base64 hold no
# quote or backslash.
RAW_ENVELOPE = re.compile(
    rb'"envelope"\s*:\s*\{\s*"key_id"\s*:\s*"([^"\\]{1,2048})"\s*,\s*"encrypted_key"\s*:\s*"([^"\\]{1,8192})"'
)
RAW_CREATED_AT = re.compile(rb'"created_at"\s*:\s*"([0-9T:.+Z-]{10,40})"')
# MWAA environment names and backup ids: one path segment, no traversal.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def backup_context(environment: str, backup_id: str) -> dict[str, str]:
    """The KMS encryption context of one backup; IAM conditions on its environment key."""
    return {ENVIRONMENT_KEY: environment, BACKUP_KEY: backup_id}


def mac_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MAC_INFO).derive(data_key)


def manifest_mac(data_key: bytes, raw: bytes) -> str:
    return hmac.new(mac_key(data_key), raw, hashlib.sha256).hexdigest()


class ManifestDamaged(BackupCorrupt):
    """manifest.json or manifest.mac cannot be read: oversized, nested too deep, not JSON, not a
    manifest. A damaged backup, never a crash. Nothing was changed."""


def check_name(value: str, what: str) -> str:
    if not NAME.fullmatch(value) or ".." in value:
        raise MetadataError(f"{what} {value[:80]!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


@dataclass(frozen=True)
class BackupKey:
    """The plaintext data key of one backup (kept in memory only) and its wrapped form."""

    data_key: bytes = field(repr=False)
    envelope: EnvelopeEntry

    @classmethod
    def create(cls, keys: KeyService, environment: str, backup_id: str) -> BackupKey:
        context = backup_context(environment, backup_id)
        plaintext, encrypted, key_id = keys.generate_data_key(context)
        envelope = EnvelopeEntry(key_id=key_id, encrypted_key=base64.b64encode(encrypted).decode(), context=context)
        return cls(plaintext, envelope)

    def sealer(self) -> Sealer:
        return Sealer(self.data_key)

    def mac(self, raw: bytes) -> str:
        return manifest_mac(self.data_key, raw)


def write_manifest(store: BackupStore, prefix: str, manifest: Manifest, key: BackupKey | None) -> bytes:
    """manifest.mac first, then manifest.json (the completion marker). Without a key the backup
    cannot be authenticated, and a restore refuses it unless told otherwise."""
    raw = manifest.model_dump_json(indent=2).encode()
    if key is not None:
        document = {"format": MAC_FORMAT, "algorithm": ALGORITHM, "mac": key.mac(raw)}
        store.put_bytes(f"{prefix}/{MANIFEST_MAC}", json.dumps(document, indent=1).encode())
    store.put_bytes(f"{prefix}/{MANIFEST}", raw)
    return raw


@dataclass
class OpenedBackup:
    """A backup's manifest, read from the location the caller asked for, and what is proved."""

    manifest: Manifest
    environment: str
    backup_id: str
    prefix: str
    authenticated: bool | None
    """True: the MAC checked out. False: it could not be authenticated (and the caller allowed
    that). None: not checked (no KMS key given: listing only)."""
    authentication: str
    key: BackupKey | None = None

    def sealer(self) -> Sealer | None:
        return self.key.sealer() if self.key is not None else None


def open_backup(
    store: BackupStore,
    environment: str,
    backup_id: str,
    keys: KeyService | None,
    *,
    allow_unauthenticated: bool = False,
) -> OpenedBackup:
    """The manifest of backups/{environment}/{backup_id}, authenticated as the module says.

    `environment` is the environment the backup was WRITTEN for (the source). Raises
    BackupNotAuthentic when authentication fails, and when it is impossible (no manifest.mac, no
    KMS key) unless `allow_unauthenticated`; a failing MAC is refused whatever that says."""
    check_name(environment, "environment")
    check_name(backup_id, "backup id")
    prefix = backup_prefix(environment, backup_id)
    where = f"backup {backup_id} of {environment}"
    raw = store.get_bytes(f"{prefix}/{MANIFEST}")
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestDamaged(f"{where}: manifest.json is {len(raw)} bytes, more than any real manifest")
    mac = _read_mac(store, prefix, where)
    expected = backup_context(environment, backup_id)
    if mac is None or keys is None:
        why = (
            f"{where} has no manifest.mac (made without a key, KMS or local, or by a version before "
            "authenticated backups): nothing proves who wrote it"
            if mac is None
            else f"{where} cannot be authenticated without the key that wrapped its data key "
            "(--kms-key-id, --key-file or MWAA_CONTROL_LOCAL_KEY)"
        )
        if not allow_unauthenticated:
            raise BackupNotAuthentic(
                f"{why}. It is refused; pass --allow-unauthenticated (allow_unauthenticated=True) only for a "
                "backup whose origin you know (pickled columns are still checked). Nothing was changed."
            )
        manifest = _parse(raw, where)
        _check_identity(manifest, environment, backup_id, where)
        key = None
        if keys is not None and manifest.envelope is not None:
            # Still bound to the requested environment and id: its secrets unseal only if the key agrees.
            key = _unwrap(keys, manifest.envelope.key_id, manifest.envelope.encrypted_key, expected, where)
        if mac is None:
            return OpenedBackup(manifest, environment, backup_id, prefix, False, f"not authenticated: {why}", key)
        return OpenedBackup(
            manifest, environment, backup_id, prefix, None, "not checked (not authenticated): no key given", key
        )
    key_id, encrypted = _raw_envelope(raw, where)
    key = _unwrap(keys, key_id, encrypted, expected, where)
    if not hmac.compare_digest(key.mac(raw), mac):
        raise BackupNotAuthentic(
            f"{where}: manifest.mac does not match manifest.json: the manifest was altered after it was written, "
            f"or was not written by {environment}'s backup writer. Nothing was changed."
        )
    manifest = _parse(raw, where)
    _check_identity(manifest, environment, backup_id, where)
    if manifest.envelope is None or manifest.envelope.context != expected:
        raise BackupNotAuthentic(f"{where}: the manifest records another encryption context than {expected}")
    return OpenedBackup(
        manifest,
        environment,
        backup_id,
        prefix,
        True,
        f"authenticated: data key unwrapped by {key_name(keys)} for {environment}/{backup_id}, manifest MAC verified",
        key,
    )


def _read_mac(store: BackupStore, prefix: str, where: str) -> str | None:
    if not store.exists(f"{prefix}/{MANIFEST_MAC}"):
        return None
    raw = store.get_bytes(f"{prefix}/{MANIFEST_MAC}")
    try:
        if len(raw) > MAX_MAC_BYTES:
            raise ValueError("too large")
        _check_nesting(raw, "manifest.mac")
        document = json.loads(raw)
        if document.get("format") != MAC_FORMAT or document.get("algorithm") != ALGORITHM:
            raise ValueError(f"format {document.get('format')!r}, algorithm {document.get('algorithm')!r}")
        mac = document["mac"]
        if not isinstance(mac, str) or not re.fullmatch(r"[0-9a-f]{64}", mac):
            raise ValueError("the MAC is not 64 hex digits")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, ManifestDamaged) as error:
        raise BackupNotAuthentic(
            f"{where}: manifest.mac is not a MAC document ({str(error)[:200]}). Nothing was changed."
        ) from None
    return mac


def _raw_envelope(raw: bytes, where: str) -> tuple[str, str]:
    """The wrapped data key, read before the manifest is authenticated, WITHOUT parsing it: only
    the two strings KMS needs, found by a pattern; KMS checks them against the context and the MAC
    then checks every byte."""
    found = RAW_ENVELOPE.search(raw)
    if found is None:
        raise ManifestDamaged(f"{where}: manifest.json has no data key envelope. Nothing was changed.")
    try:
        return found.group(1).decode("ascii"), found.group(2).decode("ascii")
    except UnicodeDecodeError:
        raise ManifestDamaged(f"{where}: the data key envelope is not ASCII. Nothing was changed.") from None


def _unwrap(keys: KeyService, key_id: str, encrypted: str, context: dict[str, str], where: str) -> BackupKey:
    try:
        blob = base64.b64decode(encrypted, validate=True)
        plaintext = keys.decrypt_data_key(blob, context)
    except LocalKeyMismatch as error:
        raise BackupNotAuthentic(f"{where}: sealed with another key: {error}. Nothing was changed.") from None
    except (binascii.Error, ValueError) as error:
        raise BackupNotAuthentic(f"{where}: the data key envelope is not valid ({error})") from None
    except Exception as error:
        raise BackupNotAuthentic(
            f"{where}: {key_name(keys)} refused to unwrap its data key for {context} ({_kms_reason(error)}): it "
            "was not written for this environment and backup id, or not under this key. Nothing was changed."
        ) from None
    return BackupKey(plaintext, EnvelopeEntry(key_id=key_id, encrypted_key=encrypted, context=dict(context)))


def _kms_reason(error: Exception) -> str:
    response: Any = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(error).__name__)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def key_name(keys: KeyService) -> str:
    """How messages name the key: an operator with a local key file should not read "KMS"."""
    return f"local key {keys.key_id}" if isinstance(keys, LocalKeyService) else "KMS"


def _check_nesting(raw: bytes, what: str) -> None:
    """Refuse a document nested deeper than MAX_MANIFEST_DEPTH, without parsing it: strings
    removed, brackets counted, all in C-speed loops (linear in the size, capped above)."""
    brackets = NOT_NESTING.sub(b"", raw)
    depth = max(accumulate(map(NESTING.__getitem__, brackets)), default=0)
    if depth > MAX_MANIFEST_DEPTH:
        raise ManifestDamaged(f"{what} is nested more than {MAX_MANIFEST_DEPTH} levels, unlike any real one")


def _parse(raw: bytes, where: str) -> Manifest:
    """The manifest, from bytes that passed the size cap (and the MAC, when there is one)."""
    try:
        _check_nesting(raw, "manifest.json")
        return Manifest.model_validate_json(raw)
    except ManifestDamaged as error:
        raise ManifestDamaged(f"{where}: {error}. Nothing was changed.") from None
    except ValidationError as error:
        raise ManifestDamaged(
            f"{where}: manifest.json is not a manifest ({error.error_count()} errors). Nothing was changed."
        ) from None
    except (RecursionError, ValueError, UnicodeDecodeError, MemoryError) as error:
        raise ManifestDamaged(
            f"{where}: manifest.json cannot be parsed ({type(error).__name__}). Nothing was changed."
        ) from None


def claimed_created_at(raw: bytes) -> datetime | None:
    """The creation time a manifest claims, read without parsing it (nothing recurses): only to
    order candidates, newest first. None when it claims none that reads as a time."""
    if len(raw) > MAX_MANIFEST_BYTES:
        return None
    found = RAW_CREATED_AT.search(raw)
    if found is None:
        return None
    try:
        moment = datetime.fromisoformat(found.group(1).decode("ascii").replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_identity(manifest: Manifest, environment: str, backup_id: str, where: str) -> None:
    if manifest.environment != environment or manifest.backup_id != backup_id:
        raise BackupNotAuthentic(
            f"{where}: the manifest names backup {manifest.backup_id[:80]!r} of {manifest.environment[:80]!r}, "
            "not the one requested. Nothing was changed."
        )
