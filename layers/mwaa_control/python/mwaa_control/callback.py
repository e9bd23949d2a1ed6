"""The callback contract between Step Functions and DAGs, defined once.

A workflow step triggers a DAG with `.waitForTaskToken`; the trigger puts a `mwaa_control` block in
the run's conf: {"task_token": ..., "region": ...}. The DAG reports back with the helpers below
(from its final task, or from on_success/on_failure callbacks), and keeps a long task alive with
heartbeats. The token lives in the run's conf (visible to Airflow users with access to the DAG
run); it is never logged here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

CONF_KEY = "mwaa_control"
MAX_OUTPUT_BYTES = 256 * 1024
_MAX_CAUSE = 32_768


class Callback(BaseModel):
    task_token: str = Field(min_length=1, max_length=2048, repr=False)
    region: str

    def _client(self) -> Any:
        from mwaa_control.adapters.clients import client  # noqa: PLC0415 - keep DAG imports light

        return client("stepfunctions", region=self.region)

    def success(self, output: dict[str, Any] | None = None) -> None:
        body = json.dumps(output or {}, default=str)
        if len(body.encode()) > MAX_OUTPUT_BYTES:
            raise ValueError(f"callback output is {len(body)} bytes; Step Functions accepts {MAX_OUTPUT_BYTES}")
        self._client().send_task_success(taskToken=self.task_token, output=body)

    def failure(self, error: str, cause: str = "") -> None:
        self._client().send_task_failure(taskToken=self.task_token, error=error[:256], cause=cause[:_MAX_CAUSE])

    def heartbeat(self) -> None:
        self._client().send_task_heartbeat(taskToken=self.task_token)


def attach(conf: dict[str, Any], *, task_token: str, region: str) -> dict[str, Any]:
    """The conf a DAG run is triggered with: the caller's conf plus the callback block."""
    if CONF_KEY in conf:
        raise ValueError(f"conf key {CONF_KEY!r} is reserved for the callback contract")
    return {**conf, CONF_KEY: Callback(task_token=task_token, region=region).model_dump()}


def from_conf(conf: dict[str, Any] | None) -> Callback | None:
    """The callback of a run triggered by the control plane, or None for any other run."""
    block = (conf or {}).get(CONF_KEY)
    return Callback.model_validate(block) if isinstance(block, dict) else None


def report_success(context: dict[str, Any]) -> None:
    """Airflow on_success_callback: tell the waiting workflow the run succeeded."""
    run = context["dag_run"]
    callback = from_conf(run.conf)
    if callback:
        callback.success({"dag_id": run.dag_id, "run_id": run.run_id, "state": "success"})


def report_failure(context: dict[str, Any]) -> None:
    """Airflow on_failure_callback: tell the waiting workflow the run failed, and why."""
    run = context["dag_run"]
    callback = from_conf(run.conf)
    if callback:
        reason = str(context.get("reason") or context.get("exception") or "DAG run failed")
        callback.failure("DagRunFailed", json.dumps({"dag_id": run.dag_id, "run_id": run.run_id, "reason": reason}))
