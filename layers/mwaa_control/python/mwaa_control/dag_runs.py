"""Triggering a DAG on behalf of a waiting Step Functions task."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from mwaa_control import callback
from mwaa_control.airflow.client import AirflowClient, DagRun
from mwaa_control.airflow.errors import AirflowCommandFailed, AirflowNotFound


class TriggerDagRequest(BaseModel):
    environment: str = Field(pattern=r"^[A-Za-z][0-9A-Za-z_-]{0,79}$")
    dag_id: str = Field(min_length=1, max_length=250)
    conf: dict[str, Any] = Field(default_factory=dict)
    task_token: str = Field(min_length=1, max_length=1024, repr=False)
    wait_until_parsed_seconds: float = Field(default=300, ge=0, le=840)


class TriggerDagResult(BaseModel):
    environment: str
    dag_id: str
    run_id: str
    state: str


def run_id_for(task_token: str) -> str:
    """One run per waiting task: a retried trigger finds the run instead of starting a second."""
    return f"mwaa_control__{hashlib.sha256(task_token.encode()).hexdigest()[:40]}"


def trigger_for_task(client: AirflowClient, request: TriggerDagRequest, *, region: str) -> TriggerDagResult:
    # Readiness first: a DAG file just synced may not be parsed yet (restore races parsing).
    client.wait_until_parsed(request.dag_id, timeout=request.wait_until_parsed_seconds)
    conf = callback.attach(request.conf, task_token=request.task_token, region=region)
    run_id = run_id_for(request.task_token)
    try:
        run: DagRun = client.trigger_dag(request.dag_id, conf=conf, run_id=run_id)
    except AirflowCommandFailed:
        try:
            run = client.dag_run(request.dag_id, run_id)  # triggered by an earlier attempt
        except AirflowNotFound:
            raise
    return TriggerDagResult(environment=request.environment, dag_id=run.dag_id, run_id=run.run_id, state=run.state)
