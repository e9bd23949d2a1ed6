"""Real Airflow metadata databases for the backup/restore tests: one throwaway PostgreSQL server
per test session, and source/target Airflow installations of the releases MWAA offers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcloud.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
