"""Pause (snapshot, back up, verify, delete) and resume (create identically, restore) of one MWAA
environment, one step per call: the state machines in statemachines/pause and statemachines/resume
sequence these steps, retry them and route their failures to `abandon`.

Guardrails, each enforced here and not only by the state machine's order:
- on Airflow 3 the export DAG runs the engine over the database credentials the workers carry;
  where they have none it fails before anything is paused, so no environment is deleted whose run
  history could not be backed up (only the database paths back up history a resume restores);
- nothing is deleted unless the environment opted in (tag; IAM checks the same on DeleteEnvironment),
  this execution holds the environment's operation lock, and this execution's backup and snapshot
  were verified (the state record names them);
- a backup becomes the one resume uses only after it was verified, and only by the pause that
  deleted the environment; backups are never overwritten or deleted here;
- a resume creates the environment from an authenticated snapshot, adopts an existing one only if
  its configuration maps to the same request, and restores the backup the record names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control import clock as control_clock
from mwaa_control.errors import ControlPlaneError
from mwaa_control.metadata.authentication import open_backup
from mwaa_control.metadata.errors import MetadataError
from mwaa_control.metadata.manifest import PAUSE_STATES, backup_prefix
from mwaa_control.metadata.sealing import KeyService
from mwaa_control.metadata.store import BackupStore
from mwaa_control.pause import snapshot as snapshots
from mwaa_control.pause.integrity import verify_for_deletion
from mwaa_control.pause.models import (
    OPT_IN_TAG,
    OPT_IN_VALUE,
    Abandon,
    CheckStatus,
    CreateAndWait,
    DeleteAndWait,
    EnvironmentRecord,
    Finished,
    FinishExport,
    FinishPause,
    FinishResume,
    Operation,
    PausePlan,
    Phase,
    PrepareExport,
    PreparePause,
    PrepareResume,
    ResumePlan,
    StatusCheck,
    VerifiedBackup,
    VerifyBackup,
)
from mwaa_control.pause.state import PauseStateTable
from mwaa_control.pause.waits import GONE, TaskReports, complete
from mwaa_control.schedules.pricing import UnknownPrice, hourly_price, size_from_request, to_cents


class PauseRefused(ControlPlaneError):
    """The environment cannot be paused or resumed as asked; nothing was changed."""


class EnvironmentBusy(ControlPlaneError):
    """The environment is in a transitional status; the workflow retries later."""


class EnvironmentConflict(ControlPlaneError):
    """An environment with this name exists with another configuration than the snapshot's."""


class EndpointsRemain(ControlPlaneError):
    """Endpoints this stack created for the environment still exist (the endpoint automation is
    removing them); the workflow retries."""


class WaitTooLong(ControlPlaneError):
    """An environment did not reach the status a workflow waits for within WAIT_LIMITS."""


# DeleteEnvironment takes minutes to an hour; creation up to an hour, plus up to 72 h in PENDING while
# customer-managed endpoints are missing (after which MWAA fails it itself).
WAIT_LIMITS = {"DELETED": timedelta(hours=6), "AVAILABLE": timedelta(hours=80)}


class LockLost(ControlPlaneError):
    """This execution no longer holds the environment's operation lock: it must not act."""


class AwsServiceUnavailable(ControlPlaneError):
    """An AWS call was throttled or met a server error even after botocore's retries; the workflow
    retries the step (Step Functions matches error names exactly, and botocore names most of these
    after the service's own error shapes, so "ClientError" alone would not match them)."""


# Throttling codes botocore's standard retry mode knows, and server-side failures with a 4xx name.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "KMSInternalException",
    }
)


def transient(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status == 429 or status >= 500 or error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES


@contextmanager
def transient_errors_named() -> Iterator[None]:
    """Re-raises a transient AWS error as AwsServiceUnavailable (the name the workflows retry on)."""
    try:
        yield
    except ClientError as error:
        if not transient(error):
            raise
        code = error.response.get("Error", {}).get("Code", "")
        raise AwsServiceUnavailable(f"{error.operation_name}: {code} (retried by botocore first)") from error


SNAPSHOT_ATTEMPTS = 5
TRANSITIONAL = ("CREATING", "UPDATING", "DELETING", "CREATING_SNAPSHOT", "ROLLING_BACK", "PENDING", "MAINTENANCE")


@dataclass(frozen=True)
class LifecycleSettings:
    bucket: str
    kms_key_id: str
    partition: str = "aws"
    creatable_versions: Collection[str] = field(default_factory=lambda: tuple(snapshots.CREATABLE_AIRFLOW_VERSIONS))


def backup_id_for(execution: str, started_at: datetime) -> str:
    """One backup id per execution (a retried step finds the same one), sortable by time."""
    moment = started_at.astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{hashlib.sha256(execution.encode()).hexdigest()[:8]}"


class LifecycleService:
    def __init__(
        self,
        *,
        mwaa: Any,
        state: PauseStateTable,
        store: BackupStore,
        keys: KeyService,
        tasks: TaskReports,
        settings: LifecycleSettings,
        managed_endpoints: Callable[[str], list[str]],
        set_paused: Callable[[str, str, bool], None],
        clock: Callable[[], datetime] = control_clock.now,
    ) -> None:
        """`managed_endpoints(environment_arn)`: ids of endpoints this stack created for it that
        still exist. `set_paused(environment, dag_id, paused)`: through the environment's Airflow."""
        self._mwaa = mwaa
        self._state = state
        self._store = store
        self._keys = keys
        self._tasks = tasks
        self._settings = settings
        self._managed_endpoints = managed_endpoints
        self._set_paused = set_paused
        self._clock = clock

    # --- MWAA ------------------------------------------------------------------------------------
    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._mwaa.get_environment(Name=name)["Environment"])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise

    def _tags(self, environment: Mapping[str, Any]) -> dict[str, str]:
        return dict(self._mwaa.list_tags_for_resource(ResourceArn=environment["Arn"]).get("Tags") or {})

    def _status(self, name: str) -> str:
        found = self._get(name)
        return GONE if found is None else str(found["Status"])

    def _require_lock(self, environment: str, execution: str) -> None:
        if not self._state.holds(environment, execution):
            raise LockLost(f"{environment}: this execution does not hold the operation lock; nothing was changed")

    def _location(self) -> str:
        return f"s3://{self._settings.bucket}"

    # --- pause -----------------------------------------------------------------------------------
    def prepare_pause(self, step: PreparePause) -> PausePlan:
        name = step.environment
        environment = self._get(name)
        if environment is None:
            raise PauseRefused(f"{name} does not exist; nothing to pause")
        tags = self._tags(environment)
        if tags.get(OPT_IN_TAG) != OPT_IN_VALUE:
            raise PauseRefused(
                f"{name} has not opted in to pause/resume (tag {OPT_IN_TAG}={OPT_IN_VALUE}); nothing was changed"
            )
        version = str(environment.get("AirflowVersion", ""))
        if not snapshots.creatable(version, self._settings.creatable_versions):
            raise PauseRefused(
                f"{name} runs Airflow {version}, which MWAA no longer creates: once deleted it could not be "
                "resumed unchanged. Upgrade it first; nothing was changed"
            )
        # Airflow 3 is not refused here: its export DAG decides. It backs up over the database
        # credentials MWAA 3 workers carry, with the same guarantees as on Airflow 2, or, without them,
        # fails before the drain pauses anything, and the failure path notifies why (nothing deleted).
        status = str(environment["Status"])
        if status != "AVAILABLE":
            raise PauseRefused(f"{name} is {status}; only an AVAILABLE environment is paused")
        record = self._state.record(name)
        if record is not None and record.phase in (Phase.RESUMING, Phase.RESUME_FAILED, Phase.NEEDS_ATTENTION):
            # After a failed resume the environment may be an empty replacement: its backup would
            # become the one the next resume restores, and the real one would be lost from view.
            raise PauseRefused(
                f"{name} is {record.phase.value} ({record.message or 'no reason recorded'}): resume it again, or "
                f"look at it first; backup {record.last_good_backup_id} stays the one to restore. Nothing was changed"
            )
        self._state.acquire(name, Operation.PAUSE, step.execution)
        backup_id, snapshot = self._snapshot(environment, tags, backup_id_for(step.execution, step.started_at))
        self._state.update(
            name,
            phase=Phase.PAUSING,
            pending_backup_id=backup_id,
            verified_backup_id=None,
            pending_created_at=environment.get("CreatedAt"),
            message="",
        )
        drain = {**step.drain.model_dump(), "leave_paused": True}
        return PausePlan(
            environment=name,
            backup_id=backup_id,
            airflow_version=version,
            export_conf={
                "environment": name,
                "location": self._location(),
                "kms_key_id": self._settings.kms_key_id,
                "backup_id": backup_id,
                "drain": drain,
            },
            snapshot_notes=list(snapshot.notes),
        )

    def _snapshot(
        self, environment: Mapping[str, Any], tags: Mapping[str, str], base_id: str
    ) -> tuple[str, snapshots.EnvironmentSnapshot]:
        """The snapshot this execution's pause works with, and its backup id.

        A retry of this step (same execution) finds the snapshot it wrote. Snapshots are never
        replaced, so one an earlier attempt left incomplete (its MAC written, then the write of the
        document failed) is left alone and the next id of this execution is used."""
        name = str(environment["Name"])
        for attempt in range(SNAPSHOT_ATTEMPTS):
            backup_id = base_id if attempt == 0 else f"{base_id}-{attempt}"
            try:
                taken = snapshots.take_snapshot(environment, tags, self._keys, backup_id, taken_at=self._clock())
                snapshots.save_snapshot(self._store, self._keys, taken, backup_id)
                return backup_id, taken
            except snapshots.SnapshotExists:
                try:
                    return backup_id, snapshots.load_snapshot(self._store, self._keys, name, backup_id)[0]
                except snapshots.SnapshotNotFound:
                    continue
        raise PauseRefused(
            f"{name}: {SNAPSHOT_ATTEMPTS} snapshots of this pause were left incomplete; nothing was changed"
        )

    def verify_backup(self, step: VerifyBackup) -> VerifiedBackup:
        self._require_lock(step.environment, step.execution)
        verified = verify_for_deletion(
            self._store,
            self._keys,
            step.environment,
            step.backup_id,
            before_delete=step.snapshot,
            accept_rest_path_losses=step.accept_rest_path_losses,
        )
        checked = "not taken (an export)"
        if step.snapshot:
            snapshot, _ = snapshots.load_snapshot(self._store, self._keys, step.environment, step.backup_id)
            checked = f"authenticated, Airflow {snapshot.airflow_version}"
        self._state.update(step.environment, verified_backup_id=step.backup_id)
        return verified.model_copy(update={"snapshot": checked})

    def delete_and_wait(self, step: DeleteAndWait) -> dict[str, Any]:
        name = step.environment
        self._require_lock(name, step.execution)
        record = self._state.record(name)
        if record is None or record.pending_backup_id != step.backup_id or record.verified_backup_id != step.backup_id:
            raise PauseRefused(f"{name}: backup {step.backup_id} was not verified by this pause; nothing is deleted")
        environment = self._get(name)
        self._state.park(name, GONE, step.task_token, step.execution)
        if environment is not None and environment["Status"] not in ("DELETING", GONE):
            tags = self._tags(environment)
            refusal = self._delete_refusal(name, environment, tags, record.pending_created_at, step.backup_id)
            if refusal:
                self._state.unpark(name, step.task_token)
                raise PauseRefused(refusal)
            self._mwaa.delete_environment(Name=name)
            # MWAA accepted the delete: from here on the verified backup is the one to restore,
            # whatever happens next (a stop, a timeout, a failure before DELETED).
            self._state.update(name, last_good_backup_id=step.backup_id)
        # The event may have come and gone before the token was parked: decide once from the truth.
        complete(self._state, self._tasks, name, self._status(name))
        return {"environment": name, "waiting_for": GONE}

    def _delete_refusal(
        self,
        name: str,
        environment: Mapping[str, Any],
        tags: Mapping[str, str],
        created_at: datetime | None,
        backup_id: str,
    ) -> str | None:
        """Why this environment must not be deleted now, or None: it must be the one the snapshot
        was taken of (same creation time), unchanged since, and still opted in."""
        if tags.get(OPT_IN_TAG) != OPT_IN_VALUE:
            return f"{name} no longer carries {OPT_IN_TAG}={OPT_IN_VALUE}; it was not deleted"
        if created_at is not None and environment.get("CreatedAt") not in (None, created_at):
            return (
                f"{name} is not the environment this pause backed up (created {environment.get('CreatedAt')}); "
                "it was not deleted"
            )
        _, request = snapshots.load_snapshot(self._store, self._keys, name, backup_id)
        changed = snapshots.differences(request, environment, tags)
        if changed:
            return (
                f"{name} changed while it was backed up ({'; '.join(changed)}): a resume would lose the change, so "
                f"it was not deleted; backup {backup_id} is kept, pause again"
            )
        return None

    def check_status(self, step: CheckStatus) -> StatusCheck:
        """The fallback for lost events: one read after the wait timed out."""
        status = self._status(step.environment)
        reached = status == step.target
        if not reached and step.target == "AVAILABLE" and status in ("CREATE_FAILED", GONE):
            raise EnvironmentBusy(f"{step.environment} is {status}, it will not become AVAILABLE")
        limit = WAIT_LIMITS[step.target]
        if not reached and step.started_at is not None and self._clock() - step.started_at > limit:
            raise WaitTooLong(
                f"{step.environment} is still {status}, not {step.target}, {limit} after the workflow started; "
                "it stops waiting (no backup was touched)"
            )
        return StatusCheck(environment=step.environment, target=step.target, status=status, reached=reached)

    def finish_pause(self, step: FinishPause) -> Finished:
        name = step.environment
        self._require_lock(name, step.execution)
        if self._status(name) != GONE:
            raise EnvironmentBusy(f"{name} still exists; a pause finishes only once it is DELETED")
        taken = snapshots.load_snapshot(self._store, self._keys, name, step.backup_id)[0]
        arn = f"arn:{self._settings.partition}:airflow:{taken.region}:{taken.account}:environment/{name}"
        remaining = self._managed_endpoints(arn)
        if remaining:
            raise EndpointsRemain(f"{name}: endpoints {remaining} this stack created still exist")
        record = self._state.record(name) or EnvironmentRecord(
            environment=name, phase=Phase.PAUSED, updated_at=self._clock()
        )
        self._state.update(
            name,
            phase=Phase.PAUSED,
            last_good_backup_id=step.backup_id,
            pending_backup_id=None,
            paused_intervals=record.pause_began(self._clock()),
            message=f"paused; backup {step.backup_id}",
        )
        losses = self._rest_path_losses(name, step.backup_id)
        self._state.release(name, step.execution)
        return Finished(
            environment=name,
            operation=Operation.PAUSE,
            phase=Phase.PAUSED,
            backup_id=step.backup_id,
            message=f"{name} is paused: deleted after backup {step.backup_id} was verified"
            + (" (taken through the REST API, as the pause accepted)" if losses else ""),
            warnings=losses,
        )

    def _rest_path_losses(self, name: str, backup_id: str) -> list[str]:
        """What a resume from this backup will not bring back, when it was taken through the REST API.
        Informational: the environment is paused whatever this finds, so a failure to read is reported."""
        try:
            manifest = open_backup(self._store, name, backup_id, self._keys).manifest
        except (MetadataError, ClientError) as error:
            return [
                f"could not read backup {backup_id}'s manifest to list what a resume leaves out: {type(error).__name__}"
            ]
        if manifest.path != "rest":
            return []
        return [f"not restored on resume: {what} ({why})" for what, why in sorted(manifest.not_restored.items())]

    # --- export (no pause) -------------------------------------------------------------------------
    def prepare_export(self, step: PrepareExport) -> PausePlan:
        name = step.environment
        environment = self._get(name)
        if environment is None:
            raise PauseRefused(f"{name} does not exist; nothing to export")
        version = str(environment.get("AirflowVersion", ""))
        # Airflow 3 is not refused here either: its export DAG backs up over the database credentials
        # MWAA 3 workers carry, or fails at once (NoWorkerDatabase) and the failure path says why.
        if environment["Status"] != "AVAILABLE":
            raise PauseRefused(f"{name} is {environment['Status']}; only an AVAILABLE environment is exported")
        self._state.acquire(name, Operation.EXPORT, step.execution)
        backup_id = backup_id_for(step.execution, step.started_at)
        drain = None if step.drain is False else {**step.drain.model_dump(), "leave_paused": False}
        self._state.update(name, pending_backup_id=backup_id, verified_backup_id=None)
        return PausePlan(
            environment=name,
            backup_id=backup_id,
            airflow_version=version,
            export_conf={
                "environment": name,
                "location": self._location(),
                "kms_key_id": self._settings.kms_key_id,
                "backup_id": backup_id,
                "drain": drain or False,
            },
        )

    def finish_export(self, step: FinishExport) -> Finished:
        name = step.environment
        self._require_lock(name, step.execution)
        record = self._state.record(name)
        if record is None or record.verified_backup_id != step.backup_id:
            raise PauseRefused(f"{name}: export {step.backup_id} was not verified")
        updated = self._state.update(name, last_export_backup_id=step.backup_id, pending_backup_id=None)
        self._state.release(name, step.execution)
        return Finished(
            environment=name,
            operation=Operation.EXPORT,
            phase=updated.phase,
            backup_id=step.backup_id,
            message=f"{name}: metadata exported and verified as backup {step.backup_id}",
        )

    # --- resume ----------------------------------------------------------------------------------
    def prepare_resume(self, step: PrepareResume) -> ResumePlan:
        name = step.environment
        record = self._state.record(name)
        backup_id = step.backup_id or (record.last_good_backup_id if record else None)
        if backup_id is None:
            raise PauseRefused(f"{name} has no verified backup from a pause; give a backup id to resume from")
        existing = self._get(name)
        if existing is not None and existing["Status"] in ("DELETING",):
            raise EnvironmentBusy(f"{name} is {existing['Status']}; resume waits until it is gone")
        if existing is not None and not self._created_by_resume(record, backup_id):
            # Restoring an older backup into a live environment would turn back its connections,
            # variables, pools and pause states: only an environment a resume created is adopted.
            raise PauseRefused(
                f"{name} exists ({existing['Status']}) and was not created by a resume of backup {backup_id}; "
                "nothing was changed (restore into a running environment with `mwaactl metadata restore`)"
            )
        self._state.acquire(name, Operation.RESUME, step.execution)
        snapshot, _ = snapshots.load_snapshot(self._store, self._keys, name, backup_id)
        if not snapshots.creatable(snapshot.airflow_version, self._settings.creatable_versions):
            raise PauseRefused(
                f"{name} was paused on Airflow {snapshot.airflow_version}, which MWAA no longer creates; "
                f"backup {backup_id} is intact (restore it into an environment of a newer version)"
            )
        # A backup taken through the REST API was accepted by the pause that deleted on it.
        verified = verify_for_deletion(self._store, self._keys, name, backup_id, before_delete=False)
        self._state.update(name, phase=Phase.RESUMING, pending_backup_id=backup_id, message="")
        return ResumePlan(
            environment=name,
            backup_id=backup_id,
            airflow_version=snapshot.airflow_version,
            import_conf={
                "environment": name,
                "location": self._location(),
                "kms_key_id": self._settings.kms_key_id,
                "backup_id": backup_id,
            },
            restore_path="rest" if verified.path == "rest" else "database",
        )

    @staticmethod
    def _created_by_resume(record: EnvironmentRecord | None, backup_id: str) -> bool:
        return (
            record is not None
            and record.phase in (Phase.RESUMING, Phase.RESUME_FAILED)
            and record.creation_started_at is not None
            and record.pending_backup_id == backup_id
        )

    def create_and_wait(self, step: CreateAndWait) -> dict[str, Any]:
        name = step.environment
        self._require_lock(name, step.execution)
        _, request = snapshots.load_snapshot(self._store, self._keys, name, step.backup_id)
        existing = self._get(name)
        self._state.park(name, "AVAILABLE", step.task_token, step.execution)
        ours = self._created_by_resume(self._state.record(name), step.backup_id)
        if existing is not None:
            refusal = None
            if existing["Status"] == "CREATE_FAILED":
                refusal = f"{name} exists in CREATE_FAILED; it must be deleted before a resume"
            elif not ours:  # prepare_resume refused it; someone created it since
                refusal = f"{name} exists and was not created by this resume; it was left alone"
            elif existing["Status"] == "AVAILABLE":
                # A re-run finds the environment it created: adopted only if it is still the snapshot's
                # (compared once AVAILABLE: during creation GetEnvironment may not show everything).
                differing = snapshots.differences(request, existing, self._tags(existing))
                if differing:
                    refusal = f"{name} exists with another configuration ({'; '.join(differing)}); it was left alone"
            if refusal:
                self._state.unpark(name, step.task_token)
                raise EnvironmentConflict(f"{refusal}; backup {step.backup_id} is intact")
        else:
            now = self._clock()
            record = self._state.record(name)
            ended = record.pause_ended(now) if record is not None else []
            self._state.update(name, creation_started_at=now, paused_intervals=ended)
            if request.get("Name") != name:  # load_snapshot refuses this too: never create another name
                raise EnvironmentConflict(f"the snapshot of {name} would create {request.get('Name')!r}")
            self._mwaa.create_environment(**request)
        complete(self._state, self._tasks, name, self._status(name))
        return {"environment": name, "waiting_for": "AVAILABLE", "adopted": existing is not None}

    def finish_resume(self, step: FinishResume) -> Finished:
        name = step.environment
        self._require_lock(name, step.execution)
        record = self._state.record(name)
        durations = list(record.creation_seconds) if record else []
        took: float | None = None
        paused_hours: float | None = None
        if record is not None and record.creation_started_at is not None:
            took = (self._clock() - record.creation_started_at).total_seconds()
            durations.append(took)
            last = record.paused_intervals[-1] if record.paused_intervals else None
            if last is not None and last.resumed_at == record.creation_started_at:
                paused_hours = (last.resumed_at - last.paused_at).total_seconds() / 3600
        self._state.update(
            name,
            phase=Phase.ACTIVE,
            pending_backup_id=None,
            creation_started_at=None,
            creation_seconds=durations,
            message=f"resumed from backup {step.backup_id}",
        )
        self._state.release(name, step.execution)
        return Finished(
            environment=name,
            operation=Operation.RESUME,
            phase=Phase.ACTIVE,
            backup_id=step.backup_id,
            message=f"{name} is resumed from backup {step.backup_id}"
            + (" through the REST API" if step.restore.get("path") == "rest" else ""),
            warnings=[str(p)[:500] for p in (step.restore.get("problems") or [])][:50]
            if step.restore.get("path") == "rest"
            else [],
            creation_seconds=took,
            paused_hours=paused_hours,
            saved_usd=None if paused_hours is None else self._saved(name, paused_hours),
            restore_seconds=_restore_seconds(step.restore),
        )

    def _saved(self, name: str, paused_hours: float) -> float | None:
        """What `paused_hours` saved at the list price of the environment's size (None: unpriced)."""
        environment = self._get(name)
        if environment is None:
            return None
        region = str(environment.get("Arn", "")).split(":")[3:4] or [""]
        try:
            price = hourly_price(size_from_request(environment), region[0])
        except (UnknownPrice, ValueError):
            return None  # a region or class without a list price: never guessed
        return float(to_cents(Decimal(str(paused_hours)) * price))

    # --- failure paths ----------------------------------------------------------------------------
    def abandon(self, step: Abandon) -> Finished:
        name = step.environment
        reason = _reason(step.error)
        if not self._state.holds(name, step.execution):
            # Refused before the lock was ours (another operation runs): touch nothing of theirs.
            return Finished(
                environment=name,
                operation=step.operation,
                phase=Phase.NEEDS_ATTENTION if step.stage != "prepare" else Phase.ACTIVE,
                backup_id=step.backup_id,
                message=f"{step.operation.value} of {name} failed at {step.stage}: {reason}",
            )
        environment = self._get(name)
        warnings: list[str] = []
        if step.operation is Operation.EXPORT:
            # The environment kept running; a drain the export asked for puts pause states back itself.
            record = self._state.record(name)
            phase = record.phase if record is not None else Phase.ACTIVE
        elif step.operation is Operation.PAUSE:
            if environment is not None and environment["Status"] == "AVAILABLE":
                warnings += self._put_pause_states_back(name, step.backup_id)
                phase = Phase.PAUSE_FAILED
            elif environment is None or environment["Status"] == "DELETING":
                record = self._state.record(name)
                verified = (
                    step.backup_id is not None and record is not None and record.verified_backup_id == step.backup_id
                )
                gone = environment is None
                phase = Phase.PAUSED if verified and gone else Phase.NEEDS_ATTENTION
                if verified and step.backup_id:
                    self._state.update(name, last_good_backup_id=step.backup_id)
                if phase is Phase.PAUSED and record is not None:
                    self._state.update(name, paused_intervals=record.pause_began(self._clock()))
            else:
                phase = Phase.NEEDS_ATTENTION
        else:
            phase = Phase.RESUME_FAILED
            ours = step.backup_id is not None and self._created_by_resume(self._state.record(name), step.backup_id)
            if environment is not None and environment["Status"] == "CREATE_FAILED" and ours:
                # MWAA's reason is read here, before the deletion takes it away: the wait's failure
                # cause may not carry it (it is truncated, or the wait ended by the fallback check).
                why = str(((environment.get("LastUpdate") or {}).get("Error") or {}).get("ErrorMessage") or "")
                if why:
                    reason = f"{reason} (MWAA: {why[:500]})"
                # Made from the snapshot and never restored into: it holds nothing. Deleting it lets a
                # re-run create it again; the backup stays.
                self._mwaa.delete_environment(Name=name)
                record = self._state.record(name)
                if record is not None:  # deleted again: paused (not billed) from here on
                    self._state.update(name, paused_intervals=record.pause_began(self._clock()))
                warnings.append(f"{name} was CREATE_FAILED and has been deleted so that a re-run can create it")
        message = f"{step.operation.value} of {name} failed at {step.stage}: {reason}"
        self._state.update(name, phase=phase, message=message[:1000])
        self._state.release(name, step.execution)
        return Finished(
            environment=name,
            operation=step.operation,
            phase=phase,
            backup_id=step.backup_id,
            message=message,
            warnings=warnings,
        )

    def _put_pause_states_back(self, name: str, backup_id: str | None) -> list[str]:
        """Unpause the DAGs the drain paused (the states it wrote before pausing anything)."""
        if backup_id is None:
            return []
        key = f"{backup_prefix(name, backup_id)}/{PAUSE_STATES}"
        try:
            if not self._store.exists(key):
                return []
            original = json.loads(self._store.get_bytes(key))
        except (MetadataError, ClientError, ValueError) as error:
            return [f"could not read the pause states the drain recorded: {type(error).__name__}"]
        if not isinstance(original, dict):
            return ["the recorded pause states are not an object; no DAG was unpaused"]
        failed: list[str] = []
        for dag_id, paused in sorted(original.items()):
            if paused is False:
                try:
                    self._set_paused(name, str(dag_id), False)
                except (ControlPlaneError, ClientError):
                    failed.append(str(dag_id))
        return [f"could not unpause {len(failed)} DAGs: {', '.join(failed[:20])}"] if failed else []


def _reason(error: Mapping[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    kind = str(error.get("Error") or error.get("error") or "error")
    cause = error.get("Cause") or error.get("cause")
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
            if isinstance(parsed, dict) and "errorMessage" in parsed:
                cause = parsed["errorMessage"]
            elif isinstance(parsed, dict) and "reason" in parsed:
                cause = parsed["reason"]
        except ValueError:
            pass
    return f"{kind}: {str(cause or '')[:500]}"


def _restore_seconds(reported: Mapping[str, Any]) -> float | None:
    """The duration the import DAG reported, wherever the workflow nested its result; None when it
    reported none (an older DAG) or something that is not a duration."""
    for candidate in (reported, reported.get("result")):
        seconds = candidate.get("seconds") if isinstance(candidate, Mapping) else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 10**7:
            return float(seconds)
    return None
