"""A small table with every awkward value kind for the transport tests; imported inside Airflow's
virtualenv too, so it needs nothing but the shared package."""

from __future__ import annotations

from mwaa_control.metadata.catalog import Role
from mwaa_control.metadata.schema import Column, Kind, Table

CREATE = "CREATE TABLE blobs (id integer PRIMARY KEY, data bytea, note text)"


def blobs_table() -> Table:
    return Table(
        name="blobs",
        columns=[Column("id", Kind.INTEGER, False), Column("data", Kind.BINARY, True), Column("note", Kind.TEXT, True)],
        primary_key=("id",),
        unique_keys=[],
        references=[],
        role=Role.HISTORY,
        why="a test table",
        classified=True,
    )
