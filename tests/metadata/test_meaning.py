"""The meaning check that a restore runs before it commits (and verify_restore after): rows are
compared by what they mean, with references resolved to the identity of the row they point at,
whatever ids either database gave them. Small hand-made tables on SQLite, so each way of being
wrong is shown on its own; the round trips check the same on real Airflow databases."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mwaa_control.metadata.catalog import Role
from mwaa_control.metadata.database import SqliteReader
from mwaa_control.metadata.restore import meaning_problems
from mwaa_control.metadata.schema import Column, Kind, Reference, Schema, Table
from mwaa_control.metadata.verify import _missing_keys

PARENT = Table(
    name="meaning_parent",
    columns=[Column("id", Kind.INTEGER, False), Column("uri", Kind.TEXT, False)],
    primary_key=("id",),
    unique_keys=[("uri",)],
    references=[],
    role=Role.HISTORY,
    why="test",
    classified=True,
)
# No natural key: identified by its content, its reference to the parent included.
EVENT = Table(
    name="meaning_event",
    columns=[
        Column("id", Kind.INTEGER, False),
        Column("parent_id", Kind.INTEGER, False),
        Column("extra", Kind.JSON, True),
        Column("duration", Kind.FLOAT, True),
    ],
    primary_key=("id",),
    unique_keys=[],
    references=[Reference(("parent_id",), PARENT.name, ("id",), True)],
    role=Role.HISTORY,
    why="test",
    classified=True,
)
# A natural key, and a (soft) reference that is not part of it.
KEYED = Table(
    name="meaning_keyed",
    columns=[Column("key", Kind.TEXT, False), Column("parent_id", Kind.INTEGER, True)],
    primary_key=("key",),
    unique_keys=[],
    references=[Reference(("parent_id",), PARENT.name, ("id",), False)],
    role=Role.HISTORY,
    why="test",
    classified=True,
)
SCHEMA = Schema("sqlite", {t.name: t for t in (PARENT, EVENT, KEYED)}, None)
TABLES = [PARENT, EVENT, KEYED]

BACKUP: dict[str, list[tuple[Any, ...]]] = {
    PARENT.name: [(1, "s3://a"), (2, "s3://b")],
    EVENT.name: [(1, 1, '{"x": 1, "y": [2]}', 3.0), (2, 2, None, 0.5)],
    KEYED.name: [("k1", 1), ("k2", 2), ("k3", None)],
}


def _target_rows(shift: int = 100) -> dict[str, list[tuple[Any, ...]]]:
    """The backup's rows as a restore writes them: other ids, JSON as jsonb prints it, a whole
    float as SQLite keeps it in an INTEGER-like column, and a row the target had of its own."""
    return {
        PARENT.name: [(5, "s3://own"), (1 + shift, "s3://a"), (2 + shift, "s3://b")],
        EVENT.name: [
            (7, 5, None, None),
            (1 + shift, 1 + shift, '{"y":[2],"x":1}', 3),
            (2 + shift, 2 + shift, None, 0.5),
        ],
        KEYED.name: [("own", 5), ("k1", 1 + shift), ("k2", 2 + shift), ("k3", None)],
    }


def _files(folder: Path) -> dict[str, Path]:
    files = {}
    for table in TABLES:
        columns = list(zip(*BACKUP[table.name], strict=True))
        schema = table.arrow_schema()
        data = pa.table([pa.array(list(c), schema.field(i).type) for i, c in enumerate(columns)], schema=schema)
        files[table.name] = folder / f"{table.name}.parquet"
        pq.write_table(data, files[table.name], row_group_size=1)  # several batches per table
    return files


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return _files(tmp_path)


@pytest.fixture
def target() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    for table in TABLES:
        connection.execute(f"CREATE TABLE {table.name} ({', '.join(table.column_names)})")
    yield connection
    connection.close()


def _fill(connection: sqlite3.Connection, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    for table in TABLES:
        marks = ", ".join("?" for _ in table.columns)
        connection.executemany(f"INSERT INTO {table.name} VALUES ({marks})", rows[table.name])


def _problems(connection: sqlite3.Connection, files: dict[str, Path], **options: Any) -> list[str]:
    return meaning_problems(SqliteReader(connection), SCHEMA, files, TABLES, **options)


def test_rows_that_mean_the_same_pass_whatever_their_ids(target: sqlite3.Connection, files: dict[str, Path]) -> None:
    _fill(target, _target_rows())
    assert _problems(target, files) == []


def test_an_event_pointing_at_another_parent_is_named(target: sqlite3.Connection, files: dict[str, Path]) -> None:
    rows = _target_rows()
    rows[EVENT.name][1] = (101, 102, '{"x": 1, "y": [2]}', 3.0)  # event 1 now points at s3://b
    _fill(target, rows)
    (problem,) = _problems(target, files)
    assert problem.startswith("meaning_event: 1 rows of the backup have no row of the same meaning")
    # The row is named by what it means: its parent's URI, its JSON, the whole float as an integer.
    assert problem.endswith('e.g. ["[\\"s3://a\\"]", "{\\"x\\": 1, \\"y\\": [2]}", 3]'), problem


def test_a_reference_outside_the_natural_key_pointing_elsewhere_is_named(
    target: sqlite3.Connection, files: dict[str, Path]
) -> None:
    rows = _target_rows()
    rows[KEYED.name][1] = ("k1", 102)
    _fill(target, rows)
    (problem,) = _problems(target, files)
    assert problem == (
        'meaning_keyed: 1 rows point at other rows than the backup\'s: ["k1"] links {"parent_id": "[\\"s3://a\\"]"}, '
        'the target\'s [\'{"parent_id": "[\\\\"s3://b\\\\"]"}\']'
    ), problem


def test_a_row_matched_to_one_the_target_had_is_checked_by_identity_only(
    target: sqlite3.Connection, files: dict[str, Path]
) -> None:
    rows = _target_rows()
    rows[KEYED.name][1] = ("k1", 102)
    _fill(target, rows)
    kept = {KEYED.name: pa.array([True, False, False])}
    assert _problems(target, files, skip_links=kept) == []
    target.execute(f"DELETE FROM {KEYED.name} WHERE key = 'k1'")
    (problem,) = _problems(target, files, skip_links=kept)
    assert problem.startswith("meaning_keyed: 1 rows of the backup have no row") and '["k1"]' in problem


def test_a_missing_parent_fails_every_row_that_points_at_it(target: sqlite3.Connection, files: dict[str, Path]) -> None:
    rows = _target_rows()
    rows[PARENT.name] = [r for r in rows[PARENT.name] if r[1] != "s3://a"]
    _fill(target, rows)
    problems = _problems(target, files)
    assert [p.split(":")[0] for p in problems] == [PARENT.name, EVENT.name, KEYED.name], problems
    assert "1 rows point at other rows" in problems[2] and '"parent_id": null' in problems[2]


def test_json_is_compared_by_meaning_not_by_text(target: sqlite3.Connection, files: dict[str, Path]) -> None:
    rows = _target_rows()
    rows[EVENT.name][1] = (101, 101, json.dumps({"x": 1, "y": [3]}), 3)
    _fill(target, rows)
    (problem,) = _problems(target, files)
    assert problem.startswith("meaning_event: 1 rows")


def test_verify_counts_the_natural_keys_the_target_lacks(target: sqlite3.Connection, files: dict[str, Path]) -> None:
    _fill(target, _target_rows())
    assert _missing_keys(SqliteReader(target), PARENT, ("uri",), files[PARENT.name]) == 0
    target.execute(f"DELETE FROM {PARENT.name} WHERE uri = 's3://b'")
    target.execute(f"UPDATE {KEYED.name} SET key = 'K1' WHERE key = 'k1'")
    assert _missing_keys(SqliteReader(target), PARENT, ("uri",), files[PARENT.name]) == 1
    assert _missing_keys(SqliteReader(target), KEYED, ("key",), files[KEYED.name]) == 1
    assert _missing_keys(SqliteReader(target), KEYED, ("key", "parent_id"), files[KEYED.name]) == 2  # k3: no key
