"""The fleet reconciler: what to pause and resume now, what must wait and why, and when to look again.

A pure function of the fleet document, what was observed of each environment (its MWAA status or
its absence, its state-table phase, whether a pause or resume holds its lock, its tags), the
overrides, the recorded creation durations, the instant and the limits. Adapters observe and act;
nothing here calls AWS.

Rules, in the order they apply:
- A refused fleet document starts nothing at all; its problems are reported.
- Only environments that opted in (`managed_environment`) are considered; a refused tag defers
  that environment alone.
- An environment already in its desired state needs nothing (a DELETING one that should be paused
  and a CREATING one that should run count as in step).
- A running pause or resume, a phase that needs a human (RESUME_FAILED, NEEDS_ATTENTION, or a
  record that contradicts what MWAA shows), an MWAA status that is not stable: deferred.
- Resumes first, then pauses, each in the order they fell due: a resume the concurrency cap
  postpones keeps people waiting, a postponed pause only costs the hours until the next run.
- A resume creates an environment: it waits while the account's environments (every listed one,
  creating and deleting ones included, plus resumes that have not created theirs yet) would exceed
  the quota. A pause started in the same run frees nothing yet: its deletion takes minutes.
- Each start is named `<env>-<action>-<due instant>` where the due instant is when the desired
  state last changed: every trigger within one scheduled interval proposes the same name, and
  Step Functions refuses a second execution of a name, so a duplicate trigger starts nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mwaa_control.pause.models import DrainOptions, Phase
from mwaa_control.schedules.config import (
    ConfigProblem,
    FleetDocument,
    ManagedEnvironment,
    ScheduleConfigError,
    plan_fleet,
)
from mwaa_control.schedules.evaluate import DesiredState, Reason, desired_state, next_transition, timeline
from mwaa_control.schedules.model import Override

UTC = dt.UTC
EXECUTION_NAME_LIMIT = 80
"""Step Functions execution names: 1-80 characters of letters, digits, '-' and '_'."""
LOOKBACK = dt.timedelta(days=8)
LONGEST_LOOKBACK = dt.timedelta(days=400)
"""How far back a desired state that has not changed is traced to its beginning (which names its
execution); beyond, a state is named per UTC day (or by the override in force)."""
"""How far back the start of the current desired-state interval is searched: a weekly schedule
changes at least once in a week unless it never changes."""
STABLE_FOR_PAUSE = frozenset({"AVAILABLE"})
"""MWAA statuses a pause may start from: the pause workflow itself refuses any other, so starting
one from UPDATE_FAILED would only record a failed pause (an operator resolves the update first)."""
GONE = frozenset({"DELETED"})


class FleetAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"


class DeferReason(StrEnum):
    BUSY = "busy"
    """MWAA is changing the environment (creating, updating, deleting, maintenance...)."""
    OPERATION_RUNNING = "operation-running"
    """A pause or resume of this environment holds its lock and still runs."""
    NEEDS_HUMAN = "needs-human"
    """RESUME_FAILED, NEEDS_ATTENTION or a record that contradicts MWAA: someone must look first."""
    QUOTA = "quota"
    """Resuming would exceed the environments-per-account-and-region quota."""
    CONCURRENCY = "concurrency"
    """The cap on pauses and resumes running at once is reached."""
    REFUSED_CONFIG = "refused-config"
    """The environment's tags contradict the fleet document, or the document itself is refused."""
    TAGS_UNKNOWN = "tags-unknown"
    """Paused, but the tags kept in its snapshot could not be read: whether it opted in is unknown."""


TRANSIENT = frozenset({DeferReason.BUSY, DeferReason.OPERATION_RUNNING, DeferReason.QUOTA, DeferReason.CONCURRENCY})
"""Deferrals a later run may clear by itself (the others wait for a person)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObservedEnvironment(_Frozen):
    """What the adapters saw of one environment (live in MWAA, or known to the state table)."""

    name: str
    status: str | None = None
    """GetEnvironment's Status; None when MWAA does not list the environment (paused, or never ours)."""
    phase: Phase | None = None
    """The state table's `environment#<name>` phase; None without a record."""
    operation_running: bool = False
    """Its `operation#<name>` lock is held by an execution that still runs."""
    tags: Mapping[str, str] | None = None
    """Live tags, or for an absent environment the tags of the snapshot its resume would use;
    None when they could not be read."""
    creation_seconds: tuple[float, ...] = ()
    """How long its recorded creations took, oldest first (the ready-by lead)."""

    @property
    def present(self) -> bool:
        return self.status is not None and self.status not in GONE


class FleetLimits(_Frozen):
    max_concurrent_operations: int = Field(default=5, ge=1, le=100)
    environment_quota: int = Field(default=10, ge=1, le=1000)
    retry_after: dt.timedelta = Field(default=dt.timedelta(minutes=10), gt=dt.timedelta(0))
    """When something waits for a reason that clears by itself, look again this soon."""


class PlannedExecution(_Frozen):
    environment: str
    action: FleetAction
    reason: Reason
    detail: str = ""
    due: AwareDatetime
    """When the desired state last changed to what this execution brings about."""
    name: str
    drain: DrainOptions | None = None
    """A pause's drain, from its schedule (None: the workflow's default)."""
    accept_rest_path_losses: bool = False
    """A pause's acceptance of the REST path's losses, from its schedule."""

    @property
    def execution_input(self) -> dict[str, object]:
        """The pause/resume state machines' input; `trigger` is for people reading the history."""
        execution: dict[str, object] = {
            "environment": self.environment,
            "trigger": {"source": "fleet-scheduler", "reason": self.reason.value, "due": self.due.isoformat()},
        }
        if self.drain is not None and self.action is FleetAction.PAUSE:
            execution["drain"] = self.drain.model_dump()
        if self.accept_rest_path_losses and self.action is FleetAction.PAUSE:
            execution["accept_rest_path_losses"] = True
        return execution


class Deferred(_Frozen):
    environment: str
    reason: DeferReason
    detail: str
    action: FleetAction | None = None
    """What it should get once the reason clears (None when the configuration is refused)."""


class FleetDecision(_Frozen):
    start: tuple[PlannedExecution, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    in_step: tuple[str, ...] = ()
    """Managed environments already in their desired state."""
    not_opted_in: tuple[str, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()
    """Why the fleet document was refused (then nothing starts) or an environment's tags were."""
    next_wake_up: AwareDatetime | None = None
    """The earliest instant at which a desired state changes, or sooner when a deferral may clear."""


def recent_overrides(overrides: Sequence[Override], now: dt.datetime) -> tuple[Override, ...]:
    """The overrides that matter at `now`: active ones, and those that expired within LOOKBACK
    (a store keeps them that long)."""
    return tuple(o for o in overrides if o.until > now - LOOKBACK)


def execution_name(environment: str, action: FleetAction, due: dt.datetime) -> str:
    """`<env>-<action>-<due UTC, to the second>`; a long name keeps a hash of the environment's."""
    stamp = due.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{environment}-{action.value}-{stamp}"
    if len(name) <= EXECUTION_NAME_LIMIT:
        return name
    digest = hashlib.sha256(environment.encode()).hexdigest()[:8]
    room = EXECUTION_NAME_LIMIT - len(f"-{digest}-{action.value}-{stamp}")
    return f"{environment[:room]}-{digest}-{action.value}-{stamp}"


def _durations(seconds: Sequence[float]) -> tuple[dt.timedelta, ...]:
    return tuple(dt.timedelta(seconds=s) for s in seconds)


def _due(
    entry: ManagedEnvironment, overrides: Sequence[Override], durations: Sequence[dt.timedelta], now: dt.datetime
) -> dt.datetime:
    """When the desired state at `now` began, traced back up to LONGEST_LOOKBACK (a long run of
    holidays or an override of weeks keeps one name, so an environment resumed by hand is not
    paused again every day). Beyond: when the override in force was made, if one is; else the
    start of now's UTC day."""
    lookback = LOOKBACK
    while True:
        intervals = timeline(
            entry.schedule, entry.calendar, overrides, durations, now - lookback, now + dt.timedelta(seconds=1)
        )
        start = intervals[-1][0]
        if start > now - lookback:
            return start
        if lookback >= LONGEST_LOOKBACK:
            break
        # Rare (a long run of holidays, an override of weeks): look further back, not every day.
        lookback = min(lookback * 4, LONGEST_LOOKBACK)
    active = [o for o in overrides if o.active_at(now)]
    if active:
        return max(o.created_at for o in active).astimezone(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _needs_human(phase: Phase | None) -> bool:
    return phase in (Phase.RESUME_FAILED, Phase.NEEDS_ATTENTION)


def reconcile(
    document: FleetDocument | ScheduleConfigError,
    observed: Sequence[ObservedEnvironment],
    overrides: Mapping[str, Sequence[Override]],
    now: dt.datetime,
    limits: FleetLimits = FleetLimits(),  # noqa: B008 - frozen model, safe as a default
) -> FleetDecision:
    """The pauses and resumes to start now, what waits and why, and when to run again."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    now = now.astimezone(UTC)
    if isinstance(document, ScheduleConfigError):
        return FleetDecision(problems=document.problems)
    by_name = {o.name: o for o in observed}
    known_tags = {o.name: o.tags for o in observed if o.tags is not None}
    plan = plan_fleet(document, known_tags)
    deferred: list[Deferred] = [
        Deferred(environment=p.environment or "(document)", reason=DeferReason.REFUSED_CONFIG, detail=str(p))
        for p in plan.refused
    ]
    for o in observed:
        if o.tags is None and o.phase is Phase.PAUSED and not o.present:
            detail = "paused, and the tags of its snapshot could not be read: not resumed until they can"
            deferred.append(Deferred(environment=o.name, reason=DeferReason.TAGS_UNKNOWN, detail=detail))
    wanted: list[tuple[PlannedExecution, ObservedEnvironment]] = []
    in_step: list[str] = []
    wake_ups: list[dt.datetime] = []
    for entry in plan.managed:
        seen = by_name[entry.environment]
        # Expired overrides still shape the past: the due instant of a pause that follows an
        # expired keep-awake is its expiry, not the earlier period stop whose name may be used.
        active = recent_overrides(overrides.get(entry.environment, ()), now)
        durations = _durations(seen.creation_seconds)
        decision = desired_state(entry.schedule, entry.calendar, active, durations, now)
        upcoming = next_transition(entry.schedule, entry.calendar, active, durations, now)
        if upcoming is not None:
            wake_ups.append(upcoming.at)
        running = decision.state is DesiredState.RUNNING
        if running == seen.present or (not running and seen.status == "DELETING"):
            in_step.append(entry.environment)
            continue
        action = FleetAction.RESUME if running else FleetAction.PAUSE
        blocked = _blocked(seen, action)
        if blocked is not None:
            deferred.append(blocked)
            continue
        due = _due(entry, active, durations, now)
        planned = PlannedExecution(
            environment=entry.environment,
            action=action,
            reason=decision.reason,
            detail=decision.detail,
            due=due,
            name=execution_name(entry.environment, action, due),
            drain=entry.schedule.drain if action is FleetAction.PAUSE else None,
            accept_rest_path_losses=action is FleetAction.PAUSE and entry.schedule.accept_rest_path_losses,
        )
        wanted.append((planned, seen))
    start, limited = _within_limits(wanted, observed, limits)
    deferred += limited
    if any(d.reason in TRANSIENT for d in deferred):
        wake_ups.append(now + limits.retry_after)
    return FleetDecision(
        start=tuple(start),
        deferred=tuple(sorted(deferred, key=lambda d: (d.environment, d.reason.value))),
        in_step=tuple(sorted(in_step)),
        not_opted_in=plan.not_opted_in,
        problems=plan.refused,
        next_wake_up=min(wake_ups, default=None),
    )


def _blocked(seen: ObservedEnvironment, action: FleetAction) -> Deferred | None:
    """Why this environment cannot get `action` now, whatever the limits."""

    def defer(reason: DeferReason, detail: str) -> Deferred:
        return Deferred(environment=seen.name, reason=reason, detail=detail, action=action)

    if seen.operation_running:
        return defer(DeferReason.OPERATION_RUNNING, f"a pause or resume holds its lock (phase {seen.phase})")
    if _needs_human(seen.phase):
        return defer(DeferReason.NEEDS_HUMAN, f"phase {seen.phase}: look at the last execution, then clear it")
    if action is FleetAction.PAUSE:
        if seen.status not in STABLE_FOR_PAUSE:
            return defer(DeferReason.BUSY, f"MWAA status {seen.status}: a pause starts from AVAILABLE")
        return None
    if seen.status is not None and seen.status not in GONE:  # DELETING: the pause has not finished
        return defer(DeferReason.BUSY, f"MWAA status {seen.status}: resumed once it is gone")
    if seen.phase is not Phase.PAUSED:
        found = "no record" if seen.phase is None else f"phase {seen.phase}"
        return defer(DeferReason.NEEDS_HUMAN, f"absent from MWAA with {found}: only a verified pause is resumed")
    return None


def _within_limits(
    wanted: list[tuple[PlannedExecution, ObservedEnvironment]],
    observed: Sequence[ObservedEnvironment],
    limits: FleetLimits,
) -> tuple[list[PlannedExecution], list[Deferred]]:
    running = sum(1 for o in observed if o.operation_running)
    # Listed environments in any status count against the quota, and so do resumes under way
    # whose CreateEnvironment has not happened yet.
    environments = sum(1 for o in observed if o.present or (o.operation_running and o.phase is Phase.RESUMING))
    order = sorted(wanted, key=lambda w: (w[0].action is not FleetAction.RESUME, w[0].due, w[0].environment))
    start: list[PlannedExecution] = []
    deferred: list[Deferred] = []
    for planned, _ in order:
        if running >= limits.max_concurrent_operations:
            detail = f"{running} pauses and resumes running, the cap is {limits.max_concurrent_operations}"
            deferred.append(_limited(planned, DeferReason.CONCURRENCY, detail))
            continue
        if planned.action is FleetAction.RESUME:
            if environments + 1 > limits.environment_quota:
                detail = (
                    f"{environments} environments exist or are being created; one more exceeds the quota of "
                    f"{limits.environment_quota} per account and region"
                )
                deferred.append(_limited(planned, DeferReason.QUOTA, detail))
                continue
            environments += 1
        running += 1
        start.append(planned)
    return start, deferred


def _limited(planned: PlannedExecution, reason: DeferReason, detail: str) -> Deferred:
    return Deferred(environment=planned.environment, reason=reason, detail=detail, action=planned.action)
