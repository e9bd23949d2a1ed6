"""The metadata database of an Airflow 3 environment, reached from a task over its own connection.

Airflow 3 forbids its ORM in task code (`airflow.settings.engine` and sessions are removed in the
task process), but not a connection the task opens itself. Public deployment notes of another MWAA
backup project report that MWAA 3.0.6 workers carry the database's credentials in environment
variables (unverified by us, and their shape is not published):

    DB_SECRETS     a JSON object with the user name ("username", or "user") and "password"
    POSTGRES_HOST  the database's host name
    POSTGRES_PORT  its port (5432 when absent)
    POSTGRES_DB    the database name

`worker_database()` reads them. None of them set: None (this worker carries no credentials; the
caller decides what that means). Some set but unusable: WorkerDatabaseInvalid, naming the variable
and never echoing its value. The password lives in a SecretStr, so neither the model's repr nor a
log line built from it shows it, and the SQLAlchemy URL is built as an object (its repr hides the
password; it is never turned into a string here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, SecretStr

from mwaa_control.metadata.errors import MetadataError

SECRETS_VARIABLE = "DB_SECRETS"
HOST_VARIABLE = "POSTGRES_HOST"
PORT_VARIABLE = "POSTGRES_PORT"
DATABASE_VARIABLE = "POSTGRES_DB"
VARIABLES = (SECRETS_VARIABLE, HOST_VARIABLE, PORT_VARIABLE, DATABASE_VARIABLE)
DEFAULT_PORT = 5432
CONNECT_TIMEOUT_SECONDS = 10


class WorkerDatabaseInvalid(MetadataError):
    """The worker's database variables are set but cannot be used (the message names the variable,
    never its value); nothing was changed."""


class NoWorkerDatabase(MetadataError):
    """An Airflow 3 worker carries no database credentials: the database path cannot run there."""


class WorkerDatabase(BaseModel):
    """Where and as whom a task connects to its environment's metadata database."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int
    database: str
    username: str
    password: SecretStr

    def url(self, driver: str | None = None) -> sa.engine.URL:
        """A SQLAlchemy URL object (never a string: SQLAlchemy 1.4's str() would show the password)."""
        return sa.engine.URL.create(
            f"postgresql+{driver or postgres_driver()}",
            username=self.username,
            password=self.password.get_secret_value(),
            host=self.host,
            port=self.port,
            database=self.database,
        )

    def engine(self, driver: str | None = None) -> sa.engine.Engine:
        return sa.create_engine(
            self.url(driver),
            pool_pre_ping=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "mwaa-control"},
        )


def postgres_driver() -> str:
    """The DBAPI driver Airflow itself uses on this worker: psycopg2 where it is installed (Airflow
    2 and 3.0 images, `postgresql+psycopg2`), else psycopg 3."""
    try:
        import psycopg2  # noqa: F401, PLC0415 - only probing which driver is installed
    except ImportError:
        try:
            import psycopg  # noqa: F401, PLC0415
        except ImportError as error:
            raise WorkerDatabaseInvalid(
                "neither psycopg2 nor psycopg is installed on this worker: it cannot reach PostgreSQL"
            ) from error
        return "psycopg"
    return "psycopg2"


def _credentials(raw: str) -> tuple[str, str]:
    try:
        secrets = json.loads(raw)
    except ValueError:
        # `from None`: a JSON error's context holds the document, which is the secret.
        raise WorkerDatabaseInvalid(
            f"{SECRETS_VARIABLE} is not JSON; a JSON object with username and password is expected "
            "(its value is not shown)"
        ) from None
    if not isinstance(secrets, dict):
        raise WorkerDatabaseInvalid(
            f"{SECRETS_VARIABLE} is JSON but not an object; an object with username and password is expected "
            "(its value is not shown)"
        )
    username: Any = secrets.get("username", secrets.get("user"))
    password: Any = secrets.get("password")
    missing = [
        name
        for name, value in (("username (or user)", username), ("password", password))
        if not isinstance(value, str) or not value
    ]
    if missing:
        raise WorkerDatabaseInvalid(
            f"{SECRETS_VARIABLE} has no usable {' and no '.join(missing)} (a non-empty string each; "
            "its value is not shown)"
        )
    return str(username), str(password)


def worker_database(environ: Mapping[str, str]) -> WorkerDatabase | None:
    """The database the worker's variables name; None when none of them is set."""
    present = {name: environ[name] for name in VARIABLES if environ.get(name)}
    if not present:
        return None
    required = (SECRETS_VARIABLE, HOST_VARIABLE, DATABASE_VARIABLE)
    missing = [name for name in required if name not in present]
    if missing:
        raise WorkerDatabaseInvalid(
            f"this worker sets {', '.join(sorted(present))} but not {', '.join(missing)}: "
            "the metadata database cannot be reached"
        )
    port = present.get(PORT_VARIABLE, str(DEFAULT_PORT)).strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkerDatabaseInvalid(f"{PORT_VARIABLE} is not a port number")
    username, password = _credentials(present[SECRETS_VARIABLE])
    return WorkerDatabase(
        host=present[HOST_VARIABLE].strip(),
        port=int(port),
        database=present[DATABASE_VARIABLE].strip(),
        username=username,
        password=SecretStr(password),
    )
