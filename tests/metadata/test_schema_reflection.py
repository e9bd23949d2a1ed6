"""Reflecting a real migrated Airflow 2.11 metadata database: SQLAlchemy 2's batched catalog calls
(get_multi_*) give the same Schema as the per-table calls of SQLAlchemy 1.4, run by Airflow 2's own
virtualenv (what its workers run), and on PostgreSQL they ask the catalog a handful of times, not
once per table and kind."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

import mwaa_control
from localcloud.airflow.backend import AirflowBackend, venv_for_release
from localcloud.postgres import PostgresServer
from mwaa_control.metadata import schema as schema_module
from mwaa_control.metadata.schema import reflect
from tests.metadata.databases import Templates

LAYER = Path(mwaa_control.__file__).resolve().parents[1]


# Runs inside Airflow 2.11's virtualenv, whose SQLAlchemy (1.4) has no get_multi_* calls.
REFLECT = """
import sys, sqlalchemy as sa
from mwaa_control.metadata.schema import reflect
engine = sa.create_engine(sys.argv[1])
with engine.connect() as connection:
    print(sa.__version__)
    print(repr(reflect(connection)))
"""


def _reflected_by_sqlalchemy_14(url: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(LAYER), "PYTHONWARNINGS": "ignore"}
    python = venv_for_release("2.11.0") / "bin" / "python"
    done = subprocess.run([str(python), "-c", REFLECT, url], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    version, reflected = done.stdout.strip().split("\n", 1)
    assert version.startswith("1.4."), version
    return reflected


@pytest.fixture(scope="module")
def postgres_url(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated Airflow 2.11 database on PostgreSQL, as psycopg2 (Airflow 2's driver) reaches it."""
    backend = AirflowBackend(
        tmp_path_factory.mktemp("reflect"), release="2.11.0", db_url=postgres.create_database("reflect_211")
    )
    backend.ensure_ready()
    assert backend.db_url is not None
    return backend.db_url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    templates: Templates = request.getfixturevalue("templates")
    path = tmp_path / "airflow.db"
    shutil.copy(templates.v211, path)
    return f"sqlite:///{path}"


def test_sqlalchemy_2_reflects_what_sqlalchemy_14_reflects(url: str) -> None:
    # Given a migrated Airflow 2.11 database
    engine = sa.create_engine(url.replace("postgresql+psycopg2://", "postgresql+psycopg://"))
    try:
        # When it is reflected here (SQLAlchemy 2, batched) and on an Airflow 2 worker (1.4, per table)
        with engine.connect() as connection:
            batched = reflect(connection)
    finally:
        engine.dispose()
    per_table = _reflected_by_sqlalchemy_14(url)
    # Then every table, column (in order), key and reference is the same
    assert len(batched.tables) > 40
    assert batched.tables["task_instance"].references  # something real was compared
    assert repr(batched) == per_table


def test_postgres_reflection_asks_the_catalog_a_few_times(postgres_url: str) -> None:
    # Given a migrated Airflow 2.11 database on PostgreSQL
    engine = sa.create_engine(postgres_url.replace("postgresql+psycopg2://", "postgresql+psycopg://"))
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        # When it is reflected
        with engine.connect() as connection:
            schema = reflect(connection)
    finally:
        engine.dispose()
    # Then the catalog is asked per kind of fact, not per table (it was ~290 queries, 0.5 s)
    assert len(schema.tables) > 40
    assert len(statements) < 30, len(statements)


def test_the_matching_key_does_not_depend_on_the_order_the_catalog_lists_keys(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a migrated Airflow 2.11 database, reflected as the catalog lists its unique keys
    engine = sa.create_engine(url.replace("postgresql+psycopg2://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            listed = reflect(connection)
        # When the catalog lists every table's unique constraints and indexes the other way round
        # (PostgreSQL promises no order: CI once saw ab_user's email before its username)
        describe = schema_module._describe

        def reversed_keys(inspector: object, names: list[str]) -> dict[str, object]:
            return {
                name: dataclasses.replace(
                    found,
                    unique_constraints=list(reversed(found.unique_constraints)),
                    indexes=list(reversed(found.indexes)),
                )
                for name, found in describe(inspector, names).items()
            }

        monkeypatch.setattr(schema_module, "_describe", reversed_keys)
        with engine.connect() as connection:
            reversed_listing = reflect(connection)
    finally:
        engine.dispose()
    # Then every table has the same keys in the same order, so a restore matches rows on the same key
    assert reversed_listing == listed
    assert listed.tables["ab_user"].identities[:2] == [("username",), ("email",)]
    assert listed.tables["dag_run"].identities[:2] == [("dag_id", "execution_date"), ("dag_id", "run_id")]
