"""Hostile DAG ids, run ids and conf values are delivered byte for byte or rejected before sending:
never mangled, never executed. The endpoint side splits the command with shlex, as MWAA's does."""

from __future__ import annotations

import json
import shlex
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mwaa_control.airflow import values
from mwaa_control.airflow.cli import MAX_CONCURRENT_PER_ENVIRONMENT, MwaaCli, json_document
from mwaa_control.airflow.errors import UnsafeValue
from mwaa_control.airflow.transport import HttpResponse

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
hostile_text = st.text(
    alphabet=st.sampled_from(list("abc-_.;|&$`'\"\\\n\r\t *?!#~(){}[]<>=%é☃🚀\x00")), min_size=0, max_size=40
)


class RecordingEndpoint:
    """A web server that does what MWAA's endpoint does with the body: shlex.split it."""

    def __init__(self) -> None:
        self.argv: list[list[str]] = []

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse:
        self.argv.append(shlex.split(body.decode()))
        return HttpResponse(200, b'{"stdout": "", "stderr": ""}')


class FakeMwaa:
    def create_cli_token(self, Name: str) -> dict[str, str]:
        return {"CliToken": "t0k3n", "WebServerHostname": "host.example"}


def deliver(argv: list[str]) -> list[str]:
    endpoint = RecordingEndpoint()
    MwaaCli(FakeMwaa(), "env", airflow_major=2, transport=endpoint).run(argv)
    return endpoint.argv[0]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conf=st.dictionaries(st.text(), json_values, max_size=6))
def test_any_conf_arrives_as_one_argument_that_decodes_to_the_same_value(conf: dict[str, Any]) -> None:
    encoded = values.conf_json(conf)
    received = deliver(["dags", "trigger", "my_dag", "-c", encoded])
    assert received[:4] == ["dags", "trigger", "my_dag", "-c"] and len(received) == 5
    assert received[4] == encoded
    assert json.loads(received[4]) == conf


@settings(max_examples=300)
@given(candidate=hostile_text)
def test_dag_ids_are_delivered_exactly_or_rejected(candidate: str) -> None:
    try:
        accepted = values.dag_id(candidate)
    except UnsafeValue:
        return
    assert not accepted.startswith("-")
    assert deliver(["dags", "trigger", accepted]) == ["dags", "trigger", candidate]


@settings(max_examples=300)
@given(candidate=hostile_text)
def test_run_ids_are_delivered_exactly_or_rejected(candidate: str) -> None:
    try:
        accepted = values.run_id(candidate)
    except UnsafeValue:
        return
    assert deliver(["dags", "trigger", "d", "-r", accepted])[-1] == candidate


@pytest.mark.parametrize("bad", ["-h", "--help", "a b", "a;b", "$(id)", "a\nb", "", "x" * 251, "a/b"])
def test_dangerous_dag_ids_are_rejected(bad: str) -> None:
    with pytest.raises(UnsafeValue):
        values.dag_id(bad)


def test_unicode_dag_ids_are_allowed_as_airflow_allows_them() -> None:
    assert values.dag_id("étl_日本") == "étl_日本"


def test_conf_limits() -> None:
    with pytest.raises(UnsafeValue, match="limit"):
        values.conf_json({"x": "y" * (values.MAX_CONF_BYTES + 1)})
    with pytest.raises(UnsafeValue, match="JSON object"):
        values.conf_json(["not", "an", "object"])
    with pytest.raises(UnsafeValue, match="serialisable"):
        values.conf_json({"nan": float("nan")})


def test_json_document_is_found_after_log_lines() -> None:
    stdout = '[2026-11-21] {plugins.py:37} INFO - setup plugin\nWARNING x\n[{"a": 1}]\n'
    assert json_document(stdout) == [{"a": 1}]
    with pytest.raises(ValueError):
        json_document("[2026-11-21] only logs\n")


def test_cli_commands_per_environment_are_bounded() -> None:
    # Given a slow web server and more callers than the endpoint can take
    in_flight, peak = [0], [0]
    guard = threading.Lock()

    class SlowEndpoint:
        def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse:
            with guard:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.05)
            with guard:
                in_flight[0] -= 1
            return HttpResponse(200, b'{"stdout": "", "stderr": ""}')

    def call() -> None:
        MwaaCli(FakeMwaa(), "bounded-env", airflow_major=2, transport=SlowEndpoint()).run(["version"])

    # When ten run at once
    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then no more than the bound ever reached the endpoint together, and the bound was used
    assert peak[0] == MAX_CONCURRENT_PER_ENVIRONMENT


@pytest.mark.parametrize("dots", [".", "..", "...", "." * 250])
def test_ids_made_only_of_dots_are_refused_they_would_be_rest_path_segments(dots: str) -> None:
    # /dags/.. and /variables/. are resolved as paths, not ids, once they reach the web server.
    for check in (values.dag_id, values.run_id, values.variable_key):
        with pytest.raises(UnsafeValue, match="dots"):
            check(dots)
    assert values.dag_id("a.b") == "a.b" and values.run_id(".x") == ".x"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_conf_depth_is_bounded_with_a_typed_error() -> None:
    # Given a conf nested far deeper than json.dumps can recurse
    with pytest.raises(UnsafeValue, match="deeper than 64"):
        values.conf_json(nested(3000))
    with pytest.raises(UnsafeValue, match="deeper than 64"):
        values.conf_json({"a": [[nested(63)]]})
    assert json.loads(values.conf_json(nested(64))) == nested(64)


class RecordingCli:
    def __init__(self) -> None:
        self.argv: list[list[str]] = []

    def run(self, argv: list[str]) -> Any:
        from mwaa_control.airflow.cli import CliResult

        self.argv.append(list(argv))
        run_id = argv[argv.index("-r") + 1]
        return CliResult(stdout=json.dumps([{"dag_id": argv[2], "dag_run_id": run_id, "state": "queued"}]), stderr="")


def recording_client() -> tuple[Any, RecordingCli]:
    from mwaa_control.airflow.client import AirflowClient

    cli = RecordingCli()
    return AirflowClient(cli, None, environment="etl", airflow_version="2.11.0"), cli  # type: ignore[arg-type]


@pytest.mark.parametrize("conf", [[], 0, "", False, (), [{"a": 1}]])
def test_a_conf_that_is_not_an_object_is_refused_not_sent_as_empty(conf: Any) -> None:
    client, cli = recording_client()
    with pytest.raises(UnsafeValue, match="JSON object"):
        client.trigger_dag("hello", conf=conf, run_id="r1", read_back=False)
    assert cli.argv == []


def test_only_a_missing_conf_is_sent_as_an_empty_object() -> None:
    client, cli = recording_client()
    client.trigger_dag("hello", run_id="r1", read_back=False)
    client.trigger_dag("hello", conf={}, run_id="r2", read_back=False)
    assert [argv[argv.index("-c") + 1] for argv in cli.argv] == ["{}", "{}"]
