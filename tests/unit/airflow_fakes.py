"""In-memory stand-ins for one MWAA environment's Airflow (CLI token, CLI endpoint, InvokeRestApi),
for the callback store and for Step Functions' task-token API, so the trigger and the callback
contract are tested without AWS. Every call is appended to one shared `events` list, so tests can
assert on order (the token is stored before the run is triggered)."""

from __future__ import annotations

import base64
import json
import shlex
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.airflow.callback import CallbackRecord
from mwaa_control.airflow.cli import MwaaCli
from mwaa_control.airflow.client import AirflowClient
from mwaa_control.airflow.rest import MwaaRest
from mwaa_control.airflow.transport import HttpResponse


class FakeEnvironment:
    """The MWAA side of one environment with Airflow 2 behind it: `mwaa` and `transport` at once."""

    def __init__(self, events: list[tuple[str, Any]], dags: tuple[str, ...] = ("hello",)) -> None:
        self.events = events
        self.dags = set(dags)
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.trigger_stderr = ""  # what Airflow prints when it refuses a trigger
        self.refuse_triggers = False

    # mwaa client
    def create_cli_token(self, Name: str) -> dict[str, str]:
        return {"CliToken": "cli-token", "WebServerHostname": "web.example"}

    def invoke_rest_api(self, **request: Any) -> dict[str, Any]:
        path = request["Path"]
        self.events.append(("rest", f"{request['Method']} {path}"))
        parts = path.strip("/").split("/")
        if parts[0] == "dags" and len(parts) == 2 and parts[1] in self.dags:
            return {"RestApiStatusCode": 200, "RestApiResponse": {"dag_id": parts[1], "is_paused": False}}
        if parts[0] == "dags" and len(parts) == 4 and (parts[1], parts[3]) in self.runs:
            return {"RestApiStatusCode": 200, "RestApiResponse": self.runs[(parts[1], parts[3])]}
        raise ClientError(
            {
                "Error": {"Code": "RestApiClientException", "Message": "Airflow REST API client error"},
                "RestApiStatusCode": 404,
                "RestApiResponse": {"detail": "not found", "status": 404},
            },
            "InvokeRestApi",
        )

    # web transport (the CLI endpoint)
    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse:
        argv = shlex.split(body.decode())
        if argv[:2] != ["dags", "trigger"]:
            return HttpResponse(400, b'{"message": "not emulated"}')
        dag_id, conf, run_id = argv[2], json.loads(argv[argv.index("-c") + 1]), argv[argv.index("-r") + 1]
        self.events.append(("trigger", {"dag_id": dag_id, "run_id": run_id, "conf": conf}))
        if self.refuse_triggers or (dag_id, run_id) in self.runs:
            stderr = self.trigger_stderr or f"DagRunAlreadyExists: run id {run_id} already exists"
            return _cli_answer("", stderr)
        run = {"dag_id": dag_id, "dag_run_id": run_id, "state": "queued", "conf": conf}
        self.runs[(dag_id, run_id)] = run
        return _cli_answer(json.dumps([run]), "")


def _cli_answer(stdout: str, stderr: str) -> HttpResponse:
    payload = {
        "stdout": base64.b64encode(stdout.encode()).decode(),
        "stderr": base64.b64encode(stderr.encode()).decode(),
    }
    return HttpResponse(200, json.dumps(payload).encode())


def airflow_client(environment: FakeEnvironment, name: str = "etl") -> AirflowClient:
    return AirflowClient(
        MwaaCli(environment, name, airflow_major=2, transport=environment, sleep=lambda _: None),
        MwaaRest(environment, name),
        environment=name,
        airflow_version="2.11.0",
        sleep=lambda _: None,
    )


class FakeCallbackStore:
    def __init__(self, events: list[tuple[str, Any]], table: str = "mwaa-control-LockTable") -> None:
        self.table = table
        self.events = events
        self.records: dict[str, CallbackRecord] = {}
        self.fail_delete = False

    def put(self, key: str, record: CallbackRecord) -> None:
        self.events.append(("put", key))
        self.records[key] = record

    def get(self, key: str) -> CallbackRecord | None:
        self.events.append(("get", key))
        return self.records.get(key)

    def delete(self, key: str) -> None:
        self.events.append(("delete", key))
        if self.fail_delete:
            raise RuntimeError("DeleteItem denied")
        self.records.pop(key, None)


class FakeStepFunctions:
    """Step Functions' SendTask* API: records what was sent; `refuse` makes the next call fail."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events
        self.refuse: Exception | None = None

    def _record(self, call: str, token: str, *detail: str) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.events.append((call, (token, *detail)))

    def send_success(self, task_token: str, output: str) -> None:
        self._record("send_success", task_token, output)

    def send_failure(self, task_token: str, error: str, cause: str) -> None:
        self._record("send_failure", task_token, error, cause)

    def send_heartbeat(self, task_token: str) -> None:
        self._record("send_heartbeat", task_token)
