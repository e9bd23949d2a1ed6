"""`mwaactl metadata` outside AWS: a local key (a key file, or MWAA_CONTROL_LOCAL_KEY) seals secrets
and authenticates backups in the envelope format KMS uses. On real Airflow 2.11 SQLite databases,
with no KMS at all (not even moto's): a stray AWS call would fail."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from mwaa_control.metadata.authentication import backup_context
from mwaa_control.metadata.errors import SealingError
from mwaa_control.metadata.manifest import MANIFEST, backup_prefix
from mwaa_control.metadata.sealing import (
    LOCAL_KEY_ENV,
    NONCE_BYTES,
    PREFIX,
    LocalKeyMismatch,
    LocalKeyRefused,
    LocalKeyService,
    Sealer,
    generate_key_file,
)
from mwaactl.main import app
from mwaactl.metadata import metadata
from tests.metadata.databases import Env, Templates, make_env, populate

runner = CliRunner()
SECRET = "SEKRET-value"  # what populate() encrypts into variable 'k'
NO_KMS = SimpleNamespace(create_key=lambda: {"KeyMetadata": {"KeyId": "unused: these tests have no KMS"}})
# Options that mention a key and take no key material: ids, file paths, variable names, flags.
KEY_OPTIONS_WITHOUT_KEY_VALUES = {"--kms-key-id", "--key-file", "--fernet-key-env", "--accept-unverifiable-fernet-key"}


def _env(templates: Templates, tmp_path: Path, name: str) -> Env:
    return make_env(templates.v211, tmp_path, name, NO_KMS)


def _keygen(path: Path) -> str:
    done = runner.invoke(app, ["metadata", "keygen", str(path)])
    assert done.exit_code == 0, done.output
    found = re.search(r"local key (local:[0-9a-f]{16}) written", done.output)
    assert found, done.output
    return found.group(1)


def _backup(env: Env, store: Path, *key: str, environ: dict[str, str] | None = None) -> str:
    arguments = ["metadata", "backup", "--db-url", env.url, "--to", str(store), "-e", "etl-prod", *key]
    done = runner.invoke(app, arguments, env={"AIRFLOW__CORE__FERNET_KEY": env.fernet, **(environ or {})})
    assert done.exit_code == 0, done.output
    found = re.search(r"backup (\S+):", done.output)
    assert found, done.output
    return found.group(1)


def _restore(env: Env, store: Path, backup_id: str, *key: str, environ: dict[str, str] | None = None) -> Any:
    arguments = ["metadata", "restore", "--db-url", env.url, "--from", str(store), "-e", "etl-prod"]
    arguments += ["--backup-id", backup_id, "--accept-unverifiable-fernet-key", *key]
    return runner.invoke(app, arguments, env={"AIRFLOW__CORE__FERNET_KEY": env.fernet, **(environ or {})})


def _plaintext_in(folder: Path, marker: str) -> list[str]:
    """Files of the backup holding `marker` in plaintext, Parquet values decoded (pages are compressed)."""
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        texts = [path.read_bytes().decode("latin-1")]
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=repr, ensure_ascii=False))
        hits += [path.name] if any(marker in text for text in texts) else []
    return hits


def test_a_backup_sealed_with_a_key_file_restores_with_it_and_its_secrets_stay_sealed(
    templates: Templates, tmp_path: Path
) -> None:
    # Given a key made by keygen (mode 0600, never printed) and a source with an encrypted variable
    key_file = tmp_path / "backup.key"
    key_id = _keygen(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_text = key_file.read_text().strip()
    source = _env(templates, tmp_path, "src")
    populate(source)
    store = tmp_path / "store"

    # When it is backed up with the key file
    backup_id = _backup(source, store, "--key-file", str(key_file))

    # Then the manifest names the local key by its fingerprint, never the key, and the secret is
    # sealed: in no file in plaintext, the variable's value a sealed value
    folder = store / backup_prefix("etl-prod", backup_id)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["envelope"]["key_id"] == key_id
    assert manifest["envelope"]["context"] == backup_context("etl-prod", backup_id)
    assert _plaintext_in(folder, SECRET) == []
    assert _plaintext_in(folder, key_text) == [] and key_text not in key_id
    variables = pq.read_table(folder / "tables/variable/part-00000.parquet").to_pylist()
    assert [v["val"][: len(PREFIX)] for v in variables] == [PREFIX]

    # When it is verified, listed and restored into another environment with the same key file
    verified = runner.invoke(
        app, ["metadata", "verify", "--from", str(store), "-e", "etl-prod", "--key-file", str(key_file)]
    )
    listed = runner.invoke(
        app, ["metadata", "list", "--from", str(store), "-e", "etl-prod", "--key-file", str(key_file)]
    )
    target = _env(templates, tmp_path, "dst")
    restored = _restore(target, store, backup_id, "--key-file", str(key_file))

    # Then the backup is authenticated everywhere, and the secret reads back under the target's key
    assert verified.exit_code == 0 and "verified" in verified.output, verified.output
    assert listed.exit_code == 0 and "1 verified" in listed.output, listed.output
    assert restored.exit_code == 0, restored.output
    assert f"restored {backup_id}" in restored.output and "NOT AUTHENTICATED" not in restored.output
    [(value,)] = target.sql("SELECT val FROM variable WHERE key = 'k'")
    assert Fernet(target.fernet.encode()).decrypt(value.encode()).decode() == SECRET


def test_the_environment_variable_holds_the_same_key_and_exactly_one_key_is_taken(
    templates: Templates, tmp_path: Path
) -> None:
    # Given a backup sealed with a key file, and that key's base64 in MWAA_CONTROL_LOCAL_KEY
    key_file = tmp_path / "backup.key"
    _keygen(key_file)
    in_environment = {LOCAL_KEY_ENV: key_file.read_text().strip()}
    source = _env(templates, tmp_path, "src")
    populate(source)
    store = tmp_path / "store"
    backup_id = _backup(source, store, "--key-file", str(key_file))

    # When it is restored with the key from the environment; and with two keys at once
    target = _env(templates, tmp_path, "dst")
    restored = _restore(target, store, backup_id, environ=in_environment)
    both_local = _restore(target, store, backup_id, "--key-file", str(key_file), environ=in_environment)
    local_and_kms = _restore(target, store, backup_id, "--kms-key-id", "alias/backups", environ=in_environment)

    # Then the environment variable opens it; two keys are refused, naming both, and the key is never shown
    assert restored.exit_code == 0, restored.output
    assert f"restored {backup_id}" in restored.output and "NOT AUTHENTICATED" not in restored.output
    assert both_local.exit_code == 1 and f"--key-file and {LOCAL_KEY_ENV}" in both_local.output
    assert local_and_kms.exit_code == 1 and f"--kms-key-id and {LOCAL_KEY_ENV}" in local_and_kms.output
    assert "exactly one" in local_and_kms.output
    for done in (restored, both_local, local_and_kms):
        assert in_environment[LOCAL_KEY_ENV] not in done.output

    # And a backup made from the environment variable restores with the key file
    second = _backup(source, store, environ=in_environment)
    again = _restore(_env(templates, tmp_path, "dst2"), store, second, "--key-file", str(key_file))
    assert again.exit_code == 0 and "NOT AUTHENTICATED" not in again.output, again.output


def test_a_restore_with_another_key_is_refused_naming_both_keys(templates: Templates, tmp_path: Path) -> None:
    # Given a backup sealed with one key, and another key
    sealing_id = _keygen(tmp_path / "prod.key")
    other_id = _keygen(tmp_path / "other.key")
    source = _env(templates, tmp_path, "src")
    populate(source)
    store = tmp_path / "store"
    backup_id = _backup(source, store, "--key-file", str(tmp_path / "prod.key"))

    # When it is restored with the other key
    target = _env(templates, tmp_path, "dst")
    refused = _restore(target, store, backup_id, "--key-file", str(tmp_path / "other.key"))

    # Then it is refused, saying which key sealed it and which was given, and nothing was restored
    assert refused.exit_code == 1
    message = " ".join(refused.output.split())
    assert f"backup was sealed with local key {sealing_id}; this key is {other_id}" in message
    assert target.sql("SELECT count(*) FROM variable") == [(0,)]


def test_a_tampered_manifest_or_a_backup_moved_under_another_id_is_refused(
    templates: Templates, tmp_path: Path
) -> None:
    # Given a backup sealed with a key file
    key_file = tmp_path / "backup.key"
    _keygen(key_file)
    source = _env(templates, tmp_path, "src")
    populate(source)
    store = tmp_path / "store"
    backup_id = _backup(source, store, "--key-file", str(key_file))
    folder = store / backup_prefix("etl-prod", backup_id)
    target = _env(templates, tmp_path, "dst")

    # When a copy of it is moved under another backup id (the data key is bound to its own id)
    moved_id = backup_id + "-copy"
    shutil.copytree(folder, store / backup_prefix("etl-prod", moved_id))
    moved = _restore(target, store, moved_id, "--key-file", str(key_file))

    # And when its manifest is altered in one byte of its row counts
    manifest = (folder / MANIFEST).read_bytes()
    altered = re.sub(rb'"rows": (\d)', lambda m: b'"rows": ' + str(int(m.group(1)) + 1).encode(), manifest, count=1)
    assert altered != manifest
    (folder / MANIFEST).write_bytes(altered)
    tampered = _restore(target, store, backup_id, "--key-file", str(key_file))

    # Then both are refused, and nothing was restored
    assert moved.exit_code == 1 and "LocalKeyRefused" in moved.output, moved.output
    assert tampered.exit_code == 1, tampered.output
    assert "manifest.mac does not match manifest.json" in " ".join(tampered.output.split())
    assert target.sql("SELECT count(*) FROM variable") == [(0,)]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620], ids=["group-readable", "world-readable", "group-writable"])
def test_a_key_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    # Given a key file group or others can read or write
    key_file = tmp_path / "backup.key"
    _keygen(key_file)
    key_file.chmod(mode)

    # When any command is given it
    done = runner.invoke(app, ["metadata", "list", "--from", str(tmp_path / "store"), "--key-file", str(key_file)])

    # Then it is refused, naming the file and the fix, without reading the key out
    assert done.exit_code == 1
    message = " ".join(done.output.split())
    assert str(key_file) in message and f"chmod 600 {key_file}" in message
    assert key_file.read_text().strip() not in done.output


def test_keygen_never_overwrites_a_file(tmp_path: Path) -> None:
    # Given an existing key file
    key_file = tmp_path / "backup.key"
    _keygen(key_file)
    before = key_file.read_bytes()

    # When keygen is asked to write it again
    done = runner.invoke(app, ["metadata", "keygen", str(key_file)])

    # Then it refuses and the key is unchanged
    assert done.exit_code == 1 and "already exists" in done.output
    assert key_file.read_bytes() == before


def test_a_key_file_holds_raw_bytes_base64_or_hex_and_nothing_else(tmp_path: Path) -> None:
    # Given one key written three ways, and files that hold no 256-bit key
    key = os.urandom(32)
    forms = {"raw": key, "base64": base64.b64encode(key) + b"\n", "hex": key.hex().encode() + b"\n"}
    wrong = {"short": base64.b64encode(key[:16]), "text": b"correct horse battery staple\n", "empty": b""}
    for name, content in (forms | wrong).items():
        path = tmp_path / name
        path.write_bytes(content)
        path.chmod(0o600)

    # Then the three read as the same key, named by a fingerprint that is not the key
    ids = {LocalKeyService.from_file(tmp_path / name).key_id for name in forms}
    assert ids == {LocalKeyService(key).key_id}
    [key_id] = ids
    assert re.fullmatch(r"local:[0-9a-f]{16}", key_id) and key.hex()[:16] not in key_id

    # And the others are refused without quoting what they hold
    for name, content in wrong.items():
        with pytest.raises(SealingError, match="does not hold a 256-bit key") as refused:
            LocalKeyService.from_file(tmp_path / name)
        assert not content or content.decode().strip() not in str(refused.value)
    with pytest.raises(SealingError, match="does not exist"):
        LocalKeyService.from_file(tmp_path / "missing")


def test_a_data_key_unwraps_only_for_its_own_context_and_key() -> None:
    # Given a data key wrapped for one backup of etl-prod
    keys = LocalKeyService(os.urandom(32))
    plaintext, wrapped, key_id = keys.generate_data_key(backup_context("etl-prod", "b1"))
    assert key_id == keys.key_id and plaintext not in wrapped

    # Then it unwraps for that context only, and under that key only
    assert keys.decrypt_data_key(wrapped, backup_context("etl-prod", "b1")) == plaintext
    for context in (backup_context("etl-prod", "b2"), backup_context("etl-staging", "b1")):
        with pytest.raises(LocalKeyRefused):
            keys.decrypt_data_key(wrapped, context)
    other = LocalKeyService(os.urandom(32))
    with pytest.raises(LocalKeyMismatch, match=f"sealed with local key {keys.key_id}; this key is {other.key_id}"):
        other.decrypt_data_key(wrapped, backup_context("etl-prod", "b1"))
    with pytest.raises(LocalKeyMismatch, match="not wrapped by a local key"):
        keys.decrypt_data_key(b"a KMS ciphertext blob" * 4, backup_context("etl-prod", "b1"))


def test_generate_key_file_writes_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        keys = generate_key_file(tmp_path / "k")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert LocalKeyService.from_file(tmp_path / "k").key_id == keys.key_id


def test_no_argument_of_mwaactl_metadata_takes_a_key_value() -> None:
    # Given every command of `mwaactl metadata`, its options as its help lists them and its signature
    commands = {command.name or "": command.callback for command in metadata.registered_commands}
    assert {"backup", "restore", "verify", "list", "keygen"} <= set(commands)
    for name, callback in commands.items():
        shown = runner.invoke(app, ["metadata", name, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert shown.exit_code == 0, shown.output
        options = set(re.findall(r"--[a-z][a-z-]+", shown.output))

        # Then whatever mentions a key takes an id, a path, a variable's name or nothing: never key material
        assert {o for o in options if "key" in o} <= KEY_OPTIONS_WITHOUT_KEY_VALUES, name
        # And the commands that read or write backups take a local key file as well as a KMS key
        if name in ("backup", "restore", "verify", "list"):
            assert {"--kms-key-id", "--key-file"} <= options, name
        hints = typing.get_type_hints(callback, include_extras=True)
        for parameter in ("key_file", "path"):
            if parameter in hints:
                accepted = typing.get_args(hints[parameter])[0]  # Annotated[X, typer.Option(...)]: X
                assert accepted is Path or Path in typing.get_args(accepted), f"{name} {parameter}"

    # And an attempt to pass a key is a usage error
    done = runner.invoke(app, ["metadata", "list", "--from", "x", "--local-key", base64.b64encode(b"k" * 32).decode()])
    assert done.exit_code == 2


def test_values_sealed_together_are_sealed_each_on_its_own() -> None:
    """`seal_all` (a column's worth at once, as the backup seals the audit log) gives what `seal` gives:
    each value under its own nonce, bound to its column, opening to the value and its Fernet flag."""
    sealer = Sealer(os.urandom(32))
    values = ["", "plain", 'a "quoted", \\ value\n', "é 雪 🙂", "x" * 5000] * 20
    sealed = sealer.seal_all(values, fernet=True, where="log.extra")
    assert len(sealed) == len(values) and len(set(sealed)) == len(sealed)
    nonces = {base64.b64decode(s[len(PREFIX) :])[:NONCE_BYTES] for s in sealed}
    assert len(nonces) == len(values)
    assert [sealer.unseal(s, where="log.extra") for s in sealed] == [(v, True) for v in values]
    assert sealer.unseal(sealer.seal("v", fernet=False, where="variable.val"), where="variable.val") == ("v", False)
    assert sealer.seal_all([], fernet=False, where="log.extra") == []
    with pytest.raises(SealingError, match="fails authentication"):
        sealer.unseal(sealed[0], where="connection.password")
