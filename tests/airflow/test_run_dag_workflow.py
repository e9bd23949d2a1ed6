"""The run-DAG workflow: the real ASL executed by moto's interpreter, the real trigger Lambda, real
Airflow behind the emulator, and the callback contract closing the loop."""

from __future__ import annotations

import json
import time
from typing import Any

from mwaa_control import callback
from mwaa_control.dag_runs import RUN_PREFIX
from tests.airflow.conftest import AirflowEnvironment


def start(env: AirflowEnvironment, name: str, conf: dict[str, Any]) -> str:
    sfn = env.cloud.client("stepfunctions")
    return str(
        sfn.start_execution(
            stateMachineArn=env.cloud.physical["RunDagStateMachine"],
            name=name,
            input=json.dumps({"environment": env.name, "dag_id": "hello", "conf": conf}),
        )["executionArn"]
    )


def waiting_run(
    env: AirflowEnvironment, known: set[str], execution: str, timeout: float = 180
) -> tuple[str, dict[str, Any]]:
    """The DAG run the workflow triggered (its conf carries the callback)."""
    deadline = time.monotonic() + timeout
    sfn = env.cloud.client("stepfunctions")
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            history = sfn.get_execution_history(executionArn=execution)["events"]
            raise AssertionError(f"execution ended {described['status']}: {history[-6:]}")
        runs = env.cloud.client("mwaa").invoke_rest_api(Name=env.name, Method="GET", Path="/dags/hello/dagRuns")
        submitted = any(
            e["type"] == "TaskSubmitted" for e in sfn.get_execution_history(executionArn=execution)["events"]
        )
        # A DAG reports back after its run starts, i.e. after the trigger task was submitted.
        for run in runs["RestApiResponse"]["dag_runs"] if submitted else []:
            if run["dag_run_id"].startswith(RUN_PREFIX) and run["dag_run_id"] not in known:
                return run["dag_run_id"], env.client.dag_run("hello", run["dag_run_id"]).conf or {}
        time.sleep(2)
    raise AssertionError("the workflow never triggered the DAG")


def finished(env: AirflowEnvironment, execution: str, timeout: float = 60) -> dict[str, Any]:
    sfn = env.cloud.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.5)
    raise AssertionError("execution still running")


def test_dag_run_reports_success_through_its_task_token(airflow_env: AirflowEnvironment) -> None:
    # Given the workflow triggers a DAG with a conf that must survive the trip
    conf = {"table": "orders", "note": "it's\nfine"}
    execution = start(airflow_env, "success-path", conf)
    _, run_conf = waiting_run(airflow_env, set(), execution)
    # Then the run carries the caller's conf and the callback block
    assert {k: v for k, v in run_conf.items() if k != callback.CONF_KEY} == conf
    reporter = callback.from_conf(run_conf)
    assert reporter is not None and reporter.region == "us-east-1"
    # When the DAG reports success with its token
    reporter.success({"rows": 42})
    # Then the workflow succeeds with the DAG's output
    described = finished(airflow_env, execution)
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"])["run"] == {"rows": 42}


def test_dag_run_failure_is_caught_notified_and_fails_the_workflow(airflow_env: AirflowEnvironment) -> None:
    execution = start(airflow_env, "failure-path", {})
    _, run_conf = waiting_run(airflow_env, _existing(airflow_env), execution)
    reporter = callback.from_conf(run_conf)
    assert reporter is not None
    reporter.failure("DagRunFailed", "task load_orders failed")
    described = finished(airflow_env, execution)
    assert described["status"] == "FAILED"
    history = airflow_env.cloud.client("stepfunctions").get_execution_history(executionArn=execution)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    assert entered == [
        "Default the run conf",
        "Trigger DAG and wait for its callback",
        "Notify run failure",
        "DAG run failed",
    ]


def _existing(env: AirflowEnvironment) -> set[str]:
    runs = env.cloud.client("mwaa").invoke_rest_api(Name=env.name, Method="GET", Path="/dags/hello/dagRuns")
    return {r["dag_run_id"] for r in runs["RestApiResponse"]["dag_runs"]}
