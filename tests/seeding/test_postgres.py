"""The throwaway PostgreSQL cluster the metadata tests run against, and the Airflow backend options
(exact release, external database) the seeding uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcloud.airflow.backend import LOCAL_RELEASES, AirflowBackend, AirflowNotInstalled, venv_for_release
from localcloud.postgres import PostgresError, PostgresServer


def test_a_private_cluster_serves_databases_and_is_removed_on_exit() -> None:
    with PostgresServer() as pg:
        root = pg.root
        assert root is not None and root.exists()
        url = pg.create_database("seed_check")
        assert url == f"postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/seed_check"
        assert pg.psycopg_url("seed_check") == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/seed_check"
        assert pg.dsn("seed_check") == f"host=127.0.0.1 port={pg.port} user=postgres dbname=seed_check"
        pg.psql("seed_check", "CREATE TABLE t (a text, b bytea); INSERT INTO t VALUES (E'naïve ☃\\n|x', '\\x00ff')")
        assert pg.query("seed_check", "SELECT a, encode(b, 'hex') FROM t") == [("naïve ☃\n|x", "00ff")]
        assert pg.query("seed_check", "SHOW server_encoding") == [("UTF8",)]
        assert b"CREATE TABLE public.t" in pg.dump("seed_check")
        pg.drop_database("seed_check")
        with pytest.raises(PostgresError):
            pg.query("seed_check", "SELECT 1")
    assert not pg.running
    assert not root.exists()
    with pytest.raises(PostgresError, match="not running"):
        pg.create_database("after_stop")


def test_database_names_are_plain_identifiers() -> None:
    pg = PostgresServer()
    for name in ("Upper", "semi;colon", "quote'", "", "1digit"):
        with pytest.raises(ValueError, match="identifiers"):
            pg.url(name)


def test_backend_by_exact_release_and_external_database(tmp_path: Path) -> None:
    default = AirflowBackend(tmp_path, 2)
    assert default.release == LOCAL_RELEASES[2]
    assert default.environment()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow.db'}"
    url = "postgresql+psycopg2://postgres@127.0.0.1:5999/airflow"
    external = AirflowBackend(tmp_path, release=LOCAL_RELEASES[2], db_url=url)
    assert external.major == 2
    assert external.venv == venv_for_release(LOCAL_RELEASES[2])
    assert external.environment()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    with pytest.raises(ValueError, match=r"not of the 3\.x line"):
        AirflowBackend(tmp_path, 3, release=LOCAL_RELEASES[2])
    with pytest.raises(AirflowNotInstalled, match="make airflow-venvs"):
        venv_for_release("2.0.0")
