"""What task code sees on an emulated Airflow 3 worker: Airflow's ORM is out of reach (as the Task
SDK's supervisor removes it on a real worker), so a DAG that would need it cannot pass locally, while
the rest of a task's life (XComs, callbacks with the exception) still works; and the database
credentials MWAA 3 workers carry, pointing at the environment's own PostgreSQL database, unless the
emulator is told its workers carry none."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from localcloud import LocalCloud
from localcloud.airflow.backend import AirflowBackend
from localcloud.postgres import PostgresServer
from tests.conftest import build_shared_vpc, create_request

PROBE_DAG = textwrap.dedent(
    """
    import json
    import os
    from datetime import datetime

    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG


    def through_settings_engine():
        from airflow import settings

        with settings.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")


    def through_a_session():
        from airflow.models import DagModel
        from airflow.utils.session import create_session

        with create_session() as session:
            session.query(DagModel).count()


    def report_variables():
        return {k: bool(os.environ.get(k)) for k in ("DB_SECRETS", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB")}


    def note_failure(context):
        with open(os.path.join(os.environ["AIRFLOW_HOME"], "failures.jsonl"), "a") as out:
            error = context.get("exception")
            out.write(json.dumps({"task": context["ti"].task_id, "error": str(error)}) + "\\n")


    with DAG("probe", start_date=datetime(2024, 1, 1), schedule=None, catchup=False, is_paused_upon_creation=False):
        for name, work in (
            ("settings_engine", through_settings_engine),
            ("session", through_a_session),
            ("variables", report_variables),
        ):
            PythonOperator(task_id=name, python_callable=work, on_failure_callback=note_failure)
    """
)


def _task_states(backend: AirflowBackend) -> dict[str, str]:
    engine = sa.create_engine(backend.host_database_url())
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT task_id, state FROM task_instance WHERE dag_id = 'probe'")).all()
            xcom = db.execute(
                sa.text("SELECT value FROM xcom WHERE dag_id = 'probe' AND task_id = 'variables'")
            ).scalar()
    finally:
        engine.dispose()
    states = {str(r[0]): str(r[1]) for r in rows}
    if xcom is not None:
        if isinstance(xcom, bytes | memoryview):
            xcom = bytes(xcom).decode()
        states["variables_xcom"] = xcom if isinstance(xcom, str) else json.dumps(xcom)
    return states


def _run_probe(backend: AirflowBackend) -> tuple[dict[str, str], list[dict[str, str]]]:
    backend.write_dags({"probe.py": PROBE_DAG.encode()})
    backend.parse_dags()
    triggered = backend.cli(["dags", "trigger", "probe"])
    assert triggered.returncode == 0, triggered.stderr[-2000:]
    backend.schedule_runs()
    runs = backend.wait_for_runs(300)
    assert [r["dag_id"] for r in runs] == ["probe"]
    failures_file = backend.home / "failures.jsonl"
    noted = [json.loads(line) for line in failures_file.read_text().splitlines()] if failures_file.exists() else []
    return _task_states(backend), noted


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.mark.parametrize("credentials", [True, False], ids=["with-credentials", "without-credentials"])
def test_task_code_on_airflow_3_cannot_use_the_orm_and_sees_the_database_variables(
    postgres: PostgresServer, credentials: bool
) -> None:
    with LocalCloud() as cloud:
        cloud.emulator.postgres = postgres
        name = "workers-af3"
        if not credentials:
            cloud.emulator.without_worker_credentials.add(name)
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.client("mwaa").create_environment(
            **create_request(name, vpc, EndpointManagement="SERVICE", AirflowVersion="3.0.6")
        )
        cloud.run_for(timedelta(minutes=40))
        backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
        backend.ensure_ready()
        assert (backend.db_url or "").startswith("postgresql+psycopg2://")
        database = (backend.db_url or "").rsplit("/", 1)[-1]

        states, noted = _run_probe(backend)

        # The ORM is out of reach of task code, and the failure callback gets the exception.
        assert states["settings_engine"] == "failed" and states["session"] == "failed"
        assert {n["task"] for n in noted} == {"settings_engine", "session"}
        assert all("Database access is disabled" in n["error"] for n in noted), noted
        # Everything else still works (the execution API stores the XCom), and the variables are there.
        assert states["variables"] == "success"
        assert json.loads(states["variables_xcom"]) == dict.fromkeys(
            ("DB_SECRETS", "POSTGRES_DB", "POSTGRES_HOST", "POSTGRES_PORT"), credentials
        )
        if credentials:
            env = backend.environment()
            assert env["POSTGRES_DB"] == database and env["POSTGRES_PORT"] == str(postgres.port)
            assert set(json.loads(env["DB_SECRETS"])) == {"username", "password"}

        cloud.client("mwaa").delete_environment(Name=name)
        cloud.run_for(timedelta(minutes=30))
        assert database not in {r[0] for r in postgres.query("postgres", "SELECT datname FROM pg_database")}


def test_airflow_2_task_code_keeps_the_orm(tmp_path: Path) -> None:
    """The block is Airflow 3's: the export DAG's Airflow 2 path runs over Airflow's own engine."""
    backend = AirflowBackend(tmp_path / "af2", release="2.11.0")
    backend.ensure_ready()
    source = PROBE_DAG.replace(
        "from airflow.providers.standard.operators.python import PythonOperator",
        "from airflow.operators.python import PythonOperator",
    )
    source = source.replace("from airflow.sdk import DAG", "from airflow import DAG")
    backend.write_dags({"probe.py": source.encode()})
    backend.parse_dags()
    try:
        assert backend.cli(["dags", "trigger", "probe"]).returncode == 0
        backend.schedule_runs()
        backend.wait_for_runs(300)
        states = _task_states(backend)
    finally:
        backend.close()
    assert {k: v for k, v in states.items() if k != "variables_xcom"} == dict.fromkeys(
        ("settings_engine", "session", "variables"), "success"
    )
