"""Triggering a DAG on behalf of a waiting Step Functions task."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError

from mwaa_control.airflow import callback, values
from mwaa_control.airflow.client import AirflowClient, DagRun
from mwaa_control.airflow.errors import AirflowCommandFailed, AirflowNotFound, UnsafeValue
from mwaa_control.errors import ControlPlaneError


def _airflow_dag_id(value: str) -> str:
    try:
        return values.dag_id(value)
    except UnsafeValue:
        # The rule, not the value: refusals of the request never echo what it carried.
        raise ValueError(
            "not a DAG id Airflow accepts (1-250 letters, digits, _ . -; not starting with '-'; not only dots)"
        ) from None


def _conf_depth(value: dict[str, Any]) -> dict[str, Any]:
    try:
        return dict(values.conf_depth_within_limit(value))
    except UnsafeValue as error:
        raise ValueError(str(error)) from None


class TriggerDagRequest(BaseModel):
    environment: str = Field(pattern=callback.ENVIRONMENT_NAME)
    dag_id: Annotated[str, AfterValidator(_airflow_dag_id)]
    # Only a missing conf defaults to {}: null, [], 0, "" and false are refused (strict dict).
    conf: Annotated[dict[str, Any], AfterValidator(_conf_depth)] = Field(default_factory=dict, strict=True)
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


def trigger_for_task(
    client: AirflowClient,
    request: TriggerDagRequest,
    *,
    callbacks: callback.CallbackStore,
    region: str,
    clock: Callable[[], float] = time.time,
) -> TriggerDagResult:
    reference = callback.reference_for(
        request.task_token, environment=request.environment, table=callbacks.table, region=region
    )
    conf = callback.attach(request.conf, reference)
    values.conf_json(conf)  # a conf Airflow cannot take is refused before the token is stored
    # Readiness first: a DAG file just synced may not be parsed yet (restore races parsing).
    client.wait_until_parsed(request.dag_id, timeout=request.wait_until_parsed_seconds)
    # The token waits in the store before the run exists: a DAG that finishes at once still finds it.
    callback.register(callbacks, request.task_token, reference, now=clock())
    run_id = run_id_for(request.task_token)
    try:
        # No read-back: once Airflow has the run, nothing may fail this task, because a Step Functions
        # retry brings a new task token and would start a second run.
        run: DagRun = client.trigger_dag(request.dag_id, conf=conf, run_id=run_id, read_back=False)
    except AirflowCommandFailed as refused:
        try:
            run = client.dag_run(request.dag_id, run_id)  # triggered by an earlier attempt
        except AirflowNotFound:
            # No earlier run: Airflow's reason for refusing the trigger is what the operator needs.
            raise refused from None
    return TriggerDagResult(environment=request.environment, dag_id=run.dag_id, run_id=run.run_id, state=run.state)
