"""The callback contract between Step Functions and DAGs, defined once.

A workflow step triggers a DAG with `.waitForTaskToken`. The task token never enters the run's
conf: every Airflow user who can see the run, and anyone who can read a metadata backup, would
hold a capability to complete the workflow step. The trigger stores the token in the control
plane's DynamoDB table under `callback#<environment>#<callback_id>` (with a TTL), then puts only a
reference in the conf:

    {"mwaa_control": {"callback_id": ..., "environment": ..., "table": ..., "region": ...}}

The DAG reports back with the helpers below (from its final task, or from on_success/on_failure
callbacks) and keeps a long task alive with heartbeats: the Callback resolves the token with
GetItem (the worker's execution role may read only its own environment's callback records), calls
Step Functions, and deletes the record once Step Functions has accepted a success or failure.

Runs triggered by an older deployment carry the legacy block {"task_token": ..., "region": ...};
they still report, but nothing writes that block any more. The token is never logged or put in an
error message here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mwaa_control.errors import ControlPlaneError

CONF_KEY = "mwaa_control"
MAX_OUTPUT_BYTES = 256 * 1024
_MAX_ERROR = 256
_MAX_CAUSE = 32_768
RECORD_PREFIX = "callback#"
# Task tokens live as long as their execution; the run-DAG task times out after 12 h, and a record
# left by a run that never reported is removed by the table's TTL after this.
RECORD_LIFETIME_SECONDS = 30 * 24 * 3600
# Domain separation: the callback id and the run id (dag_runs.run_id_for) are both derived from the
# token, and neither may be computable from the other.
_CALLBACK_ID_DOMAIN = b"mwaa-control/callback-id/v1\x00"

ENVIRONMENT_NAME = r"^[A-Za-z][0-9A-Za-z_-]{0,79}$"

log = logging.getLogger(__name__)


class CallbackError(ControlPlaneError):
    """Reporting a DAG run's outcome to its waiting workflow step failed."""


class InvalidCallbackBlock(CallbackError):
    """The run's `mwaa_control` conf block is not one the control plane writes."""


class CallbackNotFound(CallbackError):
    """The callback record is gone: already reported, expired, or never stored."""


class CallbackStoreFailed(CallbackError):
    """DynamoDB refused or failed a callback-store call (permissions, missing table)."""


class CallbackRejected(CallbackError):
    """Step Functions refused the report (the task timed out, or the token is not valid)."""


class CallbackRecord(BaseModel):
    """What the callback store keeps per waiting task."""

    model_config = ConfigDict(frozen=True)

    task_token: str = Field(min_length=1, max_length=2048, repr=False)
    expires_at: int = Field(description="Epoch seconds; the table's TTL attribute")


class CallbackStore(Protocol):
    """Where task tokens wait for their DAG run (the DynamoDB table in production)."""

    @property
    def table(self) -> str:
        """The table name the DAG side reads from (it goes into the conf reference)."""
        ...

    def put(self, key: str, record: CallbackRecord) -> None:
        """Store the record; storing the same token again is a no-op, another token is refused."""
        ...

    def get(self, key: str) -> CallbackRecord | None:
        """The record (strongly consistent: the trigger wrote it moments ago), or None."""
        ...

    def delete(self, key: str) -> None:
        """Forget the record; deleting a missing record is not an error."""
        ...


class TaskReporter(Protocol):
    """Step Functions' side of `.waitForTaskToken`."""

    def send_success(self, task_token: str, output: str) -> None: ...

    def send_failure(self, task_token: str, error: str, cause: str) -> None: ...

    def send_heartbeat(self, task_token: str) -> None: ...


class CallbackReference(BaseModel):
    """The conf block of a run triggered by the control plane: where its task token waits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    callback_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    environment: str = Field(pattern=ENVIRONMENT_NAME)
    table: str = Field(pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")

    @property
    def key(self) -> str:
        # IAM scopes each environment's execution role to callback#<its environment>#* with
        # dynamodb:LeadingKeys; environment names cannot contain '#', so prefixes cannot overlap.
        return f"{RECORD_PREFIX}{self.environment}#{self.callback_id}"


class _LegacyBlock(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task_token: str = Field(min_length=1, max_length=2048, repr=False)
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def callback_id_for(task_token: str) -> str:
    """Deterministic per token (a retried trigger finds the same record), and reveals nothing of it."""
    return hashlib.sha256(_CALLBACK_ID_DOMAIN + task_token.encode()).hexdigest()[:32]


def reference_for(task_token: str, *, environment: str, table: str, region: str) -> CallbackReference:
    return CallbackReference(
        callback_id=callback_id_for(task_token), environment=environment, table=table, region=region
    )


def register(store: CallbackStore, task_token: str, reference: CallbackReference, *, now: float) -> None:
    """Store the token under the reference, before the run that will report exists."""
    store.put(reference.key, CallbackRecord(task_token=task_token, expires_at=int(now) + RECORD_LIFETIME_SECONDS))


def attach(conf: dict[str, Any], reference: CallbackReference) -> dict[str, Any]:
    """The conf a DAG run is triggered with: the caller's conf plus the callback reference."""
    if CONF_KEY in conf:
        raise ValueError(f"conf key {CONF_KEY!r} is reserved for the callback contract")
    return {**conf, CONF_KEY: reference.model_dump()}


class Callback:
    """The waiting workflow step of one DAG run, as the DAG reports to it."""

    def __init__(
        self,
        *,
        region: str,
        reference: CallbackReference | None = None,
        task_token: str | None = None,
        store: CallbackStore | None = None,
        reporter: TaskReporter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (reference is None) == (task_token is None):
            raise ValueError("a callback has either a reference or (legacy) a task token")
        self.region = region
        self.reference = reference
        self._token = task_token
        self._store = store
        self._reporter = reporter
        self._clock = clock

    def __repr__(self) -> str:
        where = self.reference.key if self.reference else "legacy task token"
        return f"Callback({where}, region={self.region!r})"

    def success(self, output: dict[str, Any] | None = None) -> None:
        body = json.dumps(output or {}, default=str)
        if len(body.encode()) > MAX_OUTPUT_BYTES:
            raise ValueError(f"callback output is {len(body)} bytes; Step Functions accepts {MAX_OUTPUT_BYTES}")
        self._tasks().send_success(self._resolve(), body)
        self._forget()

    def failure(self, error: str, cause: str = "") -> None:
        self._tasks().send_failure(self._resolve(), error[:_MAX_ERROR], cause[:_MAX_CAUSE])
        self._forget()

    def heartbeat(self) -> None:
        self._tasks().send_heartbeat(self._resolve())

    @contextmanager
    def heartbeats(self, every: float = 120.0) -> Iterator[None]:
        """Heartbeats from a background thread while the block runs, so a workflow step with
        HeartbeatSeconds sees a long task alive and a dead one (no heartbeats) fail in time.
        A heartbeat that fails is logged and retried at the next beat, never raised into the work."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.heartbeat()
                except Exception as error:  # the work decides the outcome, not a missed beat
                    log.warning("heartbeat not sent (%s)", type(error).__name__)

        thread = threading.Thread(target=beat, name="mwaa-control-heartbeats", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _resolve(self) -> str:
        if self._token is not None:
            return self._token
        assert self.reference is not None
        record = self._callbacks().get(self.reference.key)
        if record is None:
            raise CallbackNotFound(
                f"no callback record {self.reference.key} in {self.reference.table}: the run already "
                "reported, or the record expired"
            )
        if record.expires_at <= self._clock():
            raise CallbackNotFound(f"callback record {self.reference.key} expired; the workflow step is gone")
        self._token = record.task_token
        return record.task_token

    def _forget(self) -> None:
        if self.reference is None:
            return
        try:
            self._callbacks().delete(self.reference.key)
        except Exception as error:
            # The report was accepted: failing now would fail the Airflow task after the workflow
            # has moved on. The table's TTL removes the record.
            log.warning(
                "callback record %s not deleted (%s); the table's TTL removes it",
                self.reference.key,
                type(error).__name__,
            )

    def _callbacks(self) -> CallbackStore:
        if self._store is None:
            from mwaa_control.airflow import callback_store as callbacks  # noqa: PLC0415 - keep DAG imports light

            assert self.reference is not None
            self._store = callbacks.callback_store(self.reference.table, region=self.reference.region)
        return self._store

    def _tasks(self) -> TaskReporter:
        if self._reporter is None:
            from mwaa_control.airflow import callback_store as callbacks  # noqa: PLC0415 - keep DAG imports light

            self._reporter = callbacks.step_functions_reporter(region=self.region)
        return self._reporter


def from_conf(
    conf: dict[str, Any] | None, *, store: CallbackStore | None = None, reporter: TaskReporter | None = None
) -> Callback | None:
    """The callback of a run triggered by the control plane, or None for any other run."""
    block = conf.get(CONF_KEY) if isinstance(conf, dict) else None
    if not isinstance(block, dict):
        return None
    try:
        if "task_token" in block:
            legacy = _LegacyBlock.model_validate(block)
            return Callback(region=legacy.region, task_token=legacy.task_token, reporter=reporter)
        reference = CallbackReference.model_validate(block)
    except ValidationError as error:
        # include_input=False: a legacy block carries the token.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or CONF_KEY}: {e['msg']}" for e in error.errors(include_input=False)
        )
        raise InvalidCallbackBlock(
            f"conf[{CONF_KEY!r}] is not a callback the control plane wrote: {problems}"
        ) from None
    return Callback(region=reference.region, reference=reference, store=store, reporter=reporter)


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
