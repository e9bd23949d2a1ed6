"""The run-DAG request the workflow hands the trigger: anything it cannot use is refused with a
typed error naming the field, never echoing a value (the request carries the task token)."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from mwaa_control.airflow.dag_runs import InvalidTriggerRequest, parse_trigger_request

TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAT0k3n-" + "t" * 200


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def event(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"environment": "etl", "dag_id": "hello", "conf": {}, "task_token": TOKEN}
    fields.update(overrides)
    return fields


@pytest.mark.parametrize("conf", [[], 0, "", False, None, [{"a": 1}], "{}"])
def test_a_conf_that_is_not_a_json_object_is_refused(conf: Any) -> None:
    with pytest.raises(InvalidTriggerRequest, match="conf"):
        parse_trigger_request(event(conf=conf))


def test_only_a_missing_conf_defaults_to_an_empty_object() -> None:
    fields = event()
    del fields["conf"]
    assert parse_trigger_request(fields).conf == {}


def test_a_conf_nested_too_deep_is_a_typed_error_not_a_recursion_error() -> None:
    with pytest.raises(InvalidTriggerRequest, match=r"conf: .*deeper than 64"):
        parse_trigger_request(event(conf=nested(3000)))
    with pytest.raises(InvalidTriggerRequest, match="deeper than 64"):
        parse_trigger_request(event(conf={"list": [[[nested(62)]]]}))
    assert parse_trigger_request(event(conf=nested(64))).conf == nested(64)


@pytest.mark.parametrize("dag_id", [".", "..", "...", "-h", "a b", "a/b"])
def test_dag_ids_that_would_break_the_command_or_the_rest_path_are_refused(dag_id: str) -> None:
    with pytest.raises(InvalidTriggerRequest, match="dag_id"):
        parse_trigger_request(event(dag_id=dag_id))


@pytest.mark.parametrize(
    "overrides",
    [
        {"task_token": TOKEN + "x" * 3000},
        {"dag_id": ".."},
        {"conf": nested(100)},
        {"conf": None},
        {"environment": "no such env!"},
    ],
)
def test_the_task_token_never_appears_in_a_refusal(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidTriggerRequest) as raised:
        parse_trigger_request(event(**overrides))
    assert TOKEN[:40] not in "".join(traceback.format_exception(raised.value))
