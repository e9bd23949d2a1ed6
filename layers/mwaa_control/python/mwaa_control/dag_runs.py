"""Triggering a DAG on behalf of a waiting Step Functions task."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from mwaa_control import callback
from mwaa_control.airflow.client import AirflowClient, DagRun
from mwaa_control.airflow.errors import AirflowCommandFailed, AirflowNotFound
from mwaa_control.errors import ControlPlaneError


class TriggerDagRequest(BaseModel):
    environment: str = Field(pattern=r"^[A-Za-z][0-9A-Za-z_-]{0,79}$")
    dag_id: str = Field(min_length=1, max_length=250)
    conf: dict[str, Any] = Field(default_factory=dict)
    task_token: str = Field(min_length=1, max_length=2048, repr=False)
    wait_until_parsed_seconds: float = Field(default=300, ge=0, le=840)


class InvalidTriggerRequest(ControlPlaneError):
    """The workflow passed a request the trigger cannot use; the message names fields, never values."""


def parse_trigger_request(event: Any) -> TriggerDagRequest:
    try:
        return TriggerDagRequest.model_validate(event)
    except ValidationError as error:
        # include_input=False: the event carries the task token and the caller's conf.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in error.errors(include_input=False)
        )
        raise InvalidTriggerRequest(f"invalid run-DAG request: {problems}") from None


class TriggerDagResult(BaseModel):
    environment: str
    dag_id: str
    run_id: str
    state: str


RUN_PREFIX = "mwaactl__"


def run_id_for(task_token: str) -> str:
    """One run per waiting task: a retried trigger finds the run instead of starting a second.
    Short, because InvokeRestApi paths (/dags/{dag}/dagRuns/{run}) are limited to 64 characters."""
    return f"{RUN_PREFIX}{hashlib.sha256(task_token.encode()).hexdigest()[:24]}"


def trigger_for_task(client: AirflowClient, request: TriggerDagRequest, *, region: str) -> TriggerDagResult:
    # Readiness first: a DAG file just synced may not be parsed yet (restore races parsing).
    client.wait_until_parsed(request.dag_id, timeout=request.wait_until_parsed_seconds)
    conf = callback.attach(request.conf, task_token=request.task_token, region=region)
    run_id = run_id_for(request.task_token)
    try:
        # No read-back: once Airflow has the run, nothing may fail this task, because a Step Functions
        # retry brings a new task token and would start a second run.
        run: DagRun = client.trigger_dag(request.dag_id, conf=conf, run_id=run_id, read_back=False)
    except AirflowCommandFailed:
        try:
            run = client.dag_run(request.dag_id, run_id)  # triggered by an earlier attempt
        except AirflowNotFound:
            raise
    return TriggerDagResult(environment=request.environment, dag_id=run.dag_id, run_id=run.run_id, state=run.state)
