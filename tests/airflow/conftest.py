"""One emulated environment per Airflow line (2.11 and 3.0), backed by real Airflow, shared by the
tests of a module: creating the metadata database and every CLI call cost real seconds."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from localcloud import LocalCloud
from localcloud.airflow.backend import AirflowBackend
from mwaa_control.airflow.client import AirflowClient
from mwaa_control.composition import airflow_client
from tests.conftest import build_shared_vpc, create_request

HELLO_DAG = textwrap.dedent(
    """
    from datetime import datetime
    from airflow import DAG
    try:
        from airflow.providers.standard.operators.empty import EmptyOperator
    except ImportError:
        from airflow.operators.empty import EmptyOperator

    with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
        EmptyOperator(task_id="only")
    """
)


@dataclass
class AirflowEnvironment:
    cloud: LocalCloud
    name: str
    version: str
    backend: AirflowBackend
    client: AirflowClient

    def add_dag(self, dag_id: str, source: str | None = None) -> None:
        (self.backend.dags_folder / f"{dag_id}.py").write_text(source or HELLO_DAG.format(dag_id=dag_id))


@pytest.fixture(scope="module", params=["2.11.0", "3.0.6"], ids=["airflow2", "airflow3"])
def airflow_env(request: pytest.FixtureRequest) -> Iterator[AirflowEnvironment]:
    version = request.param
    with LocalCloud() as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.client("mwaa").create_environment(
            **create_request("data-platform", vpc, EndpointManagement="SERVICE", AirflowVersion=version)
        )
        cloud.run_for(timedelta(minutes=30))
        backend = cloud.emulator.airflow(cloud.account, cloud.region, "data-platform")
        env = AirflowEnvironment(
            cloud, "data-platform", version, backend, airflow_client("data-platform", mwaa=cloud.client("mwaa"))
        )
        backend.ensure_ready()
        env.add_dag("hello")
        backend.parse_dags()
        yield env
