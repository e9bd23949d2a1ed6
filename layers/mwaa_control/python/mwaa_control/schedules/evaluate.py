"""Desired state and next transition of one environment: pure functions of the schedule, its holiday
calendar, the environment's overrides, its recorded resume durations and the current instant.

Precedence, highest first: an active override; a holiday (the whole local day); the weekly periods,
widened by the ready-by lead (the environment runs from `start - lead` so that it is AVAILABLE at
`start`). The desired state is piecewise constant over time and can only change at a few candidate
instants (period bounds, holiday midnights, override bounds, and those bounds minus the lead), so
`next_transition` walks those candidates in order: nothing is approximated by sampling.

Local wall-clock times become instants through `resolve_local`, the one place where daylight
saving time is decided:
- a time that does not exist (skipped by a spring-forward gap) resolves to the first instant after
  the gap: a 02:30 start in Berlin on the last Sunday of March starts at 03:00 CEST;
- an ambiguous time (repeated by a fall-back) resolves to its first occurrence (`fold=0`): a 02:30
  start on the last Sunday of October starts at 02:30 CEST, not an hour later.
Stop times and holiday midnights follow the same rules, so a period can be shorter or longer by
the DST shift on those days, or empty when both its bounds fall in one gap.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict

from mwaa_control.schedules.model import HolidayAction, HolidayCalendar, Override, OverrideKind, ReadyBy, Schedule

UTC = dt.UTC
HORIZON = dt.timedelta(days=400)
"""How far `next_transition` looks: beyond a year of holidays, so a schedule that never changes
state says so (None) instead of looping."""
_CHUNK = dt.timedelta(days=7)
_MARGIN_DAYS = 2
"""Local dates scanned on each side of a window: a period crossing midnight, a DST shift and a
ready-by lead (at most 6 h) all stay within two days."""


class DesiredState(StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"


class Reason(StrEnum):
    IN_PERIOD = "in-period"
    OUTSIDE_PERIODS = "outside-periods"
    READY_BY = "ready-by"
    """Paused by the periods, but resuming now so that the environment is AVAILABLE when one starts."""
    HOLIDAY_STAY_PAUSED = "holiday-stay-paused"
    HOLIDAY_STAY_UP = "holiday-stay-up"
    OVERRIDE_KEEP_AWAKE = "override-keep-awake"
    OVERRIDE_STAY_PAUSED = "override-stay-paused"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    state: DesiredState
    reason: Reason
    detail: str = ""


class Transition(BaseModel):
    """The next instant at which the desired state changes, and what it changes to."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    at: AwareDatetime
    target: DesiredState
    reason: Reason
    detail: str = ""


def resolve_local(day: dt.date, wall: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant of wall-clock `wall` on `day` in `zone` (DST rules in the module docstring)."""
    first = dt.datetime.combine(day, wall, tzinfo=zone).replace(fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == first.replace(tzinfo=None):
        return instant  # exists; fold=0 picked the first occurrence if it is ambiguous
    # In a gap, fold=0 applies the offset from before the gap: an instant after the gap, but
    # later than its end by the wall time's distance into the gap; fold=1 lands before the gap.
    # The end of the gap is the first second between them with the later offset (zone
    # transitions fall on whole seconds).
    after = int(instant.timestamp())
    before = int(first.replace(fold=1).astimezone(UTC).timestamp())
    later_offset = instant.astimezone(zone).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if dt.datetime.fromtimestamp(middle, zone).utcoffset() == later_offset:
            after = middle
        else:
            before = middle
    return dt.datetime.fromtimestamp(after, UTC)


def ready_lead(durations: Sequence[dt.timedelta], policy: ReadyBy | None) -> dt.timedelta:
    """How early to resume, from the environment's recorded resume durations (oldest first).

    Zero without a ready-by policy. Otherwise the nearest-rank `policy.percentile` of the last
    `policy.window` positive durations plus `policy.margin`, rounded up to a whole minute and
    capped at `policy.max_lead`; `policy.default_lead` with fewer than `policy.min_samples`."""
    if policy is None:
        return dt.timedelta(0)
    recent = [d for d in durations if d > dt.timedelta(0)][-policy.window :]
    if len(recent) < policy.min_samples:
        return policy.default_lead
    ordered = sorted(recent)
    rank = math.ceil(policy.percentile / 100 * len(ordered))
    lead = ordered[max(rank, 1) - 1] + policy.margin
    minutes = math.ceil(lead / dt.timedelta(minutes=1))
    return min(dt.timedelta(minutes=minutes), policy.max_lead)


class _Evaluator:
    """One schedule with its calendar, overrides and lead, asked about many instants."""

    def __init__(
        self,
        schedule: Schedule,
        calendar: HolidayCalendar | None,
        overrides: Sequence[Override],
        lead: dt.timedelta,
    ) -> None:
        if calendar is not None and schedule.calendar not in (None, calendar.name):
            raise ValueError(f"schedule {schedule.name!r} uses calendar {schedule.calendar!r}, not {calendar.name!r}")
        self.schedule = schedule
        self.zone = schedule.zone
        self.calendar = calendar
        # Most recent first; on equal creation times keeping an environment up wins, because a
        # wrong pause deletes an environment while a wrong keep-awake only costs its hourly price.
        self.overrides = sorted(
            overrides, key=lambda o: (o.created_at, o.kind == OverrideKind.KEEP_AWAKE), reverse=True
        )
        self.lead = lead
        self._periods = [(p, frozenset(d.number for d in p.days)) for p in schedule.periods]

    def _local_date(self, instant: dt.datetime) -> dt.date:
        return instant.astimezone(self.zone).date()

    def _occurrences(self, day: dt.date) -> Iterator[tuple[dt.datetime, dt.datetime]]:
        """The running intervals [start, stop) of the periods that start on local `day`."""
        for period, weekdays in self._periods:
            if day.weekday() not in weekdays:
                continue
            stop_day = day + dt.timedelta(days=1) if period.crosses_midnight else day
            yield resolve_local(day, period.start, self.zone), resolve_local(stop_day, period.stop, self.zone)

    def _holiday(self, day: dt.date) -> HolidayAction | None:
        return None if self.calendar is None else self.calendar.action_on(day)

    def _base(self, instant: dt.datetime) -> Decision:
        """Holidays and periods, without overrides and without the ready-by lead."""
        day = self._local_date(instant)
        action = self._holiday(day)
        if action is HolidayAction.STAY_PAUSED:
            return Decision(state=DesiredState.PAUSED, reason=Reason.HOLIDAY_STAY_PAUSED, detail=day.isoformat())
        if action is HolidayAction.STAY_UP:
            return Decision(state=DesiredState.RUNNING, reason=Reason.HOLIDAY_STAY_UP, detail=day.isoformat())
        for offset in range(-_MARGIN_DAYS, 1):
            for start, stop in self._occurrences(day + dt.timedelta(days=offset)):
                if start <= instant < stop:
                    return Decision(state=DesiredState.RUNNING, reason=Reason.IN_PERIOD)
        return Decision(state=DesiredState.PAUSED, reason=Reason.OUTSIDE_PERIODS)

    def _base_bounds(self, first: dt.date, last: dt.date) -> set[dt.datetime]:
        """Every instant at which `_base` may change, for local dates first..last."""
        bounds: set[dt.datetime] = set()
        day = first
        while day <= last:
            if self._holiday(day) is not None:
                bounds.add(resolve_local(day, dt.time(0), self.zone))
                bounds.add(resolve_local(day + dt.timedelta(days=1), dt.time(0), self.zone))
            for start, stop in self._occurrences(day):
                bounds.update((start, stop))
            day += dt.timedelta(days=1)
        return bounds

    def decide(self, instant: dt.datetime) -> Decision:
        for override in self.overrides:
            if override.active_at(instant):
                until = override.until.astimezone(UTC).isoformat()
                if override.kind is OverrideKind.KEEP_AWAKE:
                    return Decision(state=DesiredState.RUNNING, reason=Reason.OVERRIDE_KEEP_AWAKE, detail=until)
                return Decision(state=DesiredState.PAUSED, reason=Reason.OVERRIDE_STAY_PAUSED, detail=until)
        base = self._base(instant)
        if base.state is DesiredState.RUNNING or self.lead <= dt.timedelta(0):
            return base
        # Running within the lead means resuming now. _base is constant between its bounds, so
        # looking at the bounds inside (instant, instant + lead] is exact.
        horizon = instant + self.lead
        nearby = self._base_bounds(self._local_date(instant) - dt.timedelta(days=1), self._local_date(horizon))
        for bound in sorted(b for b in nearby if instant < b <= horizon):
            upcoming = self._base(bound)
            if upcoming.state is DesiredState.RUNNING:
                return Decision(
                    state=DesiredState.RUNNING,
                    reason=Reason.READY_BY,
                    detail=f"{upcoming.reason.value} at {bound.isoformat()}",
                )
        return base

    def candidates(self, after: dt.datetime, through: dt.datetime) -> list[dt.datetime]:
        """Instants in (after, through] at which `decide` may change, in order."""
        first = self._local_date(after) - dt.timedelta(days=_MARGIN_DAYS)
        last = self._local_date(through + self.lead) + dt.timedelta(days=_MARGIN_DAYS)
        bounds = self._base_bounds(first, last)
        shifted = {b - self.lead for b in bounds} if self.lead > dt.timedelta(0) else set()
        for override in self.overrides:
            bounds.update((override.created_at.astimezone(UTC), override.until.astimezone(UTC)))
        return sorted(b for b in bounds | shifted if after < b <= through)


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(UTC)


def desired_state(
    schedule: Schedule,
    calendar: HolidayCalendar | None,
    overrides: Sequence[Override],
    resume_durations: Sequence[dt.timedelta],
    now: dt.datetime,
) -> Decision:
    """Whether the environment should be RUNNING or PAUSED at `now`, and why."""
    lead = ready_lead(resume_durations, schedule.ready_by)
    return _Evaluator(schedule, calendar, overrides, lead).decide(_aware(now))


def next_transition(
    schedule: Schedule,
    calendar: HolidayCalendar | None,
    overrides: Sequence[Override],
    resume_durations: Sequence[dt.timedelta],
    now: dt.datetime,
    horizon: dt.timedelta = HORIZON,
) -> Transition | None:
    """The first instant after `now` at which the desired state differs from the one at `now`.

    The desired state holds on [now, at) and is `target` from `at` on. None when it does not change
    within `horizon` (a schedule that runs around the clock, or a long override)."""
    lead = ready_lead(resume_durations, schedule.ready_by)
    evaluator = _Evaluator(schedule, calendar, overrides, lead)
    start = _aware(now)
    current = evaluator.decide(start).state
    window_start = start
    while window_start < start + horizon:
        window_end = min(window_start + _CHUNK, start + horizon)
        for candidate in evaluator.candidates(window_start, window_end):
            decision = evaluator.decide(candidate)
            if decision.state is not current:
                return Transition(at=candidate, target=decision.state, reason=decision.reason, detail=decision.detail)
        window_start = window_end
    return None


def timeline(
    schedule: Schedule,
    calendar: HolidayCalendar | None,
    overrides: Sequence[Override],
    resume_durations: Sequence[dt.timedelta],
    start: dt.datetime,
    end: dt.datetime,
) -> list[tuple[dt.datetime, dt.datetime, Decision]]:
    """The desired state over [start, end) as consecutive intervals (for reports and savings)."""
    lead = ready_lead(resume_durations, schedule.ready_by)
    evaluator = _Evaluator(schedule, calendar, overrides, lead)
    cursor, stop = _aware(start), _aware(end)
    intervals: list[tuple[dt.datetime, dt.datetime, Decision]] = []
    current = evaluator.decide(cursor)
    for candidate in evaluator.candidates(cursor, stop):
        if candidate == stop:
            break
        decision = evaluator.decide(candidate)
        if decision.state is not current.state:
            intervals.append((cursor, candidate, current))
            cursor, current = candidate, decision
    if cursor < stop:
        intervals.append((cursor, stop, current))
    return intervals


def paused_intervals(
    intervals: Sequence[tuple[dt.datetime, dt.datetime, Decision]],
) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """The PAUSED stretches of a `timeline`, in the shape `pricing.savings` takes."""
    return [(start, end) for start, end, decision in intervals if decision.state is DesiredState.PAUSED]
