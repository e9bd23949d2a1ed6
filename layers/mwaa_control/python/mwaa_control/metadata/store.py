"""Where backups live: a local directory (tests, self-hosted Airflow) or S3 (MWAA). Objects are
written once: a backup id is new for every backup and an existing manifest is never replaced."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from mwaa_control.adapters.clients import client
from mwaa_control.metadata.errors import BackupNotFound, MetadataError


class BackupStore(Protocol):
    def put_file(self, key: str, source: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_file(self, key: str, target: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def occupied(self, prefix: str) -> bool: ...
    def list_prefixes(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> list[str]:
        """Deletes every object under `prefix` (or the object `prefix` itself); returns the keys that
        could not be deleted (S3 reports a refused delete per object, in a successful response)."""
        ...

    @property
    def url(self) -> str: ...


SINGLE_PUT_BYTES = 512 << 20


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise MetadataError(f"refusing a key outside the store: {key}")
        return path

    def put_file(self, key: str, source: Path) -> None:
        """The file under `key`, never over an existing one. On the same filesystem it is a hard link
        to `source` (no copy of a table's file): the caller, the backup, deletes its scratch file next
        and never writes to it again. Elsewhere (another filesystem, or one without hard links) a copy."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
            return
        except FileExistsError:
            raise
        except OSError:
            pass
        with source.open("rb") as src, target.open("xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("xb") as dst:
            dst.write(data)

    def get_file(self, key: str, target: Path) -> None:
        source = self._path(key)
        if not source.exists():
            raise BackupNotFound(f"{source} does not exist")
        shutil.copyfile(source, target)

    def get_bytes(self, key: str) -> bytes:
        source = self._path(key)
        if not source.exists():
            raise BackupNotFound(f"{source} does not exist")
        return source.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def occupied(self, prefix: str) -> bool:
        return self._path(prefix).exists()

    def list_prefixes(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def delete_prefix(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        if path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
        # As in S3, a prefix with nothing left under it is gone too.
        root = self.root.resolve()
        parent = path.parent
        while parent != root and parent.is_relative_to(root) and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
        return []


class S3Store:
    def __init__(self, s3: Any, bucket: str, prefix: str = "", kms_key_id: str | None = None) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.kms_key_id = kms_key_id

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _encryption(self) -> dict[str, str]:
        # Without a key, say nothing: the bucket's default encryption (the stack's KMS key) applies.
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {}

    def put_file(self, key: str, source: Path) -> None:
        if source.stat().st_size <= SINGLE_PUT_BYTES:
            # One conditional PutObject: S3 itself refuses to replace an existing object.
            with source.open("rb") as body:
                self._s3.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=body, IfNoneMatch="*", **self._encryption()
                )
            return
        if self.exists(key):
            raise MetadataError(f"s3://{self.bucket}/{self._key(key)} exists; backups are never overwritten")
        self._s3.upload_file(str(source), self.bucket, self._key(key), ExtraArgs=self._encryption())

    def put_bytes(self, key: str, data: bytes) -> None:
        # IfNoneMatch makes S3 itself refuse to replace an object (conditional write).
        self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*", **self._encryption())

    def get_file(self, key: str, target: Path) -> None:
        if not self.exists(key):
            raise BackupNotFound(f"s3://{self.bucket}/{self._key(key)} does not exist")
        self._s3.download_file(self.bucket, self._key(key), str(target))

    def get_bytes(self, key: str) -> bytes:
        if not self.exists(key):
            raise BackupNotFound(f"s3://{self.bucket}/{self._key(key)} does not exist")
        return bytes(self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def occupied(self, prefix: str) -> bool:
        response = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self._key(prefix).rstrip("/") + "/", MaxKeys=1)
        return bool(response.get("Contents"))

    def exists(self, key: str) -> bool:
        response = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        return any(o["Key"] == self._key(key) for o in response.get("Contents", []))

    def list_prefixes(self, prefix: str) -> list[str]:
        names: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix).rstrip("/") + "/", Delimiter="/"):
            names += [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def delete_prefix(self, prefix: str) -> list[str]:
        refused: list[str] = []
        key = self._key(prefix).rstrip("/")
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            # The prefix as a folder, or as one object: never a sibling that merely starts like it.
            keys = [
                {"Key": o["Key"]} for o in page.get("Contents", []) if o["Key"] == key or o["Key"].startswith(key + "/")
            ]
            if keys:
                answer = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                refused += [str(e.get("Key")) for e in answer.get("Errors", [])]
        return refused


def open_store(location: str, *, s3: Any = None, kms_key_id: str | None = None) -> BackupStore:
    """`s3://bucket/prefix` or a local directory."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise MetadataError(f"no bucket in {location}")
        if s3 is None:
            s3 = client("s3")
        return S3Store(s3, bucket, prefix, kms_key_id)
    return LocalStore(Path(location))


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="mwaa-control-")
