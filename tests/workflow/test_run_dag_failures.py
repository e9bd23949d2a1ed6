"""The run-DAG state machine's failure handling, executed by moto's ASL interpreter with the real
trigger Lambda (no Airflow needed: these runs fail before reaching it)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from localcloud import LocalCloud


def run(cloud: LocalCloud, name: str, payload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sfn = cloud.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=cloud.physical["RunDagStateMachine"], name=name, input=json.dumps(payload)
    )["executionArn"]
    deadline = time.monotonic() + 60
    while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    return sfn.describe_execution(executionArn=arn), sfn.get_execution_history(executionArn=arn)["events"]


def states_entered(history: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]


def test_unknown_environment_is_caught_notified_and_fails(cloud: LocalCloud) -> None:
    # Given an execution without a conf, for an environment that does not exist
    described, history = run(cloud, "no-such-env", {"environment": "ghost", "dag_id": "hello"})
    # Then the missing conf was defaulted, the trigger's failure caught and notified, and the run failed
    assert described["status"] == "FAILED"
    assert states_entered(history) == [
        "Default the run conf",
        "Trigger DAG and wait for its callback",
        "Notify run failure",
        "DAG run failed",
    ]
    [published] = [
        e for e in history if e["type"] == "TaskScheduled" and e["taskScheduledEventDetails"]["resourceType"] == "sns"
    ]
    message = json.loads(published["taskScheduledEventDetails"]["parameters"])["Message"]
    assert (message.startswith("DAG hello on ghost failed:") and "AirflowNotFound" not in message) or "ghost" in message


def test_invalid_request_error_names_fields_never_values(cloud: LocalCloud) -> None:
    secret = "hunter2-conf-secret"
    described, history = run(cloud, "bad-request", {"environment": "etl", "dag_id": "", "conf": {"pw": secret}})
    assert described["status"] == "FAILED"
    failures = [e for e in history if e["type"] == "LambdaFunctionFailed" or e["type"] == "TaskFailed"]
    text = json.dumps(history, default=str)
    assert "InvalidTriggerRequest" in text and "dag_id" in text
    assert failures, "the trigger task should have failed"
    # The conf goes into the Lambda's input (that is the contract) but never into an error or alert.
    error_texts = json.dumps(
        [
            e
            for e in history
            if "Failed" in e["type"]
            or (e["type"] == "TaskScheduled" and e["taskScheduledEventDetails"]["resourceType"] == "sns")
        ],
        default=str,
    )
    assert secret not in error_texts


@pytest.mark.parametrize("conf", [None, [], 0, "", False, [{"a": 1}]], ids=repr)
def test_a_conf_that_is_not_an_object_is_refused_not_defaulted(cloud: LocalCloud, conf: Any) -> None:
    # Given an execution whose conf is present but not a JSON object
    described, history = run(cloud, "bad-conf", {"environment": "etl", "dag_id": "hello", "conf": conf})
    # Then the trigger received it as given (only a missing conf is defaulted to {}) and refused it
    # before calling MWAA, naming the field; the workflow failed through its notification
    [invocation] = [i for i in cloud.lambdas.invocations if i.function == "DagTriggerFunction"]
    assert invocation.event["conf"] == conf and invocation.error == "InvalidTriggerRequest"
    assert cloud.emulator.calls == []
    assert described["status"] == "FAILED"
    assert states_entered(history)[-2:] == ["Notify run failure", "DAG run failed"]
    failed = json.dumps([e for e in history if "Failed" in e["type"]], default=str)
    assert "InvalidTriggerRequest" in failed and "conf" in failed
    assert invocation.event["task_token"][:40] not in failed
