"""How the backup reads tables at once and finishes them in the background: every connection reads
the one snapshot, and an error anywhere fails the backup with nothing left in the store."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from localcloud.postgres import PostgresServer
from mwaa_control.metadata.backup import BackupEngine, BackupRequest, _read_in_lanes
from mwaa_control.metadata.database import open_database, same_snapshot
from mwaa_control.metadata.manifest import backup_prefix
from mwaa_control.metadata.schema import Table
from mwaa_control.metadata.store import LocalStore
from tests.metadata.blobs import CREATE, blobs_table
from tests.metadata.databases import Templates, make_env, populate


def _count(reader: Any) -> int:
    return int(reader.query("SELECT count(*) FROM blobs")[0][0])


def test_a_second_connection_reads_the_same_snapshot(postgres: PostgresServer) -> None:
    """Rows committed after the snapshot began are seen by neither connection, whichever reads first."""
    # Given a table of 3 rows
    postgres.create_database("pipeline_snapshot")
    dsn, url = postgres.dsn("pipeline_snapshot"), postgres.psycopg_url("pipeline_snapshot")
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute(CREATE)
        writer.execute("INSERT INTO blobs (id, note) SELECT i, 'old' FROM generate_series(1, 3) AS i")
        database = open_database(url)
        # When rows are committed once the snapshot and its twin exist
        with database.snapshot() as reader, same_snapshot(reader) as twin:
            assert twin is not None
            writer.execute("INSERT INTO blobs (id, note) SELECT i, 'new' FROM generate_series(4, 10) AS i")
            writer.execute("DELETE FROM blobs WHERE id = 1")
            # Then both read the table as it was, rows and COPY alike
            assert _count(twin) == 3
            assert _count(reader) == 3
            copied = sum(b.num_rows for b in twin.batches(blobs_table()))
            assert copied == 3
            assert sorted(twin.query("SELECT id FROM blobs")) == [(1,), (2,), (3,)]
        # And a new snapshot sees the change
        with database.snapshot() as reader:
            assert _count(reader) == 9


def test_the_twin_of_a_snapshot_already_read_keeps_to_it(postgres: PostgresServer) -> None:
    """pg_dump -j's order reversed: the first connection has read before the second is opened."""
    postgres.create_database("pipeline_snapshot_late")
    dsn, url = postgres.dsn("pipeline_snapshot_late"), postgres.psycopg_url("pipeline_snapshot_late")
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute(CREATE)
        writer.execute("INSERT INTO blobs (id) VALUES (1), (2)")
        database = open_database(url)
        with database.snapshot() as reader:
            assert _count(reader) == 2
            writer.execute("INSERT INTO blobs (id) VALUES (3)")
            with same_snapshot(reader) as twin:
                assert twin is not None
                assert _count(twin) == 2


def test_sqlite_snapshots_have_no_twin(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "src", kms)
    with open_database(env.url).snapshot() as reader, same_snapshot(reader) as twin:
        assert twin is None


def _tables(*names: str) -> list[Table]:
    return [replace(blobs_table(), name=n) for n in names]


def test_an_error_in_another_lane_stops_every_lane_and_is_raised() -> None:
    # Given two lanes, the second failing on its first table
    read: list[tuple[str, str]] = []
    started = threading.Event()

    def reading(lane: str, table: Table) -> tuple[int, int]:
        read.append((lane, table.name))
        if lane == "twin":
            started.wait(5)
            raise RuntimeError("the twin's COPY failed")
        started.set()
        time.sleep(0.2)
        return 1, 0

    # When the tables are read
    with pytest.raises(RuntimeError, match="twin's COPY failed"):
        _read_in_lanes(_tables("a", "b", "c", "d", "e"), ["main", "twin"], reading)  # type: ignore[list-item, arg-type]
    # Then the first lane stopped after its current table
    assert len([name for lane, name in read if lane == "main"]) == 1
    assert len(read) == 2


def test_lanes_read_every_table_once() -> None:
    seen: list[str] = []

    def reading(lane: str, table: Table) -> tuple[int, int]:
        seen.append(table.name)
        return len(table.name), 1

    counts = _read_in_lanes(_tables("a", "bb", "ccc"), ["main", "twin"], reading)  # type: ignore[list-item, arg-type]
    assert sorted(seen) == ["a", "bb", "ccc"]
    assert counts == {"a": (1, 1), "bb": (2, 1), "ccc": (3, 1)}


class _FailingStore(LocalStore):
    """Uploads slowly, and fails on one table: the others are still being uploaded when it does."""

    def __init__(self, root: Path, failing: str) -> None:
        super().__init__(root)
        self.failing = failing
        self.deleted = False
        self.after_delete: list[str] = []

    def put_file(self, key: str, source: Path) -> None:
        if self.deleted:
            self.after_delete.append(key)
        if f"tables/{self.failing}/" in key:
            raise OSError("no space left on the device")
        time.sleep(0.01)
        super().put_file(key, source)

    def delete_prefix(self, prefix: str) -> list[str]:
        self.deleted = True
        return super().delete_prefix(prefix)


@pytest.mark.parametrize("failing", ["dag", "task_instance", "xcom"])
def test_a_failing_upload_fails_the_backup_and_leaves_nothing(
    templates: Templates, tmp_path: Path, kms: Any, failing: str
) -> None:
    # Given a database whose upload of one table (holding rows, or empty: xcom) fails
    store = _FailingStore(tmp_path / "b", failing)
    env = make_env(templates.v211, tmp_path, "src", kms, store)
    populate(env)
    engine = BackupEngine(open_database(env.url), store)
    # When it is backed up
    with pytest.raises(OSError, match="no space left"):
        engine.backup(BackupRequest(environment="prod", keys=env.keys, source_fernet_key=env.fernet, backup_id="b-1"))
    # Then the store holds nothing, and nothing was uploaded once the backup's files were deleted
    assert not store.occupied(backup_prefix("prod", "b-1"))
    assert store.after_delete == []


@pytest.mark.parametrize("linkable", [True, False])
def test_a_local_store_takes_a_file_once_and_never_over_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linkable: bool
) -> None:
    """A table's file goes into a local store as a hard link where the filesystem allows (no copy),
    else as a copy; either way the store keeps it after the scratch file is gone, and an existing
    key is never overwritten."""
    if not linkable:

        def refuse(*_: Any) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr("mwaa_control.metadata.store.os.link", refuse)
    store = LocalStore(tmp_path / "store")
    scratch = tmp_path / "scratch.parquet"
    scratch.write_bytes(b"first")
    store.put_file("b/tables/t/part-00000.parquet", scratch)
    scratch.unlink()
    kept = tmp_path / "store" / "b" / "tables" / "t" / "part-00000.parquet"
    assert kept.read_bytes() == b"first"
    assert kept.stat().st_nlink == 1
    scratch.write_bytes(b"second")
    with pytest.raises(FileExistsError):
        store.put_file("b/tables/t/part-00000.parquet", scratch)
    assert kept.read_bytes() == b"first"
