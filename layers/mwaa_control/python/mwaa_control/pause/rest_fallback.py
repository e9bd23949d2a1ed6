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
import logging
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

log = logging.getLogger(__name__)

OWN_DAGS = "mwaa_control_"
DRAIN_BEGAN = "rest-drain.json"
"""When the REST drain began (next to the pause states): retries measure the timeout from it."""
UNFINISHED = ["running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "restarting", "deferred"]
"""Listed in the manifest as in flight."""
BUSY = ("running", "queued")
"""What the drain waits for, as the export DAG's drain does: a paused DAG's scheduler moves none of
the other unfinished states forward, so waiting for them would only run out the timeout."""
MAX_PROBLEMS = 50
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
        try:
            self._pause(airflow, original)
            unfinished = self._unfinished(airflow)
            busy = [t for t in unfinished if t.state in BUSY]
            if busy:
                waited = (self._clock() - self._drain_began(prefix)).total_seconds()
                if waited < drain.timeout:
                    raise DrainPending(f"{environment}: {len(busy)} tasks still run after {waited:.0f}s of the drain")
                if drain.on_timeout == "abort":
                    raise DrainTimedOut(
                        f"{environment}: {len(busy)} tasks still ran when the drain's {drain.timeout:.0f}s passed; "
                        "nothing was deleted and the DAGs the drain paused are unpaused"
                    )
            manifest = RestBackup(airflow, self._store).backup(
                environment,
                self._keys,
                backup_id=backup_id,
                clock=self._clock,
                pause_states=original,
                in_flight=unfinished,
                drained=True,
            )
        except DrainPending:
            raise  # the workflow retries: the recorded states and the paused DAGs stay as they are
        except Exception:
            # The pause ends here: unpause what the drain paused, remove what it left, then fail.
            # (A crash or a timeout of this function leaves that to the failure path's put-back.)
            self._put_back(airflow, original, prefix)
            raise
        return _summary(manifest.backup_id, manifest.path, manifest.drained, len(manifest.in_flight))

    @staticmethod
    def _pause(airflow: AirflowClient, original: dict[str, bool]) -> None:
        """Pause what the drain found unpaused and is unpaused now: one listing per attempt, a call
        per DAG only when needed (a DAG someone unpaused during the drain is paused again)."""
        now = {str(d["dag_id"]): bool(d["is_paused"]) for d in airflow.paged("/dags", "dags")}
        for dag_id, paused in sorted(original.items()):
            if not paused and now.get(dag_id) is False:
                airflow.set_paused(dag_id, True)

    def _put_back(self, airflow: AirflowClient, original: dict[str, bool], prefix: str) -> None:
        failed: list[str] = []
        for dag_id, paused in sorted(original.items()):
            if not paused:
                try:
                    airflow.set_paused(dag_id, False)
                except Exception:  # every DAG gets its chance; the failure path retries the rest
                    failed.append(dag_id)
        if failed:
            log.warning("could not unpause %d DAGs; the failure path tries again", len(failed))
            return  # the failure path reads the recorded states to try again
        try:
            if self._store.exists(f"{prefix}/{MANIFEST}"):
                return  # a backup was written after all: nothing of it is removed
            left = self._store.delete_prefix(f"{prefix}/tables")
            for name in (DRAIN_BEGAN, PAUSE_STATES):
                left += self._store.delete_prefix(f"{prefix}/{name}")
        except Exception as error:  # the failure that brought us here is the one the workflow must see
            log.warning("could not remove what the drain left under %s (%s)", prefix, type(error).__name__)
            return
        if left:
            log.warning("could not remove %d objects the drain left under %s", len(left), prefix)

    def _pause_states_before_drain(self, airflow: AirflowClient, prefix: str) -> dict[str, bool]:
        """Every DAG's pause state as the drain found it, written before anything is paused; a retry
        reads what the first attempt wrote (by then the DAGs are paused)."""
        key = f"{prefix}/{PAUSE_STATES}"
        if self._store.exists(key):
            loaded = json.loads(self._store.get_bytes(key))
            if not isinstance(loaded, dict) or not all(isinstance(v, bool) for v in loaded.values()):
                raise ControlPlaneError(f"{key} is not the pause states a drain writes; nothing was changed")
            original = {str(k): v for k, v in loaded.items()}
        else:
            original = {
                str(dag["dag_id"]): bool(dag["is_paused"])
                for dag in airflow.paged("/dags", "dags")
                if not str(dag["dag_id"]).startswith(OWN_DAGS)
            }
            self._store.put_bytes(key, json.dumps(original, indent=1, sort_keys=True).encode())
        if not self._store.exists(f"{prefix}/{DRAIN_BEGAN}"):
            began = {"began_at": self._clock().astimezone(UTC).isoformat()}
            self._store.put_bytes(f"{prefix}/{DRAIN_BEGAN}", json.dumps(began).encode())
        return original

    def _drain_began(self, prefix: str) -> datetime:
        key = f"{prefix}/{DRAIN_BEGAN}"
        try:
            began = datetime.fromisoformat(str(json.loads(self._store.get_bytes(key))["began_at"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ControlPlaneError(f"{key} is not the start a drain records; the drain stops") from error
        if began.tzinfo is None:
            raise ControlPlaneError(f"{key} records a start without a time zone; the drain stops")
        return began

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
        # What the workflow keeps, bounded: Step Functions passes at most 256 KB between states.
        problems = [p[:300] for p in report.problems[:MAX_PROBLEMS]]
        if len(report.problems) > MAX_PROBLEMS:
            problems.append(f"... and {len(report.problems) - MAX_PROBLEMS} more")
        return {
            "path": "rest",
            "seconds": round(time.monotonic() - started, 3),
            "verified": report.verified,
            "problems": problems,
            "tables": {
                t.table: {"in_backup": t.in_backup, "inserted": t.inserted, "updated": t.updated} for t in report.tables
            },
        }


def _summary(backup_id: str, path: str, drained: bool, in_flight: int) -> dict[str, Any]:
    return {"backup_id": backup_id, "path": path, "drained": drained, "in_flight": in_flight}
