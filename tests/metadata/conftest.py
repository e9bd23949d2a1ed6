"""Real Airflow metadata databases for the backup/restore tests: one throwaway PostgreSQL server
per test session, freshly migrated SQLite databases of the releases MWAA offers, and moto's KMS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from localcloud.airflow.backend import AirflowBackend
from localcloud.postgres import PostgresServer
from tests.metadata.databases import Templates


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    """`airflow db migrate` of 2.11 and 2.9 on SQLite, once: copy a template before writing to it."""
    paths = []
    for release in ("2.11.0", "2.9.2"):
        backend = AirflowBackend(tmp_path_factory.mktemp(release), release=release)
        backend.ensure_ready()
        paths.append(backend.home / "airflow.db")
    return Templates(*paths)


@pytest.fixture
def kms() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")
