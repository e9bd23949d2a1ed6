"""Adapters around the metadata database: one per dialect Airflow runs on for MWAA and in tests.

PostgreSQL (MWAA's Aurora, self-hosted Airflow) moves rows with COPY in CSV form, parsed and
written by Arrow's C++ CSV reader and writer: no Python work per value except for bytea. SQLite
(local Airflow, tests) reads a consistent copy made with SQLite's online backup API and writes
with executemany in one IMMEDIATE transaction.

Both give the engine the same things: a reflected schema, a read-only snapshot that yields Arrow
record batches per table, and one write transaction.
"""

from __future__ import annotations

import binascii
import contextlib
import io
import re
import select
import sqlite3
import tempfile
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa

from mwaa_control.metadata.errors import MetadataError
from mwaa_control.metadata.memory import parquet_reader
from mwaa_control.metadata.schema import Column, Kind, Schema, Table, reflect

T = TypeVar("T")

BATCH_ROWS = 65_536
# Batches are bounded by their size, not only by rows: 65,536 rows of rendered template fields or
# XCom values (kilobytes each) would be hundreds of MB of Arrow memory per batch.
BATCH_BYTES = 8 << 20
FETCH_ROWS = 1_024  # SQLite rows fetched at a time while a batch fills up to BATCH_BYTES
# COPY output (whole rows) is handed to the CSV parser in chunks of at most COPY_CHUNK bytes (or one
# larger row), each read from memory as a CSV stream of its own: no chunk ends inside a row. Small
# enough that parsing and encoding follow the COPY closely (4 MB chunks are ~20% slower in all),
# large enough that opening a reader per chunk does not count.
COPY_CHUNK = 1 << 20
# Arrow parses a chunk in blocks of this size, a record batch each. On wide rows, 1 MB blocks parse
# ~30% slower than 512 kB ones (a block is scanned twice, for rows and then for values, and a
# smaller one stays in the CPU's cache); 256 kB ones make too many batches.
CSV_BLOCK = 1 << 19
MAX_CSV_BLOCK = 1 << 30  # a single row may be this large (a CSV row must fit in one block)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class RowTooLarge(MetadataError):
    """A row does not fit in the CSV parser's block; the table is read again with larger blocks."""


class Reader(Protocol):
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def batches(
        self, table: Table, where: str = "", params: Sequence[Any] = (), block_size: int = CSV_BLOCK
    ) -> Iterator[pa.RecordBatch]: ...


class Writer(Protocol):
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...
    def insert(self, table: Table, columns: list[str], batches: Iterator[pa.RecordBatch]) -> None: ...
    def lock(self, tables: list[str]) -> None: ...
    def timestamp(self, value: datetime) -> Any: ...
    def advance_sequence(self, table: str, column: str) -> None: ...
    def highest_id(self, table: str, column: str) -> int: ...


class Database(Protocol):
    dialect: str

    def reflect(self) -> Schema: ...
    def snapshot(self) -> contextlib.AbstractContextManager[Reader]: ...
    def transaction(self) -> contextlib.AbstractContextManager[Writer]: ...
    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...


def open_database(url_or_engine: str | sa.engine.Engine) -> Database:
    engine = sa.create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    if engine.dialect.name == "sqlite":
        return SqliteDatabase(engine)
    if engine.dialect.name == "postgresql":
        return PostgresDatabase(engine)
    raise MetadataError(
        f"unsupported metadata database {engine.dialect.name}: MWAA runs PostgreSQL; SQLite is for tests"
    )


@contextlib.contextmanager
def same_snapshot(reader: Reader) -> Iterator[Reader | None]:
    """Another reader of the very snapshot `reader` reads, on its own connection, so that two tables
    can be read at once; None where there is none (SQLite: its snapshot is read by one thread)."""
    database = getattr(reader, "database", None)
    if not isinstance(reader, PostgresSession) or database is None:
        yield None
        return
    with database.same_snapshot(reader) as twin:
        yield twin


def table_sizes(reader: Reader, tables: Sequence[str]) -> dict[str, int]:
    """Each table's size on disk (with its TOAST data), where the dialect knows it cheaply: the
    backup reads the largest tables first, so that its lanes finish together. Empty where unknown
    (SQLite: its snapshot is read by one thread, in any order)."""
    if not isinstance(reader, PostgresSession) or not tables:
        return {}
    sizes = ", ".join("pg_table_size(to_regclass(?))" for _ in tables)
    (row,) = reader.query(f"SELECT {sizes}", [quote(t) for t in tables])
    return {t: int(size or 0) for t, size in zip(tables, row, strict=True)}


def _timestamp_text(value: datetime) -> str:
    # The form SQLAlchemy (and so Airflow) stores in SQLite: naive UTC with microseconds.
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    text = str(value).replace("Z", "+00:00")
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def python_column(kind: Kind, values: list[Any]) -> list[Any]:
    if kind is Kind.TIMESTAMP:
        return [_parse_timestamp(v) for v in values]
    if kind is Kind.BOOLEAN:
        return [None if v is None else bool(v) for v in values]
    if kind is Kind.BINARY:
        return [v.encode() if isinstance(v, str) else v for v in values]
    if kind in (Kind.TEXT, Kind.JSON):
        return [v.decode() if isinstance(v, bytes) else (None if v is None else str(v)) for v in values]
    return values


def to_sqlite(kind: Kind, values: list[Any]) -> list[Any]:
    if kind is Kind.TIMESTAMP:
        return [None if v is None else _timestamp_text(v) for v in values]
    if kind is Kind.BOOLEAN:
        return [None if v is None else int(v) for v in values]
    return values


class SqliteReader:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def batches(
        self, table: Table, where: str = "", params: Sequence[Any] = (), block_size: int = CSV_BLOCK
    ) -> Iterator[pa.RecordBatch]:
        schema = table.arrow_schema()
        columns = ", ".join(quote(c) for c in table.column_names)
        cursor = self._db.execute(f"SELECT {columns} FROM {quote(table.name)} {where}", tuple(params))  # noqa: S608
        for rows in _rows_up_to(cursor, BATCH_BYTES, BATCH_ROWS):
            arrays = [
                pa.array(python_column(column.kind, [row[i] for row in rows]), type=schema.field(i).type)
                for i, column in enumerate(table.columns)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _row_bytes(row: tuple[Any, ...]) -> int:
    """About what a row's values take in Arrow: text and blobs by length, anything else 8 bytes."""
    return sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)


def _rows_up_to(cursor: sqlite3.Cursor, max_bytes: int, max_rows: int) -> Iterator[list[tuple[Any, ...]]]:
    """A cursor's rows in lists of at most `max_rows` rows and about `max_bytes` (a single larger row
    is a list of its own)."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    while fetched := cursor.fetchmany(FETCH_ROWS):
        for row in fetched:
            rows.append(row)
            size += _row_bytes(row)
            if size >= max_bytes or len(rows) >= max_rows:
                yield rows
                rows, size = [], 0
    if rows:
        yield rows


def parquet_batches(
    path: Path | str, max_rows: int, max_bytes: int = BATCH_BYTES, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's record batches (of `columns`, or all), of at most `max_rows` rows and about
    `max_bytes` decoded: the widest row group's average row (from the file's metadata, uncompressed,
    counting only the columns read) sets the batch length."""
    parquet = parquet_reader(path)
    metadata = parquet.metadata
    chosen = None if columns is None else {parquet.schema_arrow.get_field_index(c) for c in columns}

    def row_bytes(group: int) -> float:
        meta = metadata.row_group(group)
        size: int
        if chosen is None:
            size = meta.total_byte_size
        else:
            size = sum(meta.column(i).total_uncompressed_size for i in range(meta.num_columns) if i in chosen)
        return size / max(int(meta.num_rows), 1)

    widest = max((row_bytes(i) for i in range(metadata.num_row_groups)), default=1.0)
    batch_size = max(1, min(max_rows, int(max_bytes // max(widest, 1.0))))
    yield from parquet.iter_batches(batch_size=batch_size, columns=columns)


class SqliteWriter(SqliteReader):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, tuple(params)).rowcount

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    def insert(self, table: Table, columns: list[str], batches: Iterator[pa.RecordBatch]) -> None:
        kinds = [table.column(c).kind for c in columns]
        marks = ", ".join("?" for _ in columns)
        names = ", ".join(quote(c) for c in columns)
        statement = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"  # noqa: S608
        for batch in batches:
            data = [to_sqlite(kind, batch.column(c).to_pylist()) for kind, c in zip(kinds, columns, strict=True)]
            self._db.executemany(statement, list(zip(*data, strict=True)))

    def lock(self, tables: list[str]) -> None:
        """BEGIN IMMEDIATE already holds the database's write lock."""

    def timestamp(self, value: datetime) -> Any:
        return _timestamp_text(value)

    def highest_id(self, table: str, column: str) -> int:
        return int(self._db.execute(f"SELECT COALESCE(MAX({quote(column)}), 0) FROM {quote(table)}").fetchone()[0])  # noqa: S608

    def advance_sequence(self, table: str, column: str) -> None:
        has_sequence = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
        if has_sequence:
            highest = f"SELECT COALESCE(MAX({quote(column)}), 0) FROM {quote(table)}"  # noqa: S608
            self._db.execute(f"UPDATE sqlite_sequence SET seq = MAX(seq, ({highest})) WHERE name = ?", (table,))  # noqa: S608


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        database = engine.url.database
        if not database or database == ":memory:":
            raise MetadataError("an in-memory SQLite database cannot be backed up from another process")
        self.path = Path(database)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def reflect(self) -> Schema:
        with self.engine.connect() as connection:
            schema = reflect(connection)
        # SQLite stores what it is given: Airflow writes float seconds into columns it declares
        # INTEGER (task_reschedule.duration). Read such columns as floats, or the fraction is lost.
        raw = self._connect()
        try:
            for table in schema.tables.values():
                for index, column in enumerate(table.columns):
                    if column.kind is not Kind.INTEGER:
                        continue
                    stored = raw.execute(
                        f"SELECT 1 FROM {quote(table.name)} WHERE typeof({quote(column.name)}) = 'real' LIMIT 1"  # noqa: S608
                    ).fetchone()
                    if stored:
                        table.columns[index] = replace(column, kind=Kind.FLOAT)
        finally:
            raw.close()
        return schema

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Reader]:
        # The online backup API copies a consistent image even while Airflow writes.
        with tempfile.TemporaryDirectory(prefix="mwaa-control-snapshot-") as scratch:
            copy = sqlite3.connect(Path(scratch) / "snapshot.db")
            source = self._connect()
            try:
                source.backup(copy)
            finally:
                source.close()
            try:
                yield SqliteReader(copy)
            finally:
                copy.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Writer]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteWriter(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        connection = self._connect()
        try:
            return connection.execute(sql, tuple(params)).rowcount
        finally:
            connection.close()


def _driver(raw: Any) -> Any:
    return getattr(raw, "driver_connection", None) or getattr(raw, "dbapi_connection", None) or raw.connection


class _Readable:
    """Waits until a socket has data, up to a second at a time: libpq over TLS may hold decrypted
    bytes the socket no longer signals, so the caller reads again after every wait."""

    def __init__(self, fd: int) -> None:
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self) -> None:
        self._poll.poll(1000)


def _wait_result(pgconn: Any) -> None:
    """Until libpq holds a whole result: PQgetResult would otherwise block holding the GIL."""
    writable = select.poll()
    writable.register(pgconn.socket, select.POLLOUT)
    while pgconn.flush():
        writable.poll(1000)
    readable = _Readable(pgconn.socket)
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return
        readable.wait()


def _results_done(pgconn: Any) -> None:
    while True:
        _wait_result(pgconn)
        if pgconn.get_result() is None:
            return


class _Chunks:
    """Where a COPY thread writes: whole rows, gathered into chunks of about `size` bytes that the
    reading thread parses, each on its own (a COPY row is a message of its own, so a chunk always
    ends at a row's end). At most `depth` chunks wait between the threads. Once the reader has
    stopped, what is left of the COPY is dropped, so the driver never sees a failed write and leaves
    its connection in a sane state. The reader then either lets the COPY run out (a row too large
    for the parser's block: the snapshot's transaction must survive to read the table again) or
    cancels it (any other stop: the backup is failing, and a large table would take minutes to run
    out)."""

    def __init__(self, size: int, depth: int = 2) -> None:
        self._size = size
        self._queue: Queue[Any] = Queue(maxsize=depth)
        self._pending = bytearray()
        self._stopped = threading.Event()

    def write(self, data: Any) -> int:
        """Whole rows: libpq's loop hands on a chunk at a time, psycopg2 a row at a time. A chunk
        never goes past `size` bytes unless a single row does (then that row is a chunk of its own)."""
        if self._stopped.is_set():
            return len(data)  # dropped
        if self._pending and len(self._pending) + len(data) > self._size:
            self._put(self._pending)
            self._pending = bytearray()
        if not self._pending and len(data) * 2 >= self._size:
            self._put(data)  # (most of) a chunk already: no copy
        else:
            self._pending += data
        return len(data)

    def _put(self, chunk: Any) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except Full:
                continue

    def close(self) -> None:
        """The COPY is over (or failed): the reader gets what is pending, then the end."""
        if self._pending:
            self._put(self._pending)
            self._pending = bytearray()
        self._put(None)

    def __iter__(self) -> Iterator[Any]:
        while (chunk := self._queue.get()) is not None:
            yield chunk

    def stop(self) -> None:
        """The reader takes no more chunks: the writer drops the rest (and never blocks)."""
        self._stopped.set()
        with contextlib.suppress(Empty):
            while True:
                self._queue.get_nowait()


def _offsets(array: pa.Array, kind: pa.DataType) -> pa.Array:
    """The n + 1 value offsets of a string or binary array, wherever it was sliced."""
    return pa.Array.from_buffers(kind, len(array) + 1, [None, array.buffers()[1]], offset=array.offset)


def _validity(array: pa.Array) -> pa.Buffer | None:
    """A validity bitmap starting at bit 0, whatever the array's own offset (is_valid builds one)."""
    if array.null_count == 0:
        return None
    valid = pc.is_valid(array)
    if valid.offset != 0:  # not so in any pyarrow we know of; refuse rather than shift the nulls
        raise MetadataError("pyarrow returned a sliced validity bitmap; cannot convert bytea safely")
    return valid.buffers()[1]


def _hex_to_binary(column: pa.Array) -> pa.Array:
    """bytea read as `encode(value, 'hex')` (two hex digits a byte, no `\\x` prefix, whatever the
    server's bytea_output) to bytes, for the whole column at once: the digits of every value lie end
    to end in the column's data buffer, decoded in one call, and the offsets are halved."""
    if len(column) == 0:
        return pa.array([], pa.binary())
    validity, count = _validity(column), column.null_count
    offsets = _offsets(column, pa.int32())
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    if count and (pc.sum(pc.binary_length(column)).as_py() or 0) != last - first:
        # Arrow leaves the bytes under a null slot unspecified: empty them, so only digits remain.
        column = pc.fill_null(column, pa.scalar(b"", column.type))
        offsets = _offsets(column, pa.int32())
        first, last = offsets[0].as_py(), offsets[-1].as_py()
    if pc.any(pc.not_equal(pc.bit_wise_and(pc.binary_length(column), 1), 0)).as_py():
        raise MetadataError("a bytea value has an odd number of hex digits")
    data = column.buffers()[2]
    try:
        decoded = binascii.unhexlify(memoryview(data)[first:last] if data is not None else b"")
    except binascii.Error as error:
        raise MetadataError(f"a bytea value is not valid hex: {error}") from error
    halved = pc.shift_right(pc.subtract(offsets, first), 1).cast(pa.int32())
    return pa.Array.from_buffers(
        pa.binary(), len(column), [validity, halved.buffers()[1], pa.py_buffer(decoded)], null_count=count
    )


def _binary_to_hex(column: pa.Array) -> pa.Array:
    """bytes to bytea's hex input form, for the whole column at once."""
    if len(column) == 0:
        return pa.array([], pa.string())
    # Large types: the hex form is twice the size and may pass 2 GiB where the bytes did not.
    values = column.cast(pa.large_binary())
    offsets = _offsets(values, pa.int64())
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    data = values.buffers()[2]
    digits = binascii.hexlify(memoryview(data)[first:last] if data is not None else b"")
    doubled = pc.multiply(pc.subtract(offsets, first), 2).cast(pa.int64())
    hexed = pa.Array.from_buffers(
        pa.large_string(),
        len(values),
        [_validity(values), doubled.buffers()[1], pa.py_buffer(digits)],
        null_count=values.null_count,
    )
    marker, nothing = pa.scalar("\\x", pa.large_string()), pa.scalar("", pa.large_string())
    return pc.binary_join_element_wise(marker, hexed, nothing)


def _csv_chunks(table: Table, columns: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[memoryview]:
    for batch in batches:
        if batch.num_rows == 0:
            continue
        arrays = []
        for name in columns:
            array = batch.column(name)
            kind = table.column(name).kind
            if kind is Kind.BINARY:
                array = _binary_to_hex(array)
            elif kind is Kind.TIMESTAMP:
                # Arrow formats zoned timestamps slowly; the session's time zone is UTC, so a naive
                # UTC timestamp means the same to PostgreSQL.
                array = array.cast(pa.timestamp("us"))
            arrays.append(array)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(pa.table(arrays, names=columns), sink, pacsv.WriteOptions(include_header=False))
        yield memoryview(sink.getvalue())  # Arrow's buffer itself, not a copy of it


def prefetched(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """The same items, made in a thread up to `depth` ahead of the caller: memory is a few items.
    An error making them is raised here, in the caller's thread. If the caller stops early, the
    thread stops at its next item."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stopped = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stopped.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as error:  # re-raised in the caller's thread
            put((False, error))

    producer = threading.Thread(target=produce, name="prefetch", daemon=True)
    producer.start()
    try:
        while True:
            more, value = queue.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stopped.set()
        with contextlib.suppress(Empty):
            while True:
                queue.get_nowait()
        producer.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()


class _ChunkStream(io.RawIOBase):
    """A readable file over an iterator of byte chunks (psycopg2's copy_expert reads files). An
    error raised while making a chunk is kept: psycopg2 reports it as a cancelled COPY."""

    def __init__(self, chunks: Iterator[memoryview]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except BaseException as error:
                self.error = error
                raise
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _selected_as_text(column: Column) -> str:
    """A column as COPY's query selects it: naive timestamps as UTC, bytea as its bare hex digits
    (`encode(..., 'hex')`: no prefix to strip on the client, and no dependence on bytea_output)."""
    name = quote(column.name)
    if column.naive:
        return f"({name} AT TIME ZONE 'UTC') AS {name}"
    if column.kind is Kind.BINARY:
        return f"encode({name}, 'hex') AS {name}"
    return name


def _csv_options(
    table: Table, csv_types: dict[str, pa.DataType], block_size: int
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    return (
        # One thread: a chunk is a block or two, and the other lane and the encoders keep the CPUs busy.
        pacsv.ReadOptions(column_names=table.column_names, block_size=block_size, use_threads=False),
        pacsv.ParseOptions(newlines_in_values=True),
        pacsv.ConvertOptions(
            column_types=csv_types,
            true_values=["t"],
            false_values=["f"],
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


class PostgresSession:
    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._driver = _driver(raw)
        self._psycopg3 = hasattr(self._driver, "pgconn")
        self.database: PostgresDatabase | None = None
        """Set on a snapshot's session: where a second connection into the same snapshot comes from."""

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._raw.cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = self._raw.cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        cursor = self._raw.cursor()
        try:
            cursor.executemany(self._sql(sql), rows)
        finally:
            cursor.close()

    def _copy_out(self, sql: str, spool: Any) -> None:
        if self._psycopg3:
            self._copy_out_libpq(sql, spool)
        else:
            cursor = self._driver.cursor()
            try:
                cursor.copy_expert(sql, spool, size=1 << 20)
            finally:
                cursor.close()

    def _copy_out_libpq(self, sql: str, spool: Any) -> None:
        """COPY OUT on psycopg 3's low-level `pgconn` (libpq's calls, documented for what psycopg does
        not wrap). `Copy` hands out each row through several Python frames, and PostgreSQL sends a
        message per row: for a million rows that costs more CPU than parsing them. Every libpq call
        here is non-blocking (a blocking one would hold the GIL); waits are poll(2), which takes any
        descriptor number and releases the GIL."""
        from psycopg import pq  # noqa: PLC0415 - absent on Airflow 2 workers (psycopg2)

        pgconn = self._driver.pgconn
        pgconn.send_query(sql.encode())
        _wait_result(pgconn)
        started = pgconn.get_result()
        if started is None or started.status != pq.ExecStatus.COPY_OUT:
            _results_done(pgconn)
            message = started.error_message.decode(errors="replace") if started is not None else "no result"
            raise MetadataError(f"COPY did not start: {message.strip()}")
        try:
            get, write, readable = pgconn.get_copy_data, spool.write, _Readable(pgconn.socket)
            # The server sends a message per row: rows are gathered here and handed on in chunks of
            # at most COPY_CHUNK bytes (or one larger row), one call into the spool per chunk rather
            # than one per row.
            pending = bytearray()
            while True:
                size, data = get(1)
                if size > 0:
                    if size + len(pending) > COPY_CHUNK and pending:
                        write(pending)
                        pending = bytearray()
                    pending += data
                elif size == 0:
                    readable.wait()
                    pgconn.consume_input()
                else:
                    break
            if pending:
                write(pending)
        except BaseException:
            # Never leave the connection inside a COPY: cancel it and read it to its end, so the
            # rollback that follows works and reports this error, not "another command is in progress".
            with contextlib.suppress(Exception):
                pgconn.get_cancel().cancel()
                while (size := pgconn.get_copy_data(1)[0]) >= 0:
                    if size == 0:
                        readable.wait()
                        pgconn.consume_input()
                _wait_result(pgconn)
                _results_done(pgconn)
            raise
        _wait_result(pgconn)
        finished = pgconn.get_result()
        _results_done(pgconn)
        if finished is None or finished.status != pq.ExecStatus.COMMAND_OK:
            message = finished.error_message.decode(errors="replace") if finished is not None else "no result"
            raise MetadataError(f"COPY failed: {message.strip()}")

    def cancel(self) -> None:
        """Ask the server to stop the statement running on this connection (from any thread)."""
        with contextlib.suppress(Exception):
            self._driver.cancel()

    def _copy_in(self, sql: str, chunks: Iterator[memoryview]) -> None:
        """One COPY per table, fed chunk by chunk: the server loads while the next chunk is made."""
        try:
            if self._psycopg3:
                with self._driver.cursor() as cursor, cursor.copy(sql) as copy:
                    for chunk in chunks:
                        copy.write(chunk)
            else:
                stream = _ChunkStream(chunks)
                cursor = self._driver.cursor()
                try:
                    cursor.copy_expert(sql, stream, size=1 << 20)
                except Exception:
                    if stream.error is not None:
                        raise stream.error from None
                    raise
                finally:
                    cursor.close()
        finally:
            # A COPY the server refused: stop making chunks now (a prefetching thread), not later.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def batches(
        self, table: Table, where: str = "", params: Sequence[Any] = (), block_size: int = CSV_BLOCK
    ) -> Iterator[pa.RecordBatch]:
        schema = table.arrow_schema()
        columns = ", ".join(_selected_as_text(c) for c in table.columns)
        query = f"SELECT {columns} FROM {quote(table.name)} {where}"  # noqa: S608
        if params:
            query = self._bind(query, params)
        csv_types = {
            # bytea arrives as hex digits: read as bytes, so Arrow does not check them as UTF-8.
            c.name: (pa.binary() if c.kind is Kind.BINARY else schema.field(c.name).type)
            for c in table.columns
        }
        # COPY runs in a thread gathering rows into chunks while Arrow's C++ reader parses the
        # chunks before, so reading from the server and parsing overlap and nothing is spooled to
        # disk. Arrow reads each chunk from memory: it never calls back into Python for its input.
        failure: list[BaseException] = []
        chunks = _Chunks(COPY_CHUNK)

        def produce() -> None:
            try:
                self._copy_out(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", chunks)
            except BaseException as error:  # re-raised in the reading thread
                failure.append(error)
            finally:
                chunks.close()

        producer = threading.Thread(target=produce, name=f"copy-{table.name}", daemon=True)
        producer.start()
        finished = False
        options = _csv_options(table, csv_types, block_size)
        binary = [c.name for c in table.columns if c.kind is Kind.BINARY]
        try:
            for chunk in chunks:
                yield from self._parse(chunk, table, schema, options, binary)
            finished = True
        except pa.ArrowInvalid as error:
            if "straddl" in str(error):
                # Let the COPY run out (dropped), so this snapshot can read the table again.
                chunks.stop()
                producer.join()
                finished = True
                if failure:  # the server failed first: its error is the one to report
                    raise failure[0] from error
                raise RowTooLarge(f"{table.name}: a row is larger than {block_size} bytes") from error
            if failure:  # the server failed first (its error is recorded before the end is signalled)
                raise failure[0] from error
            raise MetadataError(f"{table.name}: cannot parse PostgreSQL's COPY output: {error}") from error
        finally:
            if not finished and producer.is_alive():
                self.cancel()  # stopped early for another reason: do not read the rest
            chunks.stop()
            producer.join()
        if failure:
            raise failure[0]

    @staticmethod
    def _parse(
        chunk: Any,
        table: Table,
        schema: pa.Schema,
        options: tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions],
        binary: list[str],
    ) -> Iterator[pa.RecordBatch]:
        read, parse, convert = options
        reader = pacsv.open_csv(
            pa.BufferReader(pa.py_buffer(chunk)), read_options=read, parse_options=parse, convert_options=convert
        )
        for block in reader:
            batch = block
            if binary:
                arrays = [
                    _hex_to_binary(batch.column(name)) if name in binary else batch.column(name)
                    for name in table.column_names
                ]
                batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
            yield batch.cast(schema) if batch.schema != schema else batch

    def _bind(self, sql: str, params: Sequence[Any]) -> str:
        """COPY takes no parameters: inline them as literals quoted by the driver."""
        cursor = self._driver.cursor()
        try:
            if self._psycopg3:
                from psycopg import sql as psql  # noqa: PLC0415 - absent on Airflow 2 workers (psycopg2)

                parts = sql.split("?")
                composed = psql.SQL("").join(
                    [psql.SQL(parts[0])]
                    + [
                        psql.SQL("{}{}").format(psql.Literal(p), psql.SQL(rest))
                        for p, rest in zip(params, parts[1:], strict=True)
                    ]
                )
                return str(composed.as_string(self._driver))
            return str(cursor.mogrify(self._sql(sql), tuple(params)).decode())
        finally:
            cursor.close()

    def insert(self, table: Table, columns: list[str], batches: Iterator[pa.RecordBatch]) -> None:
        names = ", ".join(quote(c) for c in columns)
        statement = f"COPY {quote(table.name)} ({names}) FROM STDIN WITH (FORMAT csv)"
        # The server's loading (indexes, constraints) is the slow side: the next chunk is read,
        # remapped, re-encrypted and formatted while it loads the previous one.
        self._copy_in(statement, prefetched(_csv_chunks(table, columns, batches)))

    def timestamp(self, value: datetime) -> Any:
        return value.astimezone(UTC)

    def lock(self, tables: list[str]) -> None:
        self.execute("SET LOCAL lock_timeout = '60s'")
        for name in tables:
            self.execute(f"LOCK TABLE {quote(name)} IN SHARE ROW EXCLUSIVE MODE")

    def advance_sequence(self, table: str, column: str) -> None:
        sequence = self.query("SELECT pg_get_serial_sequence(?, ?)", (quote(table), column))
        if sequence and sequence[0][0]:
            # Never backwards: ids of deleted rows are not handed out again.
            self.query(
                f"SELECT setval(?, GREATEST((SELECT COALESCE(MAX({quote(column)}), 0) FROM {quote(table)}), "  # noqa: S608
                f"(SELECT last_value FROM {sequence[0][0]}), 1))",
                (sequence[0][0],),
            )

    def highest_id(self, table: str, column: str) -> int:
        highest = int(self.query(f"SELECT COALESCE(MAX({quote(column)}), 0) FROM {quote(table)}")[0][0])  # noqa: S608
        sequence = self.query("SELECT pg_get_serial_sequence(?, ?)", (quote(table), column))
        if sequence and sequence[0][0]:
            used = self.query(f"SELECT last_value, is_called FROM {sequence[0][0]}")[0]  # noqa: S608
            highest = max(highest, int(used[0]) if used[1] else 0)
        return highest


# What COPY's text forms depend on, pinned whatever the server or role defaults to.
SESSION = (
    "SET LOCAL TIME ZONE 'UTC'",
    "SET LOCAL bytea_output = 'hex'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL client_encoding = 'UTF8'",
)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine

    def reflect(self) -> Schema:
        with self.engine.connect() as connection:
            return reflect(connection)

    @contextlib.contextmanager
    def _session(self, setup: list[str]) -> Iterator[PostgresSession]:
        raw = self.engine.raw_connection()
        try:
            session = PostgresSession(raw)
            for statement in setup:
                session.execute(statement)
            try:
                yield session
            except BaseException:
                raw.rollback()
                raise
            raw.commit()
        finally:
            raw.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Reader]:
        # One REPEATABLE READ transaction: every table is read as of the same moment.
        setup = ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", *SESSION]
        with self._session(setup) as session:
            session.database = self
            yield session

    @contextlib.contextmanager
    def same_snapshot(self, reader: PostgresSession) -> Iterator[Reader | None]:
        """A second connection reading what `reader` reads (pg_dump -j's way: the snapshot exported
        by `reader`'s transaction, imported by the other's). None on a standby, where exporting a
        snapshot is not always allowed: the caller then reads with `reader` alone."""
        exported = reader.query("SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_export_snapshot() END")
        name = exported[0][0]
        if name is None:
            yield None
            return
        if not re.fullmatch(r"[0-9A-Fa-f-]+", str(name)):
            raise MetadataError(f"unexpected snapshot name from pg_export_snapshot(): {name!r}")
        setup = [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
            f"SET TRANSACTION SNAPSHOT '{name}'",
            *SESSION,
        ]
        with self._session(setup) as twin:
            yield twin

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Writer]:
        with self._session(list(SESSION)) as session:
            yield session

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._session([]) as session:
            return session.execute(sql, params)


def offset_ids(column: pa.Array, offset: int, reused: dict[int, int]) -> pa.Array:
    """Old surrogate ids to new ones: reused rows map to the target's existing id, the rest shift
    past the target's highest id. Vectorised: memory is the batch, not the table."""
    shifted = pc.add(column.cast(pa.int64()), pa.scalar(offset, pa.int64()))
    if not reused:
        return shifted
    old = pa.array(list(reused.keys()), pa.int64())
    new = pa.array(list(reused.values()), pa.int64())
    index = pc.index_in(column.cast(pa.int64()), value_set=old)
    replaced = pc.take(new, index)
    return pc.if_else(pc.is_valid(index), replaced, shifted)
