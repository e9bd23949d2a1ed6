"""The run-DAG workflow: the real ASL executed by moto's interpreter, the real trigger Lambda, real
Airflow behind the emulator, and the callback contract closing the loop."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest

from mwaa_control.airflow import callback
from mwaa_control.airflow.callback_store import callback_store
from mwaa_control.airflow.dag_runs import RUN_PREFIX, TriggerDagRequest, TriggerDagResult, run_id_for, trigger_for_task
from mwaa_control.airflow.errors import AirflowAccessDenied, AirflowForbidden, AirflowNotFound
from mwaa_control.composition import airflow_client
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
    run_id, run_conf = waiting_run(airflow_env, set(), execution)
    # Then the run carries the caller's conf and a reference to the callback, never the token:
    # not in the conf Airflow's REST API shows, not in the row its metadata database stores
    assert {k: v for k, v in run_conf.items() if k != callback.CONF_KEY} == conf
    reference = run_conf[callback.CONF_KEY]
    assert set(reference) == {"callback_id", "environment", "table", "region"}
    token = task_token_of(airflow_env, run_id)
    stored = stored_conf(airflow_env, run_id)
    assert reference["callback_id"].encode() in stored and token.encode() not in stored
    assert token[:40] not in json.dumps(run_conf)
    # And the token waits in DynamoDB under the reference
    assert callback_record(airflow_env, reference) is not None
    # When the DAG reports success: it resolves the token from DynamoDB and calls Step Functions
    reporter = callback.from_conf(run_conf)
    assert reporter is not None and reporter.region == "us-east-1"
    reporter.success({"rows": 42})
    # Then the workflow succeeds with the DAG's output, and the record is gone
    described = finished(airflow_env, execution)
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"])["run"] == {"rows": 42}
    assert callback_record(airflow_env, reference) is None


def test_dag_run_failure_is_caught_notified_and_fails_the_workflow(airflow_env: AirflowEnvironment) -> None:
    execution = start(airflow_env, "failure-path", {})
    run_id, run_conf = waiting_run(airflow_env, _existing(airflow_env), execution)
    assert task_token_of(airflow_env, run_id).encode() not in stored_conf(airflow_env, run_id)
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
    assert callback_record(airflow_env, run_conf[callback.CONF_KEY]) is None


def _existing(env: AirflowEnvironment) -> set[str]:
    runs = env.cloud.client("mwaa").invoke_rest_api(Name=env.name, Method="GET", Path="/dags/hello/dagRuns")
    return {r["dag_run_id"] for r in runs["RestApiResponse"]["dag_runs"]}


def task_token_of(env: AirflowEnvironment, run_id: str) -> str:
    """The task token the workflow handed the trigger for this run (the Lambda's input)."""
    tokens = {
        i.event["task_token"]
        for i in env.cloud.lambdas.invocations
        if i.function == "DagTriggerFunction" and run_id_for(i.event["task_token"]) == run_id
    }
    [token] = tokens
    return str(token)


def stored_conf(env: AirflowEnvironment, run_id: str) -> bytes:
    """The run's conf column as Airflow stored it (pickled on Airflow 2, JSON on Airflow 3)."""
    with closing(sqlite3.connect(env.backend.home / "airflow.db")) as db:
        [(value,)] = db.execute("SELECT conf FROM dag_run WHERE dag_id = ? AND run_id = ?", ("hello", run_id))
    return value.encode() if isinstance(value, str) else bytes(value)


def callback_record(env: AirflowEnvironment, reference: dict[str, Any]) -> dict[str, Any] | None:
    item = (
        env.cloud.client("dynamodb")
        .get_item(
            TableName=reference["table"],
            Key={"pk": {"S": f"callback#{reference['environment']}#{reference['callback_id']}"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return dict(item) if item else None


def allow(env: AirflowEnvironment, *roles: str) -> Callable[[str, str, object], bool]:
    """A caller's IAM: the environment-level calls on its ARN, InvokeRestApi as the given roles."""
    environment_arn = f"arn:aws:airflow:{env.cloud.region}:{env.cloud.account}:environment/{env.name}"
    role_arns = {f"arn:aws:airflow:{env.cloud.region}:{env.cloud.account}:role/{env.name}/{r}" for r in roles}

    def authorize(action: str, resource: str, context: object = None) -> bool:
        if action == "airflow:InvokeRestApi":
            return resource in role_arns
        return resource == environment_arn

    return authorize


@contextmanager
def iam(env: AirflowEnvironment, authorize: Callable[[str, str, object], bool]) -> Iterator[None]:
    previous = env.cloud.emulator.authorize
    env.cloud.emulator.authorize = authorize
    try:
        yield
    finally:
        env.cloud.emulator.authorize = previous


def trigger_as(env: AirflowEnvironment, token: str) -> TriggerDagResult:
    request = TriggerDagRequest(environment=env.name, dag_id="hello", task_token=token, wait_until_parsed_seconds=0)
    return trigger_for_task(
        airflow_client(env.name, mwaa=env.cloud.client("mwaa")),
        request,
        callbacks=callback_store(env.cloud.physical["LockTable"], region=env.cloud.region),
        region=env.cloud.region,
    )


def test_the_trigger_path_needs_no_more_than_the_viewer_role(airflow_env: AirflowEnvironment) -> None:
    # Given callers allowed InvokeRestApi as User, or only as Viewer (reads: the trigger itself goes
    # through the CLI endpoint, authorised by CreateCliToken on the environment)
    for role in ("User", "Viewer"):
        with iam(airflow_env, allow(airflow_env, role)):
            # When each triggers a run for a waiting task, then the run exists
            result = trigger_as(airflow_env, f"token-{role}-" + "t" * 64)
        assert airflow_env.client.dag_run("hello", result.run_id).run_id == result.run_id


def test_environment_resources_do_not_grant_the_rest_api(airflow_env: AirflowEnvironment) -> None:
    # Given a caller granted InvokeRestApi only on environment/* (the wrong resource)
    environment_only = allow(airflow_env)
    granted = iam(
        airflow_env,
        lambda action, resource, context: environment_only(action, resource, context) or resource.endswith("/*"),
    )
    # When it triggers, then the first REST call (is the DAG parsed?) is refused by IAM
    with granted, pytest.raises(AirflowAccessDenied, match="InvokeRestApi"):
        trigger_as(airflow_env, "token-environment-only-" + "t" * 64)


def test_the_user_role_cannot_write_variables(airflow_env: AirflowEnvironment) -> None:
    with iam(airflow_env, allow(airflow_env, "User")):
        client = airflow_client(airflow_env.name, mwaa=airflow_env.cloud.client("mwaa"))
        with pytest.raises(AirflowForbidden):
            client.set_variable("written_as_user", "x")
    with pytest.raises(AirflowNotFound):
        airflow_env.client.get_variable("written_as_user")
