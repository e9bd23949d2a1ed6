"""mwaactl against real Airflow through the emulator."""

from __future__ import annotations

from typer.testing import CliRunner

from mwaactl.main import app
from tests.airflow.conftest import AirflowEnvironment

runner = CliRunner()


def test_trigger_prints_the_run_and_wait_reports_an_unfinished_run(airflow_env: AirflowEnvironment) -> None:
    result = runner.invoke(
        app,
        [
            "dags",
            "trigger",
            airflow_env.name,
            "hello",
            "--conf",
            '{"a": [1, 2]}',
            "--run-id",
            "oncall_1",
            "--wait",
            "--timeout",
            "0",
        ],
    )
    assert "triggered hello run oncall_1 (queued)" in result.output
    assert result.exit_code == 2  # nothing runs tasks locally: still queued when the wait ends
    assert airflow_env.client.dag_run("hello", "oncall_1").conf == {"a": [1, 2]}


def test_bad_input_is_a_clear_error_and_triggers_nothing(airflow_env: AirflowEnvironment) -> None:
    for args in (["--conf", "{not json"], ["--conf", "[1]"], ["--run-id", "--oops"]):
        result = runner.invoke(app, ["dags", "trigger", airflow_env.name, "hello", *args])
        assert result.exit_code == 1
        assert "error:" in result.output
    bad_id = runner.invoke(app, ["dags", "trigger", airflow_env.name, "-rm"])
    assert bad_id.exit_code != 0


def test_airflow_passthrough_runs_the_command(airflow_env: AirflowEnvironment) -> None:
    result = runner.invoke(app, ["airflow", airflow_env.name, "--", "dags", "list", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert '"dag_id": "hello"' in result.output
    refused = runner.invoke(app, ["airflow", airflow_env.name, "--", "db", "reset"])
    assert refused.exit_code == 1 and "not supported" in refused.output
