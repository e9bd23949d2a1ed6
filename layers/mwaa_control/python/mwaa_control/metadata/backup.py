"""Backup: a consistent snapshot of the metadata database, one Parquet file per table, secrets
sealed, task tokens dropped from run confs, and a manifest written last, authenticated with a MAC
under the backup's KMS data key (authentication.py).

Consistency before a pause is the caller's choice (`Drain`): pause every DAG, wait until no task
instance is running or queued, then read every table inside one snapshot. DAGs of the control
plane itself (`mwaa_control_*`) are neither paused nor exported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from queue import Queue
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.fernet import MultiFernet

from mwaa_control.metadata import catalog, task_tokens
from mwaa_control.metadata.authentication import BackupKey, check_name, write_manifest
from mwaa_control.metadata.catalog import Role, SealedColumn
from mwaa_control.metadata.database import (
    CSV_BLOCK,
    MAX_CSV_BLOCK,
    Database,
    Reader,
    RowTooLarge,
    quote,
    same_snapshot,
    table_sizes,
)
from mwaa_control.metadata.errors import DrainTimeout, MetadataError
from mwaa_control.metadata.manifest import (
    PAUSE_STATES,
    RESTORE_LEDGER_EVENT,
    ColumnEntry,
    FileEntry,
    InFlightTask,
    Manifest,
    TableEntry,
    airflow_versions_of,
    backup_prefix,
    new_backup_id,
)
from mwaa_control.metadata.memory import with_lean_arrow_memory
from mwaa_control.metadata.schema import Kind, Schema, Table
from mwaa_control.metadata.sealing import KeyService, Sealer, fernet_decrypt, fernet_from
from mwaa_control.metadata.store import BackupStore, scratch_dir

log = logging.getLogger(__name__)

ROW_GROUP_BYTES = 4 << 20
ROW_GROUP_ROWS = 1 << 20
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd"}
"""What every column shares; parquet_options adds the per-column choices."""
UNFINISHED = ("running", "queued", "scheduled", "deferred", "up_for_retry", "up_for_reschedule", "restarting")
BUSY = ("running", "queued")
OWN_DAGS = catalog.CONTROL_PLANE_DAG_PREFIX.replace("_", "\\_") + "%"


@dataclass(frozen=True)
class Drain:
    """Stop new work and wait for running work before the snapshot."""

    timeout: float = 1800
    poll: float = 15
    on_timeout: str = "abort"
    """"abort": restore the pause states and fail; "proceed": back up and record what was in flight."""
    leave_paused: bool = False
    """True before a pause (the environment is deleted next); False puts pause states back."""

    def __post_init__(self) -> None:
        if self.on_timeout not in ("abort", "proceed"):
            raise MetadataError(f"drain on_timeout is 'abort' or 'proceed', not {self.on_timeout!r}")
        if self.timeout < 0 or self.poll < 0:
            raise MetadataError("drain timeout and poll are seconds, not negative")


@dataclass
class BackupRequest:
    environment: str
    keys: KeyService | None
    """KMS data keys: they seal secrets and authenticate the manifest. Without, a backup of a
    database with no secrets is still written, but a restore refuses it unless told otherwise."""
    source_fernet_key: str | None
    airflow_version: str | None = None
    drain: Drain | None = None
    backup_id: str | None = None
    path: str = "database"
    """Recorded in the manifest: "database", or "worker-database" (an Airflow 3 task's own connection)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = time.sleep


def _own_dag_filter(table: Table, schema: Schema) -> tuple[str, list[str]]:
    clauses: list[str] = []
    params: list[str] = []
    if table.name == "log" and table.has("event"):
        clauses.append("(event IS NULL OR event <> ?)")
        params.append(RESTORE_LEDGER_EVENT)
    if table.has("dag_id"):
        clauses.append("(dag_id IS NULL OR dag_id NOT LIKE ? ESCAPE '\\')")
        params.append(OWN_DAGS)
    for ref in table.references:
        if ref.parent == "dag_run" and ref.parent_columns == ("id",) and "dag_run" in schema.tables:
            column = quote(ref.columns[0])
            clauses.append(
                f"({column} IS NULL OR {column} NOT IN (SELECT id FROM dag_run WHERE dag_id LIKE ? ESCAPE '\\'))"  # noqa: S608
            )
            params.append(OWN_DAGS)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _pause_states(reader: Reader) -> dict[str, bool]:
    rows = reader.query("SELECT dag_id, is_paused FROM dag WHERE dag_id NOT LIKE ? ESCAPE '\\'", (OWN_DAGS,))
    return {str(dag_id): bool(paused) for dag_id, paused in rows}


def _in_flight(reader: Reader) -> list[InFlightTask]:
    marks = ", ".join("?" for _ in UNFINISHED)
    rows = reader.query(
        f"SELECT dag_id, run_id, task_id, map_index, state FROM task_instance WHERE state IN ({marks})"  # noqa: S608
        " AND dag_id NOT LIKE ? ESCAPE '\\' ORDER BY dag_id, run_id, task_id, map_index",
        (*UNFINISHED, OWN_DAGS),
    )
    return [InFlightTask(dag_id=r[0], run_id=r[1], task_id=r[2], map_index=int(r[3]), state=r[4]) for r in rows]


class BackupEngine:
    def __init__(self, database: Database, store: BackupStore) -> None:
        self.database = database
        self.store = store

    @with_lean_arrow_memory
    def backup(self, request: BackupRequest) -> Manifest:
        backup_id = check_name(request.backup_id or new_backup_id(request.clock()), "backup id")
        check_name(request.environment, "environment")
        prefix = backup_prefix(request.environment, backup_id)
        if self.store.occupied(prefix):
            raise MetadataError(f"{prefix} already holds files; backups are never overwritten")
        schema = self.database.reflect()
        if "dag_run" not in schema.tables or "dag" not in schema.tables:
            raise MetadataError("this database has no Airflow metadata tables (dag, dag_run)")
        # Everything that can be wrong with the input is found before anything is paused.
        keys = self._check_keys(request, schema, backup_id)
        original: dict[str, bool] | None = None
        try:
            if request.drain:
                with self.database.snapshot() as reader:
                    original = _pause_states(reader)
                # Written before anything is paused: if this process dies, the states are not lost.
                self.store.put_bytes(
                    f"{prefix}/{PAUSE_STATES}", json.dumps(original, indent=1, sort_keys=True).encode()
                )
                self._drain(request)
            manifest = self._export(request, schema, backup_id, prefix, original, keys)
        except BaseException:
            self.store.delete_prefix(prefix)
            if original is not None:
                # A failed backup never leaves DAGs paused, whatever leave_paused says.
                self._restore_pause_states(original)
            raise
        if original is not None and request.drain and not request.drain.leave_paused:
            self._restore_pause_states(original)
        return manifest

    def _check_keys(
        self, request: BackupRequest, schema: Schema, backup_id: str
    ) -> tuple[BackupKey | None, MultiFernet | None]:
        fernet = fernet_from(request.source_fernet_key)
        with self.database.snapshot() as reader:
            needs_sealing = [
                t.name for t in schema.tables.values() if t.role is not Role.EXCLUDED and _has_secrets(reader, t)
            ]
            if "variable" in needs_sealing and schema.tables["variable"].has("is_encrypted"):
                sample = reader.query("SELECT key, val FROM variable WHERE is_encrypted = ? LIMIT 1", (True,))
                for key, value in sample:
                    fernet_decrypt(fernet, value, where=f"variable.val of {key}")
        if needs_sealing and request.keys is None:
            raise MetadataError(
                f"{', '.join(needs_sealing)} hold secrets; give a key to seal them (--kms-key-id, --key-file "
                "or MWAA_CONTROL_LOCAL_KEY; they are never stored in plaintext)"
            )
        if request.keys is None:
            log.warning(
                "backup %s/%s has no key (KMS or local): it cannot be authenticated", request.environment, backup_id
            )
            return None, fernet
        return BackupKey.create(request.keys, request.environment, backup_id), fernet

    def _drain(self, request: BackupRequest) -> None:
        assert request.drain is not None
        self.database.run(
            "UPDATE dag SET is_paused = ? WHERE dag_id NOT LIKE ? ESCAPE '\\'",
            (True, OWN_DAGS),
        )
        # The request's clock, not time.monotonic(): the same clock the sleeps advance in tests.
        deadline = request.clock() + timedelta(seconds=request.drain.timeout)
        while True:
            with self.database.snapshot() as reader:
                busy = [t for t in _in_flight(reader) if t.state in BUSY]
            if not busy:
                return
            remaining = (deadline - request.clock()).total_seconds()
            if remaining <= 0:
                if request.drain.on_timeout == "proceed":
                    log.warning("drain timed out with %d task instances running or queued; proceeding", len(busy))
                    return
                raise DrainTimeout(
                    f"{len(busy)} task instances still running or queued after {request.drain.timeout:.0f}s "
                    f"(first: {busy[0].dag_id}/{busy[0].run_id}/{busy[0].task_id}); pause states were put back"
                )
            # Never past the deadline: a 3-second drain polling every 15 seconds waits 3 seconds.
            request.sleep(min(request.drain.poll, remaining))

    def _restore_pause_states(self, states: dict[str, bool]) -> None:
        for paused in (True, False):
            dag_ids = [d for d, p in states.items() if p is paused]
            for start in range(0, len(dag_ids), 500):
                chunk = dag_ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                self.database.run(f"UPDATE dag SET is_paused = ? WHERE dag_id IN ({marks})", (paused, *chunk))  # noqa: S608

    def _export(
        self,
        request: BackupRequest,
        schema: Schema,
        backup_id: str,
        prefix: str,
        original_pause: dict[str, bool] | None,
        keys: tuple[BackupKey | None, MultiFernet | None],
    ) -> Manifest:
        started = request.clock()
        key, fernet = keys
        sealer = key.sealer() if key is not None else None
        tables: dict[str, TableEntry] = {}
        excluded: dict[str, str] = {}
        sealed_count = 0
        stripped = [0]
        with (
            self.database.snapshot() as reader,
            same_snapshot(reader) as twin,
            scratch_dir() as scratch,
            _Tails(self.store, prefix) as tails,
        ):
            pause_states = _pause_states(reader)
            if original_pause is not None:
                pause_states = {d: original_pause.get(d, p) for d, p in pause_states.items()}
            in_flight = _in_flight(reader)
            exported = [t for t in schema.ordered() if t.role is not Role.EXCLUDED]
            excluded.update((t.name, t.why) for t in schema.ordered() if t.role is Role.EXCLUDED)
            filled = _filled(reader, exported)
            for table in exported:
                if table.name not in filled:
                    # Most tables of a metadata database are empty: no COPY, only their empty file.
                    tails.submit(_EmptyTail(table, Path(scratch)))

            def read(lane: Reader, table: Table) -> tuple[int, int]:
                tail, sealed, dropped = self._read(
                    lane, schema, table, Path(scratch), sealer, fernet, pause_states, original_pause
                )
                # The next table's COPY starts now; this one's last row group, checksum and upload
                # finish in the background (the server would otherwise idle through them).
                tails.submit(tail)
                return sealed, dropped

            lanes = [reader] if twin is None else [reader, twin]
            counts = _read_in_lanes(_largest_first(reader, [t for t in exported if t.name in filled]), lanes, read)
            sealed_count = sum(sealed for sealed, _ in counts.values())
            stripped[0] = sum(dropped for _, dropped in counts.values())
            finished = tails.finish()
            tables.update((t.name, finished[t.name]) for t in exported)
        manifest = Manifest(
            backup_id=backup_id,
            environment=request.environment,
            created_at=request.clock(),
            started_at=started,
            airflow_version=request.airflow_version or airflow_versions_of(schema.revision),
            airflow_version_source="operator" if request.airflow_version else "schema revision",
            schema_revision=schema.revision,
            source_dialect=schema.dialect,
            tables=tables,
            excluded_tables=excluded,
            excluded_dag_prefix=catalog.CONTROL_PLANE_DAG_PREFIX,
            pause_states=pause_states,
            in_flight=in_flight,
            drained=request.drain is not None,
            envelope=key.envelope if key is not None else None,
            sealed_values=sealed_count,
            stripped_task_tokens=stripped[0],
            path=request.path,
        )
        write_manifest(self.store, prefix, manifest, key)
        log.info(
            "backup %s: %d tables, %d sealed values, %d task tokens dropped",
            prefix,
            len(tables),
            sealed_count,
            stripped[0],
        )
        return manifest

    @staticmethod
    def _read(
        reader: Reader,
        schema: Schema,
        table: Table,
        scratch: Path,
        sealer: Sealer | None,
        fernet: MultiFernet | None,
        pause_states: dict[str, bool],
        original_pause: dict[str, bool] | None,
    ) -> tuple[_TableTail, int, int]:
        """Every row of a table read into its encoder; with the count of values sealed and tokens dropped."""
        sealing = sealer if table.sealed else None
        where, params = _own_dag_filter(table, schema)
        block = CSV_BLOCK
        while True:
            batches = reader.batches(table, where, params, block_size=block)
            if table.name == "dag" and original_pause is not None:
                batches = _with_pause_states(batches, pause_states)
            counter, dropped = [0], [0]
            if table.name == "dag_run" and table.has("conf"):
                batches = _token_batches(
                    batches, "conf", partial(task_tokens.stripped_batches, table=table, counter=dropped)
                )
            if table.name == "log" and table.has("extra"):
                # CLI command lines and REST/UI trigger confs of older runs carried raw tokens.
                batches = _token_batches(batches, "extra", partial(task_tokens.stripped_audit_batches, counter=dropped))
            if sealing is not None:
                batches = _sealed(batches, table, sealing, fernet, counter)
            try:
                return _read_table(table, batches, scratch), counter[0], dropped[0]
            except RowTooLarge:
                # A value larger than the parser's block (a big serialised DAG or XCom):
                # read the table again, inside the same snapshot, with larger blocks.
                if block >= MAX_CSV_BLOCK:
                    raise
                block = min(block * 16, MAX_CSV_BLOCK)  # Arrow's block size is an int32
            finally:
                _close(batches)


def write_table(
    store: BackupStore, table: Table, batches: Iterator[pa.RecordBatch], scratch: Path, prefix: str
) -> TableEntry:
    """One Parquet file for the table, its checksum, and its manifest entry."""
    return _read_table(table, batches, scratch).finish(store, prefix)


class _TableTail:
    """A table whose rows are all read: what is left is its encoder's last row group, the file's
    checksum and its upload, which need neither the database nor the reading thread."""

    def __init__(self, table: Table, local: Path, rows: int, encoder: _ParquetEncoder | None) -> None:
        self.table = table
        self.local = local
        self.rows = rows
        self._encoder = encoder

    def finish(self, store: BackupStore, prefix: str) -> TableEntry:
        self.discard()
        relative = f"tables/{self.table.name}/part-00000.parquet"
        digest = hashlib.sha256()
        with self.local.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        size = self.local.stat().st_size
        store.put_file(f"{prefix}/{relative}", self.local)
        self.local.unlink()
        table = self.table
        return TableEntry(
            role=table.role.value,
            why=table.why,
            classified=table.classified,
            rows=self.rows,
            columns=[ColumnEntry(name=c.name, kind=c.kind.value, nullable=c.nullable) for c in table.columns],
            files=[FileEntry(path=relative, rows=self.rows, bytes=size, sha256=digest.hexdigest())],
            sealed_columns=[s.column for s in table.sealed],
        )

    def discard(self) -> None:
        """Wait for the encoder (its error, if any, is raised here)."""
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.close()


class _EmptyTail(_TableTail):
    """A table the snapshot holds no row of: its file (the schema, no row group) is written with the rest."""

    def __init__(self, table: Table, scratch: Path) -> None:
        super().__init__(table, scratch / f"{table.name}.parquet", 0, None)

    def finish(self, store: BackupStore, prefix: str) -> TableEntry:
        schema = self.table.arrow_schema()
        pq.ParquetWriter(self.local, schema, **parquet_options(schema, self.table)).close()
        return super().finish(store, prefix)


def _read_table(table: Table, batches: Iterator[pa.RecordBatch], scratch: Path) -> _TableTail:
    """Read every row of the table into its encoder; the encoder may still be writing the last group."""
    local = scratch / f"{table.name}.parquet"
    schema = table.arrow_schema()
    encoder = _ParquetEncoder(local, schema, parquet_options(schema, table))
    try:
        rows = encoder.feed(_row_groups(batches))
    except BaseException:
        with contextlib.suppress(Exception):  # the reading error is the one to report
            encoder.close()
        raise
    return _TableTail(table, local, rows, encoder)


def parquet_options(schema: pa.Schema, table: Table | None = None) -> dict[str, Any]:
    """The writer's options for a table, chosen per column kind. Dictionary encoding only for plain
    text (states, DAG and task ids, hostnames: few distinct values); numbers, timestamps, JSON and
    blobs are mostly distinct, and trying a dictionary on them costs time and makes files larger.
    Statistics (min/max) for every column but JSON documents and blobs: Athena skips row groups by
    them (a DAG id, a state, a date range), and on long documents they cost time and say nothing."""
    if table is not None:
        text = [c.name for c in table.columns if c.kind is Kind.TEXT]
        summarised = [c.name for c in table.columns if c.kind not in (Kind.JSON, Kind.BINARY)]
    else:
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        summarised = [f.name for f in schema if not (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))]
    return {**PARQUET_OPTIONS, "use_dictionary": text or False, "write_statistics": summarised or False}


class _Tails:
    """Tables' tails finished one after the other in one background thread, in the order given,
    while the reading threads go on to the next table. One tail holding row groups waits at most, so
    memory stays at a few row groups; empty tables' tails hold nothing and never make a reader wait.
    The first error is raised in a reading thread (at its next submit, or at finish); leaving the
    block, by error or not, waits for every tail in flight: nothing is uploaded once a failed
    backup has deleted what it wrote."""

    def __init__(self, store: BackupStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self._queue: Queue[_TableTail | None] = Queue()
        self._room = threading.Semaphore(2)  # the tail being finished and one waiting
        self._failure: list[BaseException] = []
        self._entries: dict[str, TableEntry] = {}
        self._thread = threading.Thread(target=self._run, name="table-tails", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (tail := self._queue.get()) is not None:
            try:
                if self._failure:
                    with contextlib.suppress(BaseException):
                        tail.discard()
                    continue
                self._entries[tail.table.name] = tail.finish(self._store, self._prefix)
            except BaseException as error:  # re-raised in the reading thread
                self._failure.append(error)
            finally:
                if not isinstance(tail, _EmptyTail):
                    self._room.release()

    def submit(self, tail: _TableTail) -> None:
        if self._failure:
            tail.discard()
            raise self._failure[0]
        if not isinstance(tail, _EmptyTail):
            self._room.acquire()
        self._queue.put(tail)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> dict[str, TableEntry]:
        self._close()
        if self._failure:
            raise self._failure[0]
        return self._entries

    def __enter__(self) -> _Tails:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()


def _read_in_lanes(
    tables: list[Table], lanes: list[Reader], read: Callable[[Reader, Table], tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Tables read by every lane at once (each its own connection into the one snapshot), each lane
    taking the next table in the order given when done with its own; the calling thread is the first
    lane. The first error stops every lane after its current table and is raised here."""
    pending = deque(tables)
    taken = threading.Lock()
    failure: list[BaseException] = []
    counts: dict[str, tuple[int, int]] = {}

    def run(lane: Reader) -> None:
        while not failure:
            with taken:
                if not pending:
                    return
                table = pending.popleft()
            counts[table.name] = read(lane, table)

    def helper(lane: Reader) -> None:
        try:
            run(lane)
        except BaseException as error:  # re-raised in the calling thread
            failure.append(error)

    helpers = [threading.Thread(target=helper, args=(lane,), name="read-lane", daemon=True) for lane in lanes[1:]]
    for thread in helpers:
        thread.start()
    try:
        run(lanes[0])
    except BaseException as error:
        failure.insert(0, error)
        raise
    finally:
        for thread in helpers:
            thread.join()
    if failure:
        raise failure[0]
    return counts


def _largest_first(reader: Reader, tables: list[Table]) -> list[Table]:
    """The tables in the order the lanes take them: the largest first, so that no lane is left
    reading a large table alone at the end (the order of reading does not matter to the snapshot)."""
    sizes = table_sizes(reader, [t.name for t in tables])
    return sorted(tables, key=lambda t: -sizes.get(t.name, 0))


def _filled(reader: Reader, tables: list[Table]) -> set[str]:
    """The tables holding at least one row in the snapshot, found in one round trip."""
    if not tables:
        return set()
    probes = ", ".join(f"(SELECT 1 FROM {quote(t.name)} LIMIT 1)" for t in tables)  # noqa: S608
    (row,) = reader.query(f"SELECT {probes}")
    return {t.name for t, found in zip(tables, row, strict=True) if found is not None}


def _row_groups(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    """Batches gathered into row groups of about ROW_GROUP_BYTES. Every ParquetWriter.write_table
    call closes a row group, and the CSV reader yields ~1 MB batches: written one by one, a table
    becomes hundreds of tiny row groups, each column chunk with its own dictionary, statistics and
    compressor, twice as slow to write and slower to scan."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.nbytes
        if size >= ROW_GROUP_BYTES:
            yield pa.Table.from_batches(pending)
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def write_parquet(path: Path, schema: pa.Schema, groups: Iterator[pa.Table]) -> int:
    """Write row groups to a Parquet file; returns the row count."""
    encoder = _ParquetEncoder(path, schema, parquet_options(schema))
    try:
        rows = encoder.feed(groups)
    except BaseException:
        with contextlib.suppress(Exception):  # the reading error is the one to report
            encoder.close()
        raise
    encoder.close()
    return rows


class _ParquetEncoder:
    """Row groups written to a Parquet file in a thread (Arrow releases the GIL) while the caller's
    thread reads and parses the next group: one group waits between them, so memory stays at a few
    groups whatever the table's size."""

    def __init__(self, path: Path, schema: pa.Schema, options: dict[str, Any]) -> None:
        self._options = options
        self._queue: Queue[pa.Table | None] = Queue(maxsize=1)
        self._failure: list[BaseException] = []
        self._path = path
        self._schema = schema
        self._thread = threading.Thread(target=self._encode, name=f"parquet-{path.name}", daemon=True)
        self._thread.start()
        self._ended = False

    def _encode(self) -> None:
        finished = False
        try:
            with pq.ParquetWriter(self._path, self._schema, **self._options) as writer:
                while (group := self._queue.get()) is not None:
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
                finished = True
        except BaseException as error:  # re-raised in the reading thread
            self._failure.append(error)
            while not finished:  # keep taking groups: the reading thread never blocks on a dead writer
                finished = self._queue.get() is None

    def feed(self, groups: Iterator[pa.Table]) -> int:
        """Hand every group to the encoder; returns the row count without waiting for the last group."""
        rows = 0
        for group in groups:
            if self._failure:
                break
            rows += group.num_rows
            self._queue.put(group)
        self._end()
        if self._failure:
            self._thread.join()
            raise self._failure[0]
        return rows

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put(None)

    def close(self) -> None:
        """Wait until the file is complete; raises the encoder's error."""
        self._end()
        self._thread.join()
        if self._failure:
            raise self._failure[0]


def _has_secrets(reader: Reader, table: Table) -> bool:
    for sealed in table.sealed:
        where = [f"{quote(sealed.column)} IS NOT NULL"]
        params: list[str] = []
        if sealed.only_when is not None:
            column, needles = sealed.only_when
            where.append("(" + " OR ".join(f"lower({quote(column)}) LIKE ? ESCAPE '\\'" for _ in needles) + ")")
            params += ["%" + n.replace("_", "\\_") + "%" for n in needles]
        sql = f"SELECT 1 FROM {quote(table.name)} WHERE {' AND '.join(where)} LIMIT 1"  # noqa: S608
        if reader.query(sql, params):
            return True
    return False


def _token_batches(
    batches: Iterator[pa.RecordBatch],
    column: str,
    strip: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
) -> Iterator[pa.RecordBatch]:
    """Batches whose `column` cannot hold a task token pass as they are, found by Arrow without a
    Python string per value (most audit log rows and run confs); the others go through `strip`."""
    for batch in batches:
        if _may_hold_token(batch.column(column)):
            yield from strip(iter([batch]))
        else:
            yield batch


_TOKEN_BYTES = re.compile(re.escape(task_tokens.TOKEN.encode()))


def _may_hold_token(column: pa.Array) -> bool:
    """Whether a value of the column may hold a task token. A string or binary column's values lie
    end to end in one data buffer, searched once at memchr speed (a search per value costs four
    times as much, on every audit log row); a hit anywhere in it, even outside this batch's slice
    of it, sends the batch to the per-value check."""
    kind = column.type
    if not (pa.types.is_string(kind) or pa.types.is_binary(kind)):
        return bool(pc.any(pc.match_substring(column, task_tokens.TOKEN)).as_py())
    data = column.buffers()[2]
    return data is not None and _TOKEN_BYTES.search(memoryview(data)) is not None


def _close(batches: Iterator[pa.RecordBatch]) -> None:
    """Stop a table's reader now (its COPY thread), not whenever the garbage collector runs."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _with_pause_states(batches: Iterator[pa.RecordBatch], states: dict[str, bool]) -> Iterator[pa.RecordBatch]:
    """The pause states from before the drain, not the drain's own."""
    for batch in batches:
        dag_ids = batch.column("dag_id").to_pylist()
        paused = [states.get(d) for d in dag_ids]
        index = batch.schema.get_field_index("is_paused")
        yield batch.set_column(index, "is_paused", pa.array(paused, pa.bool_()))


def _sealed(
    batches: Iterator[pa.RecordBatch],
    table: Table,
    sealer: Sealer,
    fernet: MultiFernet | None,
    counter: list[int],
) -> Iterator[pa.RecordBatch]:
    for original in batches:
        batch = original
        for sealed in table.sealed:
            column = batch.column(sealed.column)
            mask = pc.and_(pc.is_valid(column), _selected(batch, sealed))
            if not pc.any(mask).as_py():
                continue
            where = f"{table.name}.{sealed.column}"
            if sealed.flag is None and not sealed.detect_fernet:
                # Plaintext by definition (the audit log's extra): nothing to decrypt, no row to name,
                # so only this column's chosen values are taken out of the batch.
                out = sealer.seal_all(pc.filter(column, mask).to_pylist(), fernet=False, where=where)
            else:
                chosen = batch.filter(mask)
                values = chosen.column(sealed.column).to_pylist()
                flags = chosen.column(sealed.flag).to_pylist() if sealed.flag else [None] * len(values)
                out = _unsealed_then_sealed(values, flags, _row_names(chosen, table), sealed, sealer, fernet, where)
            counter[0] += len(out)
            index = batch.schema.get_field_index(sealed.column)
            replaced = pc.replace_with_mask(column, mask, pa.array(out, pa.string()))
            batch = batch.set_column(index, batch.schema.field(index), replaced)
        yield batch


def _unsealed_then_sealed(
    values: list[str],
    flags: list[Any],
    names: list[str],
    sealed: SealedColumn,
    sealer: Sealer,
    fernet: MultiFernet | None,
    where: str,
) -> list[str]:
    """Values that may be Fernet-encrypted: decrypted (or refused, naming the row), then sealed."""
    out: list[str] = []
    for value, flag, name in zip(values, flags, names, strict=True):
        if sealed.flag is None and sealed.detect_fernet and not value.lstrip().startswith("{"):
            # Not plain JSON, so Airflow encrypted it (trigger kwargs since 2.9): it must decrypt.
            plain, encrypted = fernet_decrypt(fernet, value, where=f"{where} of {name}"), True
        elif sealed.flag is None:
            plain, encrypted = value, False
        elif flag:
            plain, encrypted = fernet_decrypt(fernet, value, where=f"{where} of {name}"), True
        else:
            plain, encrypted = value, False
        out.append(sealer.seal(plain, fernet=encrypted, where=where))
    return out


def _selected(batch: pa.RecordBatch, sealed: SealedColumn) -> pa.Array:
    if sealed.only_when is None:
        return pa.repeat(pa.scalar(True), batch.num_rows)
    column, needles = sealed.only_when
    pattern = "|".join(re.escape(n) for n in needles)
    return pc.fill_null(pc.match_substring_regex(batch.column(column), pattern, ignore_case=True), False)


def _row_names(batch: pa.RecordBatch, table: Table) -> list[str]:
    for column in ("key", "conn_id", "id"):
        if table.has(column):
            return [str(v) for v in batch.column(column).to_pylist()]
    return ["?"] * batch.num_rows
