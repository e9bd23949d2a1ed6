"""The pause's fallback for an Airflow 3 environment whose workers carry no metadata database
credentials: drain and back up through the REST API, and restore through it on resume.

Runs in a Lambda function of its own (it needs pyarrow, from the AWS SDK for pandas layer), only
when the export DAG failed with NoWorkerDatabase *and* the operator accepted what this path loses
(`accept_rest_path_losses`): run and task history is archived for Athena but not restored, and
connection passwords and sensitive extras the API redacts are not exported (metadata/rest_path.py).
Without that acceptance the pause fails before anything is deleted, as before.

The drain is a loop the workflow drives, never a wait inside one invocation: the first call
records every DAG's pause state next to the backup (before pausing anything, so a failure path can
put them back), then pauses the unpaused DAGs; while tasks still run it raises DrainPending, which
the state machine retries at a fixed interval. When the drain's timeout has passed it either
proceeds (on_timeout "proceed": the running tasks are listed in the manifest) or fails
(DrainTimedOut: the failure path unpauses the DAGs it paused)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mwaa_control import clock as control_clock
from mwaa_control.errors import ControlPlaneError
from mwaa_control.metadata.authentication import open_backup
from mwaa_control.metadata.manifest import MANIFEST, PAUSE_STATES, InFlightTask, backup_prefix
from mwaa_control.metadata.sealing import KeyService
from mwaa_control.metadata.store import BackupStore
from mwaa_control.pause.models import DrainOptions
from mwaa_control.pause.service import LockLost
from mwaa_control.pause.state import PauseStateTable

if TYPE_CHECKING:
    from mwaa_control.airflow.client import AirflowClient

OWN_DAGS = "mwaa_control_"
DRAIN_BEGAN = "rest-drain.json"
"""When the REST drain began (next to the pause states): retries measure the timeout from it."""
UNFINISHED = ["running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "restarting", "deferred"]
PARSE_WAIT_SECONDS = 300.0
"""How long a REST restore waits for the new environment to parse the backup's DAGs before it
applies the pause states it can and reports the others as pending."""


class DrainPending(ControlPlaneError):
    """Tasks still run and the drain's timeout has not passed: the workflow retries this step."""


class DrainTimedOut(ControlPlaneError):
    """The drain's timeout passed with tasks still running and on_timeout is "abort"."""


class RestPathLossesNotAccepted(ControlPlaneError):
    """The REST path was asked for without the operator accepting what it loses."""


class RestPathService:
    def __init__(
        self,
        *,
        state: PauseStateTable,
        store: BackupStore,
        keys: KeyService,
        airflow_for: Callable[[str], AirflowClient],
        clock: Callable[[], datetime] = control_clock.now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._state = state
        self._store = store
        self._keys = keys
        self._airflow_for = airflow_for
        self._clock = clock
        self._sleep = sleep

    def _require_lock(self, environment: str, execution: str) -> None:
        if not self._state.holds(environment, execution):
            raise LockLost(f"{environment}: this execution does not hold the operation lock; nothing was changed")

    # --- pause -----------------------------------------------------------------------------------
    def back_up(
        self, environment: str, execution: str, backup_id: str, drain: DrainOptions, *, accepted: bool
    ) -> dict[str, Any]:
        from mwaa_control.metadata.rest_path import RestBackup  # noqa: PLC0415 - pyarrow, only here

        if not accepted:
            raise RestPathLossesNotAccepted(
                f"{environment}: its workers carry no database credentials, and a backup through the REST API "
                "does not restore run history or redacted connection secrets; pause it with "
                "accept_rest_path_losses (mwaactl pause --accept-rest-losses) to accept that. Nothing was deleted"
            )
        self._require_lock(environment, execution)
        record = self._state.record(environment)
        if record is None or record.pending_backup_id != backup_id:
            raise LockLost(f"{environment}: backup {backup_id} is not the one this pause planned; nothing was changed")
        prefix = backup_prefix(environment, backup_id)
        if self._store.exists(f"{prefix}/{MANIFEST}"):
            # A retry after the backup was written (the invocation's answer was lost): the same backup.
            manifest = open_backup(self._store, environment, backup_id, self._keys).manifest
            return _summary(manifest.backup_id, manifest.path, manifest.drained, len(manifest.in_flight))
        airflow = self._airflow_for(environment)
        original = self._pause_states_before_drain(airflow, prefix)
        for dag_id, paused in sorted(original.items()):
            if not paused:
                airflow.set_paused(dag_id, True)
        running = self._unfinished(airflow)
        if running:
            waited = (self._clock() - self._drain_began(prefix)).total_seconds()
            if waited < drain.timeout:
                raise DrainPending(f"{environment}: {len(running)} tasks still run after {waited:.0f}s of the drain")
            if drain.on_timeout == "abort":
                raise DrainTimedOut(
                    f"{environment}: {len(running)} tasks still ran when the drain's {drain.timeout:.0f}s passed; "
                    "nothing was deleted and the DAGs the drain paused are unpaused"
                )
        manifest = RestBackup(airflow, self._store).backup(
            environment,
            self._keys,
            backup_id=backup_id,
            clock=self._clock,
            pause_states=original,
            in_flight=running,
            drained=True,
        )
        return _summary(manifest.backup_id, manifest.path, manifest.drained, len(manifest.in_flight))

    def _pause_states_before_drain(self, airflow: AirflowClient, prefix: str) -> dict[str, bool]:
        """Every DAG's pause state as the drain found it, written before anything is paused; a retry
        reads what the first attempt wrote (by then the DAGs are paused)."""
        key = f"{prefix}/{PAUSE_STATES}"
        if self._store.exists(key):
            loaded = json.loads(self._store.get_bytes(key))
            if not isinstance(loaded, dict) or not all(isinstance(v, bool) for v in loaded.values()):
                raise ControlPlaneError(f"{key} is not the pause states a drain writes; nothing was changed")
            return {str(k): v for k, v in loaded.items()}
        original = {
            str(dag["dag_id"]): bool(dag["is_paused"])
            for dag in airflow.paged("/dags", "dags")
            if not str(dag["dag_id"]).startswith(OWN_DAGS)
        }
        self._store.put_bytes(
            f"{prefix}/{DRAIN_BEGAN}", json.dumps({"began_at": self._clock().astimezone(UTC).isoformat()}).encode()
        )
        self._store.put_bytes(key, json.dumps(original, indent=1, sort_keys=True).encode())
        return original

    def _drain_began(self, prefix: str) -> datetime:
        try:
            began = json.loads(self._store.get_bytes(f"{prefix}/{DRAIN_BEGAN}"))["began_at"]
            return datetime.fromisoformat(str(began))
        except (ValueError, KeyError, TypeError):
            return self._clock()  # unreadable: the drain's timeout starts now, never earlier

    @staticmethod
    def _unfinished(airflow: AirflowClient) -> list[InFlightTask]:
        found = airflow.batch_list(
            "/dags/~/dagRuns/~/taskInstances/list", "task_instances", body={"state": list(UNFINISHED)}
        )
        return sorted(
            (
                InFlightTask(
                    dag_id=str(t["dag_id"]),
                    run_id=str(t["dag_run_id"]),
                    task_id=str(t["task_id"]),
                    map_index=int(t.get("map_index", -1)),
                    state=str(t.get("state")),
                )
                for t in found
                if not str(t.get("dag_id", "")).startswith(OWN_DAGS) and t.get("state") in UNFINISHED
            ),
            key=lambda t: (t.dag_id, t.run_id, t.task_id, t.map_index),
        )

    # --- resume ----------------------------------------------------------------------------------
    def restore(self, environment: str, execution: str, backup_id: str) -> dict[str, Any]:
        from mwaa_control.metadata.rest_path import RestRestore  # noqa: PLC0415 - pyarrow, only here

        self._require_lock(environment, execution)
        airflow = self._airflow_for(environment)
        wanted = set(open_backup(self._store, environment, backup_id, self._keys).manifest.pause_states)
        deadline = time.monotonic() + PARSE_WAIT_SECONDS
        while True:
            parsed = {str(d["dag_id"]) for d in airflow.paged("/dags", "dags")}
            if wanted <= parsed or time.monotonic() >= deadline:
                break
            self._sleep(15)
        started = time.monotonic()
        report = RestRestore(airflow, self._store).restore(environment, backup_id, self._keys, clock=self._clock)
        result: dict[str, Any] = report.model_dump(mode="json")
        result["seconds"] = round(time.monotonic() - started, 3)
        result["path"] = "rest"
        return result


def _summary(backup_id: str, path: str, drained: bool, in_flight: int) -> dict[str, Any]:
    return {"backup_id": backup_id, "path": path, "drained": drained, "in_flight": in_flight}
