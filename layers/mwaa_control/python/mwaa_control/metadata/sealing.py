"""Secrets in a backup: decrypted with the source environment's Fernet key, sealed with a data key
(envelope encryption, AES-256-GCM) that KMS, or a local key outside AWS, wraps, and encrypted with
the target's Fernet key on restore.

A sealed value is `mwaa-control:sealed:v1:<base64(nonce | ciphertext)>`; its plaintext is a small
JSON document `{"f": <was Fernet-encrypted>, "v": <value>}`, so a restore writes each value back in
the form it had (encrypted, or plain where the source kept it plain). The table and column are the
AEAD associated data: a sealed password cannot be replayed into another column.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import stat
from binascii import b2a_base64
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mwaa_control.metadata.errors import SealingError

PREFIX = "mwaa-control:sealed:v1:"
NONCE_BYTES = 12
LOCAL_KEY_ENV = "MWAA_CONTROL_LOCAL_KEY"
"""Environment variable holding a local key (base64). There is no argument for one: an argument
sits in shell history and in every `ps` listing."""
LOCAL_KEY_BYTES = 32
LOCAL_ENVELOPE = b"MCLK\x01"
"""A locally wrapped data key is LOCAL_ENVELOPE | fingerprint (8) | nonce (12) | ciphertext: the
fingerprint names the wrapping key (as a KMS ciphertext blob names its key), so a restore with
another key says so instead of failing on an opaque tag."""
FINGERPRINT_INFO = b"mwaa-control:local-key-fingerprint:v1\x00"
MAX_KEY_FILE_BYTES = 4096


class KeyService(Protocol):
    """Where data keys come from: KMS (`KmsKeyService`), or a local key outside AWS (`LocalKeyService`)."""

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        """(plaintext key, encrypted key, key id)"""
        ...

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes: ...


class KmsKeyService:
    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self.key_id = key_id

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        response = self._kms.generate_data_key(KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context)
        return response["Plaintext"], response["CiphertextBlob"], response["KeyId"]

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes:
        # KeyId pins the key: a backup wrapped under another key is refused, not silently accepted.
        response = self._kms.decrypt(CiphertextBlob=encrypted, EncryptionContext=context, KeyId=self.key_id)
        return bytes(response["Plaintext"])


class LocalKeyMismatch(SealingError, ValueError):
    """The data key was wrapped by another local key, or not by a local key at all (KMS)."""


class LocalKeyRefused(SealingError):
    """The right local key, but the wrapped data key does not open for this environment and backup
    id: another backup's envelope, or a tampered one."""


class LocalKeyService:
    """`KeyService` without AWS, for self-hosted Airflow: a 256-bit key of the operator's wraps each
    backup's data key (AES-256-GCM) with the encryption context as associated data, so a backup's
    key opens only for its own environment and backup id, as KMS binds it. The envelope format of
    the manifest is unchanged; its key id is `local:<fingerprint>`, never the key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != LOCAL_KEY_BYTES:
            raise SealingError(f"a local key is {LOCAL_KEY_BYTES} bytes (AES-256), not {len(key)}")
        self._aead = AESGCM(key)
        self._fingerprint = hashlib.sha256(FINGERPRINT_INFO + key).digest()[:8]
        self.key_id = local_key_id(self._fingerprint)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyService:
        """32 random bytes, or their base64 or hex text, in a file only its owner can read."""
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise SealingError(f"key file {path} does not exist (`mwaactl metadata keygen {path}` makes one)") from None
        except OSError as error:
            raise SealingError(f"key file {path} cannot be opened: {error.strerror}") from None
        # The checks and the read are of the same open file: nothing can swap it in between.
        with os.fdopen(descriptor, "rb") as file:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise SealingError(f"key file {path} is not a regular file")
            if os.name == "posix" and status.st_mode & 0o077:
                raise SealingError(
                    f"key file {path} can be read or written by group or others (mode "
                    f"{stat.S_IMODE(status.st_mode):04o}): it is refused; run `chmod 600 {path}`"
                )
            raw = file.read(MAX_KEY_FILE_BYTES + 1)
        return cls(_decode_key(raw, f"key file {path}"))

    @classmethod
    def from_text(cls, text: str, where: str = LOCAL_KEY_ENV) -> LocalKeyService:
        """The base64 (or hex) text of a key, as the environment variable holds it."""
        return cls(_decode_key(text.encode(), where))

    @staticmethod
    def _associated_data(header: bytes, context: dict[str, str]) -> bytes:
        return header + json.dumps(context, sort_keys=True, separators=(",", ":")).encode()

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes, str]:
        plaintext, nonce = os.urandom(32), os.urandom(12)
        header = LOCAL_ENVELOPE + self._fingerprint
        wrapped = self._aead.encrypt(nonce, plaintext, self._associated_data(header, context))
        return plaintext, header + nonce + wrapped, self.key_id

    def decrypt_data_key(self, encrypted: bytes, context: dict[str, str]) -> bytes:
        header_length = len(LOCAL_ENVELOPE) + len(self._fingerprint)
        if not encrypted.startswith(LOCAL_ENVELOPE) or len(encrypted) < header_length + 12 + 16:
            raise LocalKeyMismatch(
                "the backup's data key was not wrapped by a local key (KMS? give --kms-key-id); "
                f"this key is {self.key_id}"
            )
        header, nonce, wrapped = (
            encrypted[:header_length],
            encrypted[header_length : header_length + 12],
            encrypted[header_length + 12 :],
        )
        fingerprint = header[len(LOCAL_ENVELOPE) :]
        if not hmac.compare_digest(fingerprint, self._fingerprint):
            raise LocalKeyMismatch(
                f"backup was sealed with local key {local_key_id(fingerprint)}; this key is {self.key_id}"
            )
        try:
            return self._aead.decrypt(nonce, wrapped, self._associated_data(header, context))
        except InvalidTag:
            raise LocalKeyRefused(
                f"local key {self.key_id} does not unwrap this data key for {context}: another backup's, or tampered"
            ) from None


def local_key_id(fingerprint: bytes) -> str:
    return f"local:{fingerprint.hex()}"


def _decode_key(raw: bytes, where: str) -> bytes:
    """Raw bytes, hex or base64; errors never quote what was read (it may be most of a key)."""
    if len(raw) == LOCAL_KEY_BYTES:
        return raw
    text = raw.strip()
    try:
        key = (
            bytes.fromhex(text.decode("ascii"))
            if len(text) == 2 * LOCAL_KEY_BYTES
            else base64.b64decode(text, validate=True)
        )
    except (ValueError, UnicodeDecodeError, binascii.Error):
        key = b""
    if len(key) != LOCAL_KEY_BYTES:
        raise SealingError(
            f"{where} does not hold a {LOCAL_KEY_BYTES * 8}-bit key "
            f"({LOCAL_KEY_BYTES} random bytes, or their base64 or hex)"
        )
    return key


def generate_key_file(path: str | os.PathLike[str]) -> LocalKeyService:
    """A new random local key, written as base64 to a new file of mode 0600. An existing file is
    never overwritten: the backups sealed with the key it holds would become unrestorable."""
    key = os.urandom(LOCAL_KEY_BYTES)
    try:
        # O_EXCL: also refuses a symlink planted where the key is to go.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SealingError(
            f"{path} already exists: refusing to overwrite it (it may be the key of existing backups)"
        ) from None
    except OSError as error:
        raise SealingError(f"cannot create key file {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        if os.name == "posix":
            os.fchmod(descriptor, 0o600)  # whatever the umask
        file.write(base64.b64encode(key) + b"\n")
    return LocalKeyService(key)


def fernet_from(keys: str | None) -> MultiFernet | None:
    """Airflow's `fernet_key` setting: comma-separated keys, the first one encrypts."""
    if not keys or not keys.strip():
        return None
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])
    except ValueError as error:
        raise SealingError(f"the Fernet key is not valid: {error}") from None


class Sealer:
    """Seals with a backup's data key (authentication.BackupKey creates and unwraps it)."""

    def __init__(self, data_key: bytes) -> None:
        self._aead = AESGCM(data_key)

    def seal(self, value: str, *, fernet: bool, where: str) -> str:
        return self.seal_all([value], fernet=fernet, where=where)[0]

    def seal_all(self, values: Sequence[str], *, fernet: bool, where: str) -> list[str]:
        """Each value sealed on its own (its own random nonce), as `seal` does, for a column's worth at
        once: a backup seals one value per CLI audit-log row, and the per-value work is kept to the
        AEAD call (one read of the random source for every nonce, the associated data encoded once)."""
        nonces = os.urandom(NONCE_BYTES * len(values))
        encrypt, associated = self._aead.encrypt, where.encode()
        # json.dumps({"f": fernet, "v": value}, ensure_ascii=False), byte for byte, five times faster.
        head = '{"f": ' + ("true" if fernet else "false") + ', "v": '
        sealed: list[str] = []
        for index, value in enumerate(values):
            nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
            payload = (head + encode_basestring(value) + "}").encode()
            sealed.append(PREFIX + b2a_base64(nonce + encrypt(nonce, payload, associated), newline=False).decode())
        return sealed

    def unseal(self, sealed: str, *, where: str) -> tuple[str, bool]:
        if not sealed.startswith(PREFIX):
            raise SealingError(f"{where} holds a value that was not sealed by this tool")
        raw = base64.b64decode(sealed[len(PREFIX) :])
        try:
            payload = json.loads(self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], where.encode()))
        except InvalidTag:
            raise SealingError(f"{where}: sealed value fails authentication (tampered, or another backup's)") from None
        return str(payload["v"]), bool(payload["f"])


def fernet_decrypt(fernet: MultiFernet | None, token: str, *, where: str) -> str:
    if fernet is None:
        raise SealingError(f"{where} is Fernet-encrypted but no source Fernet key was given")
    try:
        return fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SealingError(f"{where} cannot be decrypted with the source Fernet key (wrong key?)") from None


def try_fernet_decrypt(fernet: MultiFernet | None, token: str) -> str | None:
    if fernet is None:
        return None
    try:
        return fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        return None
