"""What the pause and resume workflows pass between their steps, and what the state table keeps.

Every step is one Lambda action: the state machine passes names and ids only (never the snapshot's
configuration options, never a task token in a result), so execution history holds no secret."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from mwaa_control.airflow.callback import ENVIRONMENT_NAME

OPT_IN_TAG = "mwaa-control:pause-resume"
"""An environment may be paused (deleted) only when it carries this tag with OPT_IN_VALUE; IAM
enforces the same on airflow:DeleteEnvironment with aws:ResourceTag."""
OPT_IN_VALUE = "enabled"
EXPORT_DAG_ID = "mwaa_control_metadata_export"
IMPORT_DAG_ID = "mwaa_control_metadata_import"

EnvironmentName = Annotated[str, Field(pattern=ENVIRONMENT_NAME)]
BackupId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
ExecutionArn = Annotated[str, Field(pattern=r"^arn:[a-z-]+:states:[a-z0-9-]+:\d{12}:execution:[^\s]{1,200}$")]
TaskToken = Annotated[str, Field(min_length=1, max_length=2048, repr=False)]


class Operation(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    EXPORT = "export"


class Phase(StrEnum):
    """Where an environment is in its pause/resume life, as the state table records it."""

    ACTIVE = "ACTIVE"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"
    RESUMING = "RESUMING"
    PAUSE_FAILED = "PAUSE_FAILED"
    """The pause stopped before the environment was deleted; it runs as before."""
    RESUME_FAILED = "RESUME_FAILED"
    """The resume stopped; the backup it used is intact and a re-run picks it up."""
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    """A step failed after the environment was deleted or while it was being created: look first."""


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    environment: EnvironmentName
    execution: ExecutionArn


class DrainOptions(BaseModel):
    """How a pause waits for running tasks before its backup (`timeout` and `poll` in seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timeout: float = Field(default=1800, ge=0, le=6 * 3600)
    poll: float = Field(default=15, gt=0, le=300)
    on_timeout: Literal["abort", "proceed"] = "abort"


class PreparePause(_Step):
    action: Literal["prepare_pause"]
    started_at: datetime
    """The execution's start time: with its ARN, it names the backup (a retried step reuses it)."""
    drain: DrainOptions = Field(default_factory=DrainOptions)


class VerifyBackup(_Step):
    action: Literal["verify_backup"]
    backup_id: BackupId
    snapshot: bool = True
    """A pause's backup comes with a snapshot, which must authenticate too; an export's has none."""
    accept_rest_path_losses: StrictBool = False
    """The operator accepted a backup taken through the REST API (Airflow 3 without worker database
    credentials) as the one to delete the environment on, knowing what it does not restore."""


class RestBackup(_Step):
    """Drain and back up through the REST API (pause/rest_fallback.py)."""

    action: Literal["rest_backup"]
    backup_id: BackupId
    drain: DrainOptions = Field(default_factory=DrainOptions)
    accept_rest_path_losses: StrictBool = False


class RestRestore(_Step):
    """Restore a REST-path backup through the REST API (pause/rest_fallback.py)."""

    action: Literal["rest_restore"]
    backup_id: BackupId


class DeleteAndWait(_Step):
    action: Literal["delete_and_wait"]
    backup_id: BackupId
    task_token: TaskToken


class CheckStatus(_Step):
    action: Literal["check_status"]
    target: Literal["AVAILABLE", "DELETED"]
    started_at: datetime | None = None
    """The execution's start: a wait that outlasts WAIT_LIMITS ends in the failure path."""


class FinishPause(_Step):
    action: Literal["finish_pause"]
    backup_id: BackupId


class PrepareExport(_Step):
    """A metadata export without pausing (the scheduled export workflow)."""

    action: Literal["prepare_export"]
    started_at: datetime
    drain: DrainOptions | Literal[False] = False
    """False (the default): the environment keeps working; a drain pauses DAGs and puts them back."""


class FinishExport(_Step):
    action: Literal["finish_export"]
    backup_id: BackupId


class PrepareResume(_Step):
    action: Literal["prepare_resume"]
    backup_id: BackupId | None = None
    """None: the last backup a pause of this environment verified (never merely the newest)."""


class CreateAndWait(_Step):
    action: Literal["create_and_wait"]
    backup_id: BackupId
    task_token: TaskToken


class FinishResume(_Step):
    action: Literal["finish_resume"]
    backup_id: BackupId
    restore: dict[str, Any] = Field(default_factory=dict)


class Abandon(_Step):
    """A failure path: put back what can be put back, record why, release the lock."""

    action: Literal["abandon"]
    operation: Operation
    stage: str = Field(max_length=100)
    backup_id: BackupId | None = None
    error: dict[str, Any] | None = None


LifecycleAction = Annotated[
    PreparePause
    | VerifyBackup
    | DeleteAndWait
    | CheckStatus
    | FinishPause
    | PrepareExport
    | FinishExport
    | PrepareResume
    | CreateAndWait
    | FinishResume
    | Abandon,
    Field(discriminator="action"),
]


class LifecycleEvent(BaseModel):
    step: LifecycleAction


class RestPathEvent(BaseModel):
    step: Annotated[RestBackup | RestRestore, Field(discriminator="action")]


class PausePlan(BaseModel):
    environment: str
    backup_id: str
    airflow_version: str
    export_dag_id: str = EXPORT_DAG_ID
    export_conf: dict[str, Any]
    snapshot_notes: list[str] = Field(default_factory=list)


class VerifiedBackup(BaseModel):
    environment: str
    backup_id: str
    tables: int
    rows: int
    files: int
    bytes: int
    authentication: str
    snapshot: str
    drained: bool
    in_flight: int
    seconds: float | None = None
    """How long the export took (its manifest's start to end); None for older manifests."""
    path: str = "database"
    """"database" (the export DAG over the metadata database) or "rest" (the REST API)."""
    not_restored: dict[str, str] = Field(default_factory=dict)
    """What a restore of this backup will not bring back, and why (the manifest's list)."""


class StatusCheck(BaseModel):
    environment: str
    target: str
    status: str
    reached: bool


class ResumePlan(BaseModel):
    environment: str
    backup_id: str
    airflow_version: str
    import_dag_id: str = IMPORT_DAG_ID
    import_conf: dict[str, Any]
    restore_path: Literal["database", "rest"] = "database"
    """Which path restores: the import DAG, or the REST API for a backup taken through it."""


class Finished(BaseModel):
    environment: str
    operation: Operation
    phase: Phase
    backup_id: str | None
    message: str
    creation_seconds: float | None = None
    paused_hours: float | None = None
    """A resume: how long the environment was paused (deleted), from the state table."""
    saved_usd: float | None = None
    """A resume: what those hours saved at the list price of the recreated environment's size."""
    restore_seconds: float | None = None
    """A resume: how long the import DAG's restore took (its report)."""
    warnings: list[str] = Field(default_factory=list)


PAUSED_INTERVALS_KEPT = 800
"""About a year of daily pauses; an item stays far below DynamoDB's 400 KB."""
PAUSED_INTERVALS_DAYS = 400
"""Intervals that ended longer ago are dropped (savings are reported per month)."""


class PausedInterval(BaseModel):
    """From the moment a pause saw the environment DELETED to the moment a resume asked MWAA to
    create it again (MWAA bills an environment while it exists, creation included)."""

    paused_at: datetime
    resumed_at: datetime | None = None
    """None while the environment is still paused."""


class EnvironmentRecord(BaseModel):
    """`environment#<name>` in the state table."""

    environment: str
    phase: Phase
    updated_at: datetime
    last_good_backup_id: str | None = None
    """The newest backup a pause verified before deleting: what resume restores. Never moved back
    to an unverified backup, so a failed resume followed by a pause cannot replace it with the
    backup of an empty environment."""
    pending_backup_id: str | None = None
    """The backup the running pause or resume works with."""
    verified_backup_id: str | None = None
    """The pending backup once the running pause verified it (delete requires it)."""
    pending_created_at: datetime | None = None
    """CreatedAt of the environment the running pause snapshotted: the delete step deletes only it."""
    message: str = ""
    creation_started_at: datetime | None = None
    last_export_backup_id: str | None = None
    """The newest verified export taken while the environment ran (for Athena; never what a resume
    restores: that is the backup its pause verified)."""
    creation_seconds: list[float] = Field(default_factory=list)
    """How long the last creations took (newest last), for schedules that must resume early enough."""
    paused_intervals: list[PausedInterval] = Field(default_factory=list)
    """When the environment was paused (oldest first): what `mwaactl status` and `savings` measure
    savings from. Only the last interval may be open."""

    def pause_began(self, at: datetime) -> list[PausedInterval]:
        """The intervals once a pause deleted the environment at `at` (an open one is kept)."""
        kept = self._recent(at)
        if kept and kept[-1].resumed_at is None:
            return kept
        return [*kept, PausedInterval(paused_at=at)][-PAUSED_INTERVALS_KEPT:]

    def pause_ended(self, at: datetime) -> list[PausedInterval]:
        """The intervals once a resume asked MWAA to create the environment at `at`."""
        kept = self._recent(at)
        if kept and kept[-1].resumed_at is None:
            kept[-1] = kept[-1].model_copy(update={"resumed_at": max(at, kept[-1].paused_at)})
        return kept

    def open_interval(self) -> PausedInterval | None:
        last = self.paused_intervals[-1] if self.paused_intervals else None
        return last if last is not None and last.resumed_at is None else None

    def _recent(self, at: datetime) -> list[PausedInterval]:
        horizon = at - timedelta(days=PAUSED_INTERVALS_DAYS)
        kept = [i for i in self.paused_intervals if i.resumed_at is None or i.resumed_at >= horizon]
        return kept[-PAUSED_INTERVALS_KEPT:]
