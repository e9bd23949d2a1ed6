"""How rows travel between PostgreSQL and Arrow: bytea in hex form, COPY through a pipe, Parquet
row groups. Against a real PostgreSQL server, with psycopg 3 here and psycopg2 (what Airflow 2
workers use) inside the Airflow 2.11 virtualenv."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from localcloud.airflow.backend import venv_for_release
from localcloud.postgres import PostgresServer
from mwaa_control.metadata import backup
from mwaa_control.metadata.database import (
    CSV_BLOCK,
    PostgresSession,
    RowTooLarge,
    _binary_to_hex,
    _hex_to_binary,
    open_database,
    prefetched,
)
from mwaa_control.metadata.errors import MetadataError
from tests.metadata.blobs import CREATE, blobs_table

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "mwaa_control" / "python"


def _values(count: int, seed: int) -> list[bytes | None]:
    rng = random.Random(seed)
    return [None if rng.random() < 0.15 else rng.randbytes(rng.choice([0, 1, 2, 17, 300, 5000])) for _ in range(count)]


def _bare(hexed: pa.Array) -> pa.Array:
    """`_binary_to_hex`'s `\\x...` (what COPY FROM reads) as the backup's COPY query sends bytea:
    `encode(value, 'hex')`, the bare digits, read as bytes."""
    return pc.utf8_slice_codeunits(hexed, 2).cast(pa.binary())


def test_hex_round_trip_keeps_every_value_and_slice() -> None:
    values = [None, b"", b"\x00\xff", b"\\x", None, *_values(200, 1)]
    column = pa.array(values, pa.binary())
    hexed = _binary_to_hex(column)
    assert hexed.to_pylist() == [None if v is None else "\\x" + v.hex() for v in values]
    for start, stop in ((0, len(values)), (1, 4), (3, 3), (4, 5), (7, 150)):
        piece = column.slice(start, stop - start)
        decoded = _hex_to_binary(_bare(_binary_to_hex(piece)))
        decoded.validate(full=True)
        assert decoded.to_pylist() == values[start:stop]
        assert _hex_to_binary(_bare(hexed).slice(start, stop - start)).to_pylist() == values[start:stop]
    assert _hex_to_binary(pa.array([None, None], pa.binary())).to_pylist() == [None, None]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"0", "odd number"),
        (b"zz", "not valid hex"),
        (b"\\x00", "not valid hex"),
        (b"00 f", "not valid hex"),
    ],
)
def test_malformed_hex_is_refused(text: bytes, says: str) -> None:
    with pytest.raises(MetadataError, match=says):
        _hex_to_binary(pa.array([b"00", text, None], pa.binary()))


def _create_blobs(url: str) -> str:
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        connection.execute(CREATE)
    return dsn


def test_bytea_travels_unchanged_through_copy_both_ways(postgres: PostgresServer) -> None:
    dsn = _create_blobs(postgres.create_database("transport_bytea"))
    values = _values(3000, 2)
    table = blobs_table()
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    batch = pa.record_batch(
        [pa.array(range(len(values)), pa.int64()), pa.array(values, pa.binary()), pa.array(["é"] * len(values))],
        schema=table.arrow_schema(),
    )
    with database.transaction() as writer:
        writer.insert(table, ["id", "data", "note"], iter([batch]))
    with psycopg.connect(dsn) as connection:
        stored = [
            bytes(r[0]) if r[0] is not None else None for r in connection.execute("SELECT data FROM blobs ORDER BY id")
        ]
    assert stored == values
    with database.snapshot() as reader:
        read = pa.Table.from_batches(list(reader.batches(table, "ORDER BY id")))
    assert read.column("data").to_pylist() == values
    assert read.column("note").to_pylist() == ["é"] * len(values)


AWKWARD_TEXT = [
    None,
    "",
    " ",
    "\x01",
    "\x02",
    "\x01\x01",
    "a\x01b\x02c",
    "\x02\x01",
    '"',
    '""',
    ",",
    '{"key": "value, with a comma", "nested": {"q": "\\"quoted\\""}}',
    "line one\nline two",
    "carriage\r\nreturn",
    "\r",
    "\\",
    "\\N",
    "NULL",
    "tab\there",
    "é 雪 🙂",
    "\x01" * 5 + "\n" + "\x02" * 5,
]


def test_awkward_text_travels_unchanged(postgres: PostgresServer) -> None:
    """COPY's CSV as the backup reads it: a value holding the quote, the delimiter, a newline, control
    characters, or an empty string against NULL comes back exactly, as text and as bytea."""
    dsn = _create_blobs(postgres.create_database("transport_text"))
    values = AWKWARD_TEXT * 40
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO blobs VALUES (%s, %s, %s)",
            [(i, None if v is None else v.encode(), v) for i, v in enumerate(values)],
        )
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with database.snapshot() as reader:
        read = pa.Table.from_batches(list(reader.batches(blobs_table(), "ORDER BY id")))
    assert read.column("note").to_pylist() == values
    assert read.column("data").to_pylist() == [None if v is None else v.encode() for v in values]


def _fill_with_big_first_row(dsn: str, rows: int) -> str:
    big = 'ü,\n"' * (CSV_BLOCK // 2)  # about 2.5 blocks once quoted in CSV
    with psycopg.connect(dsn) as connection:
        connection.execute("INSERT INTO blobs VALUES (0, NULL, %s)", (big,))
        connection.execute(
            "INSERT INTO blobs SELECT g, decode(md5(g::text), 'hex'), repeat('x', 200) FROM generate_series(1, %s) g",
            (rows,),
        )
    return big


def test_a_row_too_large_is_read_again_in_the_same_snapshot(postgres: PostgresServer) -> None:
    """The parser stops at a row larger than its block while the server is still sending a table far
    larger than the pipe: the rest of that COPY is read and dropped, so the snapshot's transaction
    stays usable, the table is read again with a larger block, and a change made meanwhile by
    someone else stays invisible."""
    dsn = _create_blobs(postgres.create_database("transport_big"))
    big = _fill_with_big_first_row(dsn, 100_000)  # ~25 MB of CSV after the big row
    table = blobs_table()
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with database.snapshot() as reader:
        assert reader.query("SELECT count(*) FROM blobs") == [(100_001,)]
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("DELETE FROM blobs WHERE id > 50000")
        with pytest.raises(RowTooLarge):
            for _ in reader.batches(table, block_size=CSV_BLOCK):
                pass
        read = pa.Table.from_batches(list(reader.batches(table, block_size=16 * CSV_BLOCK)))
        assert reader.query("SELECT count(*) FROM blobs") == [(100_001,)]
    assert read.num_rows == 100_001
    assert read.column("note")[0].as_py() == big


def test_psycopg2_reads_again_in_the_same_snapshot(postgres: PostgresServer, tmp_path: Path) -> None:
    """The same on psycopg2 and SQLAlchemy 1.4, as inside an Airflow 2 worker."""
    venv = venv_for_release("2.11.0")  # `make test` installs it; missing, the test fails and says how
    url = postgres.create_database("transport_big2")
    dsn = _create_blobs(url)
    _fill_with_big_first_row(dsn, 100_000)
    script = tmp_path / "read.py"
    script.write_text(
        "import json, sys\n"
        "import pyarrow as pa\n"
        "from mwaa_control.metadata.database import CSV_BLOCK, RowTooLarge, open_database\n"
        "from tests.metadata.blobs import blobs_table\n"
        "table = blobs_table()\n"
        "database = open_database(sys.argv[1])\n"
        "with database.snapshot() as reader:\n"
        "    try:\n"
        "        for _ in reader.batches(table, block_size=CSV_BLOCK): pass\n"
        "        first = 'read'\n"
        "    except RowTooLarge:\n"
        "        first = 'too large'\n"
        "    rows = pa.Table.from_batches(list(reader.batches(table, block_size=16 * CSV_BLOCK))).num_rows\n"
        "    count = reader.query('SELECT count(*) FROM blobs')[0][0]\n"
        "print(json.dumps({'first': first, 'rows': rows, 'count': count}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(script), url],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": f"{LAYER}:{ROOT}"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"first": "too large", "rows": 100_001, "count": 100_001}


def test_a_server_error_during_copy_is_reported(postgres: PostgresServer) -> None:
    dsn = _create_blobs(postgres.create_database("transport_error"))
    _fill_with_big_first_row(dsn, 20_000)
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with database.snapshot() as reader, pytest.raises(Exception, match="division by zero"):
        for _ in reader.batches(blobs_table(), "WHERE 1 / (id - 15000) IS NOT NULL", block_size=16 * CSV_BLOCK):
            pass


def test_parquet_row_groups_are_gathered_and_bounded(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    batches = [
        pa.record_batch([pa.array(range(i * 1000, (i + 1) * 1000)), pa.array(["y" * 500] * 1000)], schema=schema)
        for i in range(100)
    ]  # 100 batches of ~0.5 MB
    path = tmp_path / "t.parquet"
    rows = backup.write_parquet(path, schema, backup._row_groups(iter(batches)))
    metadata = pq.ParquetFile(path).metadata
    assert rows == metadata.num_rows == 100_000
    total = sum(b.nbytes for b in batches)
    assert 2 <= metadata.num_row_groups <= total // backup.ROW_GROUP_BYTES + 1
    assert pq.read_table(path).column("id").to_pylist() == list(range(100_000))


def test_a_failing_parquet_writer_fails_the_table_without_hanging(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64())])
    wrong = pa.table({"id": pa.array(["not a number"])})
    good = pa.table({"id": pa.array(range(10), pa.int64())})
    groups = iter([good, wrong, good, good, good])
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        backup.write_parquet(tmp_path / "t.parquet", schema, groups)


def test_junk_under_null_slots_is_ignored() -> None:
    """Arrow leaves the bytes under a null slot unspecified; they must not leak into values, nor
    make the digits around them fail to decode."""
    data = b"00ffzz\\x0102"
    offsets = pa.array([0, 4, 8, 12], pa.int32())  # the middle slot is null and spans junk
    validity = pa.array([True, False, True]).buffers()[1]
    column = pa.Array.from_buffers(pa.binary(), 3, [validity, offsets.buffers()[1], pa.py_buffer(data)], null_count=1)
    assert _hex_to_binary(column).to_pylist() == [b"\x00\xff", None, b"\x01\x02"]
    hexed = _binary_to_hex(column)
    assert hexed.to_pylist() == ["\\x" + data[:4].hex(), None, "\\x" + data[8:].hex()]
    assert _hex_to_binary(_bare(hexed)).to_pylist() == [data[:4], None, data[8:]]


def test_a_reader_that_stops_early_cancels_the_copy(postgres: PostgresServer) -> None:
    """Any stop other than a row too large cancels the COPY instead of reading the whole table: the
    snapshot's transaction is then aborted, which is fine, because the backup is failing."""
    dsn = _create_blobs(postgres.create_database("transport_stop"))
    _fill_with_big_first_row(dsn, 100_000)
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with pytest.raises(psycopg.errors.InFailedSqlTransaction), database.snapshot() as reader:
        batches = reader.batches(blobs_table(), "WHERE id > 0", block_size=CSV_BLOCK)
        next(batches)
        batches.close()  # type: ignore[attr-defined]
        reader.query("SELECT 1")


def test_a_copy_that_cannot_start_reports_why(postgres: PostgresServer) -> None:
    dsn = _create_blobs(postgres.create_database("transport_start"))
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with pytest.raises(MetadataError, match="does not exist"), database.snapshot() as reader:
        list(reader.batches(blobs_table(), "WHERE nope = 1"))


def test_copy_works_with_descriptor_numbers_above_1024(postgres: PostgresServer) -> None:
    """select(2) refuses descriptors >= 1024; a busy Airflow worker has that many open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if soft != resource.RLIM_INFINITY else soft, hard))
    dsn = _create_blobs(postgres.create_database("transport_fds"))
    _fill_with_big_first_row(dsn, 1000)
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
        with database.snapshot() as reader:
            rows = sum(b.num_rows for b in reader.batches(blobs_table(), block_size=16 * CSV_BLOCK))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert rows == 1001


class _FailingSink:
    """A spool that fails once some bytes are written, the way a full disk would."""

    def __init__(self, capacity: int) -> None:
        self.left = capacity
        self.writes = 0

    def write(self, data: bytes | bytearray) -> int:
        self.writes += 1
        self.left -= len(data)
        if self.left < 0:
            raise OSError(28, "No space left on device")
        return len(data)


def test_an_error_inside_the_copy_loop_leaves_the_connection_usable(postgres: PostgresServer) -> None:
    """The COPY is cancelled and read out: what follows on the connection runs (and finds the
    transaction aborted by the cancel), instead of failing with "another command is in progress"."""
    dsn = _create_blobs(postgres.create_database("transport_loop_error"))
    _fill_with_big_first_row(dsn, 100_000)
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with pytest.raises(psycopg.errors.InFailedSqlTransaction), database.snapshot() as reader:
        assert isinstance(reader, PostgresSession)
        sink = _FailingSink(8 << 20)  # full a third of the way through a ~25 MB COPY
        with pytest.raises(OSError, match="No space left"):
            reader._copy_out_libpq("COPY blobs TO STDOUT WITH (FORMAT csv)", sink)
        assert sink.writes > 1, "the error is raised in the middle of the COPY, not at its first write"
        reader.query("SELECT 1")


# Chunks of a COPY FROM are made in a thread while the server loads the previous one ------------


def test_prefetched_items_arrive_in_order() -> None:
    assert list(prefetched(iter(range(1000)))) == list(range(1000))


def test_an_error_making_an_item_is_raised_to_the_caller_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise MetadataError("a row that cannot be restored")

    seen = []
    with pytest.raises(MetadataError, match="cannot be restored"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_caller_that_stops_early_stops_the_thread_and_closes_the_items() -> None:
    made, closed = [], threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                made.append(i)
                yield i
        finally:
            closed.set()

    chunks = prefetched(items())
    assert next(chunks) == 0
    chunks.close()
    assert closed.is_set() and len(made) <= 3, len(made)
    assert not any(t.name == "prefetch" for t in threading.enumerate())
