"""Typed Airflow operations on one MWAA environment. Callers never build command strings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from mwaa_control.airflow import values
from mwaa_control.airflow.cli import CliResult, MwaaCli, json_document
from mwaa_control.airflow.errors import (
    AirflowCommandFailed,
    AirflowNotFound,
    DagNotParsed,
    RestPathTooLong,
    UnexpectedAirflowOutput,
    UnsafeValue,
)
from mwaa_control.airflow.rest import MwaaRest

TERMINAL_STATES = frozenset({"success", "failed"})


class DagRun(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    dag_id: str
    run_id: str = Field(alias="dag_run_id")
    state: str
    conf: dict[str, Any] | None = None
    logical_date: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Dag(BaseModel):
    model_config = ConfigDict(extra="ignore")

    dag_id: str
    is_paused: bool | None = None
    fileloc: str | None = None


class ImportError_(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filename: str
    stack_trace: str


def airflow_major(version: str) -> int:
    try:
        return int(version.split(".", maxsplit=1)[0])
    except ValueError:
        raise ValueError(f"unrecognised Airflow version {version!r}") from None


class AirflowClient:
    def __init__(
        self,
        cli: MwaaCli,
        rest: MwaaRest,
        *,
        environment: str,
        airflow_version: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._cli = cli
        self._rest = rest
        self.environment = environment
        self.airflow_version = airflow_version
        self.major = airflow_major(airflow_version)
        self._clock = clock
        self._sleep = sleep

    # --- CLI ------------------------------------------------------------------------------
    def run_cli(self, argv: list[str]) -> CliResult:
        """Run an Airflow CLI command given as an argument list (on-call escape hatch)."""
        if not argv or argv[0] in ("", "airflow"):
            raise UnsafeValue("give the command without 'airflow', e.g. ['dags', 'list']")
        return self._cli.run(argv)

    def trigger_dag(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: str | None = None,
        read_back: bool = True,
    ) -> DagRun:
        """Trigger through the CLI, then read the run back through the REST API.

        We always choose the run id, so the run can be found again whatever Airflow prints; and the
        run is re-read because Airflow 2's `-o json` output renders nested conf values as strings.
        """
        run_id = values.run_id(run_id or f"manual__{uuid.uuid4().hex[:20]}")
        argv = [
            "dags",
            "trigger",
            values.dag_id(dag_id),
            "-c",
            # Only a missing conf means {}: [], 0, "" or False are mistakes, refused by conf_json.
            values.conf_json({} if conf is None else conf),
            "-r",
            run_id,
            "-o",
            "json",
        ]
        if logical_date is not None:
            # Airflow 3 renamed --exec-date to --logical-date.
            argv += ["--logical-date" if self.major >= 3 else "--exec-date", logical_date]
        document = self._document(self._cli.run(argv), "dags trigger")
        runs = document if isinstance(document, list) else [document]
        reported = [(r.get("dag_id"), r.get("dag_run_id") or r.get("run_id")) for r in runs if isinstance(r, dict)]
        if reported != [(dag_id, run_id)]:
            raise UnexpectedAirflowOutput(
                f"{self.environment}: triggered {dag_id}/{run_id}, Airflow reported {reported}"
            )
        if not read_back:
            return DagRun.model_validate({"dag_id": dag_id, "dag_run_id": run_id, "state": runs[0].get("state")})
        return self.dag_run(dag_id, run_id)

    def _document(self, result: CliResult, what: str) -> Any:
        try:
            return json_document(result.stdout)
        except ValueError:
            message = _airflow_error(result.stderr) or _airflow_error(result.stdout) or "no output"
            raise AirflowCommandFailed(f"{self.environment}: {what} failed: {message}") from None

    # --- REST -----------------------------------------------------------------------------
    def dag_run(self, dag_id: str, run_id: str) -> DagRun:
        """The run, through the REST API; through the CLI (state only, no conf) when the ids make
        the path longer than InvokeRestApi accepts."""
        path = f"/dags/{_seg(values.dag_id(dag_id))}/dagRuns/{_seg(values.run_id(run_id))}"
        try:
            return DagRun.model_validate(self._rest.call("GET", path))
        except RestPathTooLong:
            return self._dag_run_from_cli(dag_id, run_id)

    def _dag_run_from_cli(self, dag_id: str, run_id: str) -> DagRun:
        # Airflow 3 takes the DAG id positionally; Airflow 2 as -d.
        argv = ["dags", "list-runs", dag_id] if self.major >= 3 else ["dags", "list-runs", "-d", dag_id]
        runs = self._document(self._cli.run([*argv, "-o", "json"]), "dags list-runs")
        for run in runs if isinstance(runs, list) else []:
            if isinstance(run, dict) and run.get("run_id") == run_id:
                return DagRun.model_validate({"dag_id": dag_id, "dag_run_id": run_id, "state": run.get("state")})
        raise AirflowNotFound(404, f"run {run_id} of {dag_id} not found", method="CLI", path="dags list-runs")

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float, poll: float = 10.0) -> DagRun:
        deadline = self._clock() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run.finished or self._clock() >= deadline:
                return run
            self._sleep(poll)

    def set_paused(self, dag_id: str, paused: bool) -> Dag:
        response = self._rest.call("PATCH", f"/dags/{_seg(values.dag_id(dag_id))}", body={"is_paused": paused})
        return Dag.model_validate(response)

    def get_dag(self, dag_id: str) -> Dag:
        return Dag.model_validate(self._rest.call("GET", f"/dags/{_seg(values.dag_id(dag_id))}"))

    def list_dags(self, page_size: int = 100) -> list[Dag]:
        return [Dag.model_validate(d) for d in self._paged("/dags", "dags", page_size)]

    def import_errors(self) -> list[ImportError_]:
        return [ImportError_.model_validate(e) for e in self._paged("/importErrors", "import_errors", 100)]

    def wait_until_parsed(self, dag_id: str, *, timeout: float, poll: float = 5.0) -> Dag:
        """Readiness: the DAG exists in Airflow (parsed and serialised), or DagNotParsed saying why."""
        values.dag_id(dag_id)
        deadline = self._clock() + timeout
        while True:
            try:
                return self.get_dag(dag_id)
            except AirflowNotFound:
                if self._clock() >= deadline:
                    errors = self.import_errors()
                    detail = "; ".join(f"{e.filename}: {e.stack_trace.strip().splitlines()[-1]}" for e in errors)
                    raise DagNotParsed(
                        f"{self.environment}: DAG {dag_id} not parsed after {timeout:.0f}s"
                        + (f"; import errors: {detail}" if errors else "; no import errors reported")
                    ) from None
                self._sleep(poll)

    def get_variable(self, key: str) -> str:
        response = self._rest.call("GET", f"/variables/{_seg(values.variable_key(key))}")
        return str(response["value"])

    def set_variable(self, key: str, value: str, description: str | None = None) -> None:
        body: dict[str, Any] = {"key": values.variable_key(key), "value": value}
        if description is not None:
            body["description"] = description
        try:
            self._rest.call("PATCH", f"/variables/{_seg(key)}", body=body)
        except AirflowNotFound:
            self._rest.call("POST", "/variables", body=body)

    def list_variables(self) -> dict[str, str]:
        return {v["key"]: str(v.get("value")) for v in self._paged("/variables", "variables", 100)}

    def rest(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        """One REST API call (v1 on Airflow 2, v2 on Airflow 3), for callers that need raw pages."""
        return self._rest.call(method, path, query=query, body=body)

    def batch_list(
        self, path: str, field: str, body: dict[str, Any] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Airflow 3's POST .../list endpoints (runs, task instances across DAGs), page by page."""
        offset = 0
        while True:
            page = self._rest.call("POST", path, body={**(body or {}), "page_offset": offset, "page_limit": page_size})
            items = page.get(field, [])
            yield from items
            offset += len(items)
            if not items or offset >= int(page.get("total_entries", 0)):
                return

    def variable_from_cli(self, key: str) -> str:
        """A variable's value as stored: the REST API redacts values of sensitive keys, the CLI
        prints them. Airflow prints the value and one newline."""
        result = self._cli.run(["variables", "get", values.variable_key(key)])
        if not result.stdout:
            raise AirflowCommandFailed(f"{self.environment}: variables get failed: {_airflow_error(result.stderr)}")
        return result.stdout[:-1] if result.stdout.endswith("\n") else result.stdout

    def paged(self, path: str, field: str, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._paged(path, field, page_size)

    def _paged(self, path: str, field: str, page_size: int) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._rest.call("GET", path, query={"limit": page_size, "offset": offset})
            items = page.get(field, [])
            yield from items
            offset += len(items)
            if not items or offset >= int(page.get("total_entries", 0)):
                return


def _seg(value: str) -> str:
    return quote(value, safe="")


def _airflow_error(text: str) -> str:
    """The line an operator needs from Airflow's output: its 'Error:' or exception line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("Error", "airflow.exceptions.", "ValueError", "SystemExit")) or "Error:" in line:
            return line[:500]
    return lines[-1][:500] if lines else ""
