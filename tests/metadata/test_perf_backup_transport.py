"""What the backup's speed rests on (issue 10, item 8): COPY output handed to the CSV parser in
chunks of whole rows, Parquet options chosen per column kind, the largest tables read first."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from localcloud.postgres import PostgresServer
from mwaa_control.metadata import backup
from mwaa_control.metadata.catalog import Role
from mwaa_control.metadata.database import CSV_BLOCK, _Chunks, open_database, table_sizes
from mwaa_control.metadata.schema import Column, Kind, Table
from tests.metadata.blobs import CREATE, blobs_table


def _drain(chunks: _Chunks) -> list[bytes]:
    return [bytes(chunk) for chunk in chunks]


def test_rows_are_gathered_into_chunks_that_never_split_a_row() -> None:
    chunks = _Chunks(100)
    rows = [f"{i},{'x' * (i % 30)}\n".encode() for i in range(200)]
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(_drain(chunks)))
    reader.start()
    for row in rows:
        chunks.write(row)
    chunks.write(b"big," + b"y" * 300 + b"\n")  # larger than a chunk: a chunk of its own
    chunks.write(b"last\n")
    chunks.close()
    reader.join(timeout=10)
    assert b"".join(got) == b"".join(rows) + b"big," + b"y" * 300 + b"\n" + b"last\n"
    assert all(chunk.endswith(b"\n") for chunk in got)
    assert all(len(chunk) <= 100 for chunk in got if not chunk.startswith(b"big,"))
    assert any(chunk.startswith(b"big,") and len(chunk) == 305 for chunk in got)


def test_a_stopped_reader_makes_the_writer_drop_the_rest_without_blocking() -> None:
    chunks = _Chunks(10, depth=1)
    chunks.stop()
    for _ in range(1000):  # far more than the queue holds: never blocks
        assert chunks.write(b"0123456789\n") == 11
    chunks.close()


def test_parquet_options_follow_the_column_kinds(tmp_path: Path) -> None:
    table = Table(
        name="t",
        columns=[
            Column("id", Kind.INTEGER, False),
            Column("state", Kind.TEXT, True),
            Column("conf", Kind.JSON, True),
            Column("blob", Kind.BINARY, True),
            Column("at", Kind.TIMESTAMP, True),
        ],
        primary_key=("id",),
        unique_keys=[],
        references=[],
        role=Role.HISTORY,
        why="a test table",
        classified=True,
    )
    schema = table.arrow_schema()
    options = backup.parquet_options(schema, table)
    assert options["compression"] == "zstd"
    assert options["use_dictionary"] == ["state"]
    assert options["write_statistics"] == ["id", "state", "at"]  # not the JSON document nor the blob
    data = pa.table(
        {
            "id": pa.array(range(1000), pa.int64()),
            "state": pa.array(["success", "failed"] * 500),
            "conf": pa.array(['{"a": 1}'] * 1000),
            "blob": pa.array([b"\x00\xff"] * 1000),
            "at": pa.array([None] * 1000, pa.timestamp("us", tz="UTC")),
        },
        schema=schema,
    )
    path = tmp_path / "t.parquet"
    assert backup.write_parquet(path, schema, iter([data])) == 1000
    assert pq.read_table(path).equals(data)
    column = pq.ParquetFile(path).metadata.row_group(0).column
    assert "RLE_DICTIONARY" in column(1).encodings and "RLE_DICTIONARY" not in column(0).encodings
    assert column(0).statistics is not None and column(1).statistics is not None  # Athena prunes by them
    assert column(3).statistics is None  # write_parquet knows types only: a JSON column is text to it
    # Without a table, string columns are taken as text; an empty table's file is written all the same.
    assert backup.parquet_options(pa.schema([("s", pa.string()), ("b", pa.binary())])) == {
        "compression": "zstd",
        "use_dictionary": ["s"],
        "write_statistics": ["s"],
    }


def test_chunks_are_parsed_in_blocks_and_rows_survive_chunk_boundaries(postgres: PostgresServer) -> None:
    """Several chunks and blocks per table, rows from a byte to a third of a block: all read back."""
    dsn = postgres.create_database("perf_chunks").replace("postgresql+psycopg2://", "postgresql://")
    # A row is its bytes in hex and its text: about three times `size`, always less than a block.
    sizes = [1, 100, CSV_BLOCK // 4, CSV_BLOCK // 3 - 100, 7, CSV_BLOCK // 5] * 4
    with psycopg.connect(dsn) as connection:
        connection.execute(CREATE)
        connection.execute(
            "INSERT INTO blobs SELECT g, decode(md5(g::text), 'hex'), repeat('é,\"' || chr(10), g % 50)"
            " FROM generate_series(1, 20000) g"
        )
        for i, size in enumerate(sizes):
            connection.execute("INSERT INTO blobs VALUES (%s, %s, %s)", (100_000 + i, b"\x01" * size, "z" * size))
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with database.snapshot() as reader:
        read = pa.Table.from_batches(list(reader.batches(blobs_table(), "ORDER BY id")))
        assert table_sizes(reader, ["blobs"])["blobs"] > 0
    assert read.num_rows == 20000 + len(sizes)
    assert read.column("note")[4].as_py() == 'é,"\n' * 5
    assert [len(v) for v in read.column("data").to_pylist()[20000:]] == sizes
    assert [len(v) for v in read.column("note").to_pylist()[20000:]] == sizes


def test_the_largest_tables_are_read_first(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("perf_order").replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        for name, rows in (("small", 10), ("large", 50_000), ("medium", 5_000)):
            connection.execute(f"CREATE TABLE {name} (id integer, note text)")
            connection.execute(f"INSERT INTO {name} SELECT g, repeat('x', 50) FROM generate_series(1, %s) g", (rows,))
    database = open_database(dsn.replace("postgresql://", "postgresql+psycopg://"))
    tables = [
        Table(
            name=name,
            columns=[Column("id", Kind.INTEGER, True), Column("note", Kind.TEXT, True)],
            primary_key=(),
            unique_keys=[],
            references=[],
            role=Role.HISTORY,
            why="a test table",
            classified=True,
        )
        for name in ("small", "large", "medium")
    ]
    with database.snapshot() as reader:
        assert [t.name for t in backup._largest_first(reader, tables)] == ["large", "medium", "small"]
