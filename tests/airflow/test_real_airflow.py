"""The Airflow client against real Airflow 2.11 and 3.0 behind the MWAA emulator."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from mwaa_control.airflow.errors import AirflowCommandFailed, AirflowCommandRejected, AirflowNotFound, DagNotParsed
from tests.airflow.conftest import AirflowEnvironment

HOSTILE_CONF: dict[str, Any] = {
    "quotes": 'it\'s "quoted"',
    "shell": "$(rm -rf /); `id`; echo $HOME && ls | cat > /tmp/x",
    "newlines": "line 1\nline 2\r\n\ttabbed",
    "unicode": "naïve café ☃ 日本語 🚀",
    "nested": {"list": [1, 2.5, None, True, {"deep": "-c --conf"}]},
    "big": "x" * 20_000,
}


def test_trigger_with_conf_arrives_intact_in_the_dag_run(airflow_env: AirflowEnvironment) -> None:
    client = airflow_env.client
    run = client.trigger_dag("hello", conf=HOSTILE_CONF, run_id="manual__conf_check")
    assert run.run_id == "manual__conf_check"
    assert run.conf == HOSTILE_CONF
    stored = client.dag_run("hello", "manual__conf_check")
    assert stored.conf == HOSTILE_CONF
    assert stored.state == "queued"


def test_run_states_are_read_from_airflow(airflow_env: AirflowEnvironment) -> None:
    client = airflow_env.client
    client.trigger_dag("hello", run_id="manual__state_check")
    airflow_env.cloud.client("mwaa").invoke_rest_api(
        Name=airflow_env.name,
        Method="PATCH",
        Path="/dags/hello/dagRuns/manual__state_check",
        Body={"state": "failed"},
    )
    run = client.wait_for_run("hello", "manual__state_check", timeout=0)
    assert (run.state, run.finished) == ("failed", True)


def test_run_ids_too_long_for_invoke_rest_api_are_read_through_the_cli(airflow_env: AirflowEnvironment) -> None:
    long_run_id = "replay__" + "x" * 50  # /dags/hello/dagRuns/<id> is over InvokeRestApi's 64 characters
    run = airflow_env.client.trigger_dag("hello", conf={"k": 1}, run_id=long_run_id)
    assert (run.run_id, run.state, run.conf) == (long_run_id, "queued", None)


def test_unknown_dag_fails_with_airflows_message(airflow_env: AirflowEnvironment) -> None:
    with pytest.raises(AirflowCommandFailed, match="not_a_dag"):
        airflow_env.client.trigger_dag("not_a_dag")
    with pytest.raises(AirflowNotFound):
        airflow_env.client.dag_run("hello", "no_such_run")


def test_unparsed_dag_is_waited_for(airflow_env: AirflowEnvironment) -> None:
    airflow_env.add_dag("arrives_late")
    parser = threading.Timer(1.0, airflow_env.backend.parse_dags)
    parser.start()
    try:
        dag = airflow_env.client.wait_until_parsed("arrives_late", timeout=120, poll=2)
    finally:
        parser.join()
    assert dag.dag_id == "arrives_late"


def test_import_errors_surface(airflow_env: AirflowEnvironment) -> None:
    airflow_env.add_dag("broken", "from airflow import DAG\nraise RuntimeError('bad plugin import 42')\n")
    airflow_env.backend.parse_dags()
    errors = airflow_env.client.import_errors()
    assert any(e.filename.endswith("broken.py") and "bad plugin import 42" in e.stack_trace for e in errors)
    with pytest.raises(DagNotParsed, match="bad plugin import 42"):
        airflow_env.client.wait_until_parsed("broken", timeout=0)


def test_pause_and_unpause(airflow_env: AirflowEnvironment) -> None:
    client = airflow_env.client
    assert client.set_paused("hello", False).is_paused is False
    assert client.get_dag("hello").is_paused is False
    assert client.set_paused("hello", True).is_paused is True
    assert "hello" in {d.dag_id for d in client.list_dags()}


def test_variables_round_trip_hostile_values(airflow_env: AirflowEnvironment) -> None:
    client = airflow_env.client
    value = "multi\nline 'quoted' \"double\" $(not run) ☃"
    client.set_variable("on_call.note", value)
    client.set_variable("on_call.note", value + "!")
    assert client.get_variable("on_call.note") == value + "!"
    assert client.list_variables()["on_call.note"] == value + "!"


def test_raw_cli_runs_supported_commands_and_refuses_others(airflow_env: AirflowEnvironment) -> None:
    result = airflow_env.client.run_cli(["dags", "list", "-o", "json"])
    assert '"hello"' in result.stdout
    with pytest.raises(AirflowCommandRejected, match="not supported"):
        airflow_env.client.run_cli(["db", "reset", "-y"])


def test_cli_calls_take_real_airflow_time_so_tokens_are_fresh_each_call(airflow_env: AirflowEnvironment) -> None:
    before = len([c for c in airflow_env.cloud.emulator.calls if c[0] == "CreateCliToken"])
    started = time.monotonic()
    airflow_env.client.run_cli(["version"])
    airflow_env.client.run_cli(["version"])
    after = len([c for c in airflow_env.cloud.emulator.calls if c[0] == "CreateCliToken"])
    assert after - before == 2
    assert time.monotonic() - started > 0
