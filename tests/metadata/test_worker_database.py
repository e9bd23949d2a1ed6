"""An Airflow 3 worker's database credentials: read from its environment variables into a
SQLAlchemy URL, refused with a message that names the variable and never shows its value, and
never shown by a repr."""

from __future__ import annotations

import json
import logging

import pytest

from mwaa_control.metadata.manifest import Manifest
from mwaa_control.metadata.worker_database import (
    WorkerDatabaseInvalid,
    postgres_driver,
    worker_database,
)

PASSWORD = "pw-Zq31337-never-shown"
VARIABLES = {
    "DB_SECRETS": json.dumps({"username": "airflow_user", "password": PASSWORD}),
    "POSTGRES_HOST": "db.internal",
    "POSTGRES_PORT": "6543",
    "POSTGRES_DB": "AirflowMetadata",
}


def test_the_variables_make_a_url_of_the_driver_airflow_uses() -> None:
    found = worker_database(VARIABLES)
    assert found is not None
    url = found.url()
    assert (url.drivername, url.username, url.host, url.port, url.database) == (
        f"postgresql+{postgres_driver()}",
        "airflow_user",
        "db.internal",
        6543,
        "AirflowMetadata",
    )
    assert url.password == PASSWORD
    assert found.url("psycopg2").drivername == "postgresql+psycopg2"


def test_user_is_accepted_for_username_and_the_port_defaults_to_5432() -> None:
    variables = {**VARIABLES, "DB_SECRETS": json.dumps({"user": "u", "password": "p", "engine": "postgres"})}
    del variables["POSTGRES_PORT"]
    found = worker_database(variables)
    assert found is not None and (found.username, found.port) == ("u", 5432)


def test_no_variables_is_no_database_not_an_error() -> None:
    assert worker_database({}) is None
    assert worker_database({"PATH": "/usr/bin", "DB_SECRETS": ""}) is None


def test_the_password_is_in_no_repr_and_no_log_line(caplog: pytest.LogCaptureFixture) -> None:
    found = worker_database(VARIABLES)
    assert found is not None
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("database %s / %r / url %r", found, found, found.url())
    for shown in (repr(found), str(found), repr(found.url()), caplog.text, found.model_dump_json()):
        assert PASSWORD not in shown


@pytest.mark.parametrize(
    ("secrets", "says"),
    [
        (f"username=airflow password={PASSWORD}", "DB_SECRETS is not JSON"),
        (json.dumps([PASSWORD]), "DB_SECRETS is JSON but not an object"),
        (json.dumps(PASSWORD), "DB_SECRETS is JSON but not an object"),
        (json.dumps({"username": "airflow"}), "DB_SECRETS has no usable password"),
        (json.dumps({"password": PASSWORD}), "DB_SECRETS has no usable username (or user)"),
        (json.dumps({"username": 7, "password": PASSWORD}), "DB_SECRETS has no usable username (or user)"),
        (json.dumps({"username": "a", "password": ""}), "DB_SECRETS has no usable password"),
    ],
)
def test_a_db_secrets_of_another_shape_is_refused_without_its_value(secrets: str, says: str) -> None:
    with pytest.raises(WorkerDatabaseInvalid) as refused:
        worker_database({**VARIABLES, "DB_SECRETS": secrets})
    assert says in str(refused.value)
    assert PASSWORD not in str(refused.value)
    # Not even in the chain a traceback would print (a JSON error's context holds the document).
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None or refused.value.__suppress_context__


def test_an_incomplete_set_or_a_bad_port_is_refused_by_name() -> None:
    with pytest.raises(WorkerDatabaseInvalid, match="but not POSTGRES_HOST"):
        worker_database({k: v for k, v in VARIABLES.items() if k != "POSTGRES_HOST"})
    with pytest.raises(WorkerDatabaseInvalid, match="but not DB_SECRETS"):
        worker_database({k: v for k, v in VARIABLES.items() if k != "DB_SECRETS"})
    with pytest.raises(WorkerDatabaseInvalid, match="POSTGRES_PORT is not a port number"):
        worker_database({**VARIABLES, "POSTGRES_PORT": "54x"})


def _manifest(**extra: object) -> dict[str, object]:
    return {
        "backup_id": "20990101T000000Z-deadbeef",
        "environment": "etl-prod",
        "created_at": "2099-01-01T00:00:00Z",
        "airflow_version": "3.0.6",
        "schema_revision": None,
        "source_dialect": "postgresql",
        "tables": {},
        "excluded_tables": {"session": "web sessions: meaningless in a new environment"},
        "excluded_dag_prefix": "mwaa_control_",
        "pause_states": {},
        "in_flight": [],
        "drained": True,
        "envelope": None,
        "sealed_values": 0,
        **extra,
    }


def test_manifests_record_their_path_and_older_ones_still_parse() -> None:
    older = Manifest.model_validate(_manifest())
    assert older.path == "database"
    assert older.not_restored == {"session": "web sessions: meaningless in a new environment"}
    rest = Manifest.model_validate(
        _manifest(source_dialect="airflow-rest-api", not_exported={"connection.password": ["a", "b"]})
    )
    assert rest.path == "rest"
    assert "dag_run" in rest.not_restored and "2 entries" in rest.not_restored["connection.password"]
    worker = Manifest.model_validate(_manifest(path="worker-database"))
    assert worker.path == "worker-database" and "session" in worker.not_restored
    assert Manifest.model_validate_json(worker.model_dump_json()) == worker
    with pytest.raises(ValueError, match="path"):
        Manifest.model_validate(_manifest(path="somewhere"))
