"""Real Airflow metadata databases (`airflow db migrate`, ~7 s, once per test package and worker)
and the KMS key the backup engine seals secrets with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mwaa_control.metadata.sealing import KeyService, KmsKeyService
from tests.analytics.backups import migrated


@pytest.fixture(scope="package")
def airflow2_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly migrated Airflow 2 (2.11) metadata database: copy it before writing to it."""
    return migrated(tmp_path_factory.mktemp("airflow2"), 2)


@pytest.fixture(scope="module")
def backup_keys() -> Iterator[KeyService]:
    """Sealing keys from (moto's) KMS: a real Airflow database always has the variable, connection,
    trigger and log tables, whose secrets the engine seals."""
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key(Description="metadata backups")["KeyMetadata"]["KeyId"]
        yield KmsKeyService(kms, key_id)
