"""EventBridge Scheduler for the local cloud: moto stores schedules, this fires them on the ManualClock.

moto's ``scheduler`` backend keeps schedules (create/get/list/update/delete) but never invokes a
target and accepts any expression. :class:`ScheduleFiringEngine` listens to the clock: on every
advance it walks virtual time from the previous instant to the new one and fires each due instant
of every ENABLED schedule, in time order across all schedule groups, as EventBridge Scheduler would
have while that time passed.

Expressions are parsed here by a hand-written parser of AWS's grammar (no croniter: its sixth field
means seconds, and its day-of-week numbering is not AWS's) and evaluated with zoneinfo in the
schedule's ``ScheduleExpressionTimezone``. The rules, as AWS documents them for EventBridge
Scheduler:

- ``at(yyyy-mm-ddThh:mm:ss)``: once, at that local time. StartDate and EndDate are ignored.
- ``rate(value unit)``: every value minutes/hours/days of elapsed time (a day is 24 hours, also
  across a DST change). The first invocation is at StartDate, or at creation when there is none.
- ``cron(minutes hours day-of-month month day-of-week year)``: local wall-clock times in the time
  zone. A time skipped when clocks spring forward is not invoked; a time repeated when they fall
  back is invoked once (here: at its first occurrence, in daylight time).

Choices where AWS documents nothing precise (each stated again where it is made):

- Flexible time windows: AWS invokes at some moment inside the window; the engine always picks its
  start (the scheduled instant), so runs are deterministic. ``OFF`` is exact by definition.
- A nonexistent ``at()`` local time (inside a spring-forward gap) is read with the offset in force
  before the gap (02:30 in a 02:00-03:00 gap fires at 03:30 daylight time): a one-time schedule
  is not silently lost. An ambiguous one fires at its first occurrence.
- An ``at()`` instant already past when the schedule appears never fires.
- A schedule "appears" at the clock instant of the sweep that first sees it: schedules created by
  test code between two advances were created at the clock's current time, and schedules created by
  a target during a sweep at the instant being fired.
- ``ActionAfterCompletion: DELETE``: a one-time schedule is deleted after its invocation (whether
  the target succeeded or not); a recurring one once the clock passes its EndDate.
- Target failures are recorded in :attr:`ScheduleFiringEngine.firings` and logged, never raised into
  ``clock.advance``: RetryPolicy and DeadLetterConfig are not emulated.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from localcloud.clock import ManualClock

logger = logging.getLogger(__name__)

LambdaInvoker = Callable[[str, Any], Any]

_ONE_MICROSECOND = timedelta(microseconds=1)


class ScheduleExpressionError(ValueError):
    """An expression (or time zone) EventBridge Scheduler would refuse."""


# --- expressions ---------------------------------------------------------------------------


def local_to_utc(zone: ZoneInfo, wall: datetime) -> datetime | None:
    """The instant of a local wall time, or None when clocks skip it (spring forward).

    An ambiguous wall time (fall back) resolves to its first occurrence (fold=0).
    """
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return instant


@dataclass(frozen=True)
class AtExpression:
    wall: datetime

    def instant(self, zone: ZoneInfo) -> datetime:
        # A wall time inside a spring-forward gap has no instant of its own; fold=0 reads it with
        # the offset in force before the gap (AWS documents nothing for one-time schedules).
        return self.wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class RateExpression:
    period: timedelta

    def instants(self, anchor: datetime, lower: datetime, upper: datetime) -> Iterator[datetime]:
        """anchor + k * period for k >= 0, within [lower, upper]."""
        k = 0 if lower <= anchor else -((anchor - lower) // self.period)
        instant = anchor + k * self.period
        while instant <= upper:
            yield instant
            instant += self.period


_MONTH_NAMES = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
# AWS numbers days of the week 1-7 from Sunday.
_DAY_NAMES = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _aws_weekday(day: date) -> int:
    return day.isoweekday() % 7 + 1


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    wildcards: str
    names: dict[str, int] = field(default_factory=dict)

    def number(self, token: str) -> int:
        upper = token.upper()
        if upper in self.names:
            return self.names[upper]
        if not token.isdigit():
            raise ScheduleExpressionError(f"{self.name}: {token!r} is not a number in {self.low}-{self.high}")
        value = int(token)
        if not self.low <= value <= self.high:
            raise ScheduleExpressionError(f"{self.name}: {value} is outside {self.low}-{self.high}")
        return value

    def values(self, text: str) -> frozenset[int]:
        """A field made of `*`, numbers, names, `a-b` ranges and `/` steps joined by commas."""
        found: set[int] = set()
        for item in text.split(","):
            if not item:
                raise ScheduleExpressionError(f"{self.name}: empty item in {text!r}")
            base, slash, step_text = item.partition("/")
            if slash and "/" not in self.wildcards:
                raise ScheduleExpressionError(f"{self.name}: '/' is not allowed in this field ({text!r})")
            if base == "*":
                start, end = self.low, self.high
            elif "-" in base:
                if "-" not in self.wildcards:
                    raise ScheduleExpressionError(f"{self.name}: '-' is not allowed in this field ({text!r})")
                first, _, last = base.partition("-")
                start, end = self.number(first), self.number(last)
                if start > end:
                    raise ScheduleExpressionError(f"{self.name}: range {base!r} runs backwards")
            else:
                start = self.number(base)
                # `a/step` runs from a to the end of the field's range
                end = self.high if slash else start
            step = 1
            if slash:
                if not step_text.isdigit() or int(step_text) == 0:
                    raise ScheduleExpressionError(f"{self.name}: step {step_text!r} must be a positive number")
                step = int(step_text)
            found.update(range(start, end + 1, step))
        return frozenset(found)


_MINUTES = _Field("minutes", 0, 59, ",-*/")
_HOURS = _Field("hours", 0, 23, ",-*/")
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, ",-*?/LW")
_MONTH = _Field("month", 1, 12, ",-*/", _MONTH_NAMES)
_DAY_OF_WEEK = _Field("day-of-week", 1, 7, ",-*?L#", _DAY_NAMES)
_YEAR = _Field("year", 1970, 2199, ",-*/")


def _nearest_weekday(year: int, month: int, day: int) -> date | None:
    """`dW`: the weekday nearest day d, never leaving the month; None if the month has no day d."""
    length = calendar.monthrange(year, month)[1]
    if day > length:
        return None
    target = date(year, month, day)
    weekday = target.weekday()  # Monday 0 .. Sunday 6
    if weekday == 5:  # Saturday: the Friday before, or the Monday after when that is the 1st
        return target - timedelta(days=1) if day > 1 else target + timedelta(days=2)
    if weekday == 6:  # Sunday: the Monday after, or the Friday before at the end of the month
        return target + timedelta(days=1) if day < length else target - timedelta(days=2)
    return target


@dataclass(frozen=True)
class _DayOfMonth:
    values: frozenset[int] = frozenset()
    last: bool = False
    last_weekday: bool = False
    nearest_weekday_to: int | None = None

    def matches(self, day: date) -> bool:
        length = calendar.monthrange(day.year, day.month)[1]
        if self.last:
            return day.day == length
        if self.last_weekday:
            return day == _nearest_weekday(day.year, day.month, length)
        if self.nearest_weekday_to is not None:
            return day == _nearest_weekday(day.year, day.month, self.nearest_weekday_to)
        return day.day in self.values

    @classmethod
    def parse(cls, text: str) -> _DayOfMonth:
        upper = text.upper()
        if upper == "L":
            return cls(last=True)
        if upper == "LW":
            return cls(last_weekday=True)
        if upper.endswith("W"):
            day = upper[:-1]
            if not day.isdigit():
                raise ScheduleExpressionError(f"day-of-month: {text!r} must be a day number followed by W")
            return cls(nearest_weekday_to=_DAY_OF_MONTH.number(day))
        if "L" in upper or "W" in upper:
            raise ScheduleExpressionError(f"day-of-month: L and W stand alone (L, LW or dW), not in {text!r}")
        return cls(values=_DAY_OF_MONTH.values(text))


@dataclass(frozen=True)
class _DayOfWeek:
    values: frozenset[int] = frozenset()
    last_of_month: int | None = None
    nth: tuple[int, int] | None = None

    def matches(self, day: date) -> bool:
        weekday = _aws_weekday(day)
        if self.last_of_month is not None:
            length = calendar.monthrange(day.year, day.month)[1]
            return weekday == self.last_of_month and day.day + 7 > length
        if self.nth is not None:
            wanted, occurrence = self.nth
            return weekday == wanted and (day.day - 1) // 7 + 1 == occurrence
        return weekday in self.values

    @classmethod
    def parse(cls, text: str) -> _DayOfWeek:
        upper = text.upper()
        if "#" in upper:
            # AWS: with '#', the field holds exactly one expression ("3#1,6#3" is invalid).
            weekday, _, occurrence = upper.partition("#")
            if "," in upper or not occurrence.isdigit() or not 1 <= int(occurrence) <= 5:
                raise ScheduleExpressionError(f"day-of-week: {text!r} must be one d#n with n in 1-5")
            return cls(nth=(_DAY_OF_WEEK.number(weekday), int(occurrence)))
        if upper == "L":
            # Alone, L is the last day of the week: Saturday.
            return cls(values=frozenset({7}))
        if upper.endswith("L"):
            # dL: the last such weekday of the month (6L = the last Friday).
            return cls(last_of_month=_DAY_OF_WEEK.number(upper[:-1]))
        if "L" in upper:
            raise ScheduleExpressionError(f"day-of-week: L stands alone or after one day (L, dL), not in {text!r}")
        return cls(values=_DAY_OF_WEEK.values(text))


@dataclass(frozen=True)
class CronExpression:
    minutes: frozenset[int]
    hours: frozenset[int]
    day_of_month: _DayOfMonth | None
    months: frozenset[int]
    day_of_week: _DayOfWeek | None
    years: frozenset[int]

    def matches_day(self, day: date) -> bool:
        if day.year not in self.years or day.month not in self.months:
            return False
        if self.day_of_month is not None:
            return self.day_of_month.matches(day)
        assert self.day_of_week is not None
        return self.day_of_week.matches(day)

    def days(self, first: date, last: date) -> Iterator[date]:
        for year in sorted(y for y in self.years if first.year <= y <= last.year):
            for month in sorted(self.months):
                if not (first.year, first.month) <= (year, month) <= (last.year, last.month):
                    continue
                length = calendar.monthrange(year, month)[1]
                start = first.day if (year, month) == (first.year, first.month) else 1
                end = last.day if (year, month) == (last.year, last.month) else length
                for number in range(start, end + 1):
                    day = date(year, month, number)
                    if self.matches_day(day):
                        yield day

    def instants(self, zone: ZoneInfo, lower: datetime, upper: datetime) -> Iterator[datetime]:
        """Every instant in [lower, upper] whose wall time in `zone` the expression names.

        Wall times skipped by a spring-forward are not invoked; repeated ones once (the first).
        """
        # A day either side: a local date's instants can start before or end after its UTC date.
        first = lower.astimezone(zone).date() - timedelta(days=1)
        last = upper.astimezone(zone).date() + timedelta(days=1)
        times = [time(hour, minute) for hour in sorted(self.hours) for minute in sorted(self.minutes)]
        for day in self.days(first, last):
            for wall_time in times:
                instant = local_to_utc(zone, datetime.combine(day, wall_time))
                if instant is None or instant < lower:
                    continue
                if instant > upper:
                    return
                yield instant


Expression = AtExpression | RateExpression | CronExpression

_AT = re.compile(r"at\((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\)")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((.*)\)")
_UNIT = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def parse_schedule_expression(text: str) -> Expression:
    """Parse an EventBridge Scheduler expression; refuse what AWS would refuse."""
    if match := _AT.fullmatch(text):
        try:
            year, month, day, hour, minute, second = (int(part) for part in match.groups())
            return AtExpression(datetime(year, month, day, hour, minute, second))
        except ValueError as error:
            raise ScheduleExpressionError(f"{text!r}: {error}") from None
    if match := _RATE.fullmatch(text):
        value = int(match.group(1))
        if value == 0:
            raise ScheduleExpressionError(f"{text!r}: the rate must be a positive number")
        return RateExpression(value * _UNIT[match.group(2).rstrip("s")])
    if match := _CRON.fullmatch(text):
        return _parse_cron(match.group(1), text)
    raise ScheduleExpressionError(
        f"{text!r} is not an EventBridge Scheduler expression: use at(yyyy-mm-ddThh:mm:ss), "
        "rate(value minutes|hours|days) or cron(minutes hours day-of-month month day-of-week year)"
    )


def _parse_cron(body: str, text: str) -> CronExpression:
    fields = body.split()
    if len(fields) != 6:
        raise ScheduleExpressionError(
            f"{text!r}: cron takes 6 fields (minutes hours day-of-month month day-of-week year), got {len(fields)}"
        )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    for name, value in (("minutes", minutes), ("hours", hours), ("month", month), ("year", year)):
        if "?" in value:
            raise ScheduleExpressionError(f"{text!r}: '?' is allowed only in day-of-month and day-of-week ({name})")
    # AWS: exactly one of day-of-month and day-of-week is '?'.
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ScheduleExpressionError(
            f"{text!r}: use '?' in exactly one of day-of-month and day-of-week (a value or * in the other)"
        )
    try:
        return CronExpression(
            minutes=_MINUTES.values(minutes),
            hours=_HOURS.values(hours),
            day_of_month=None if day_of_month == "?" else _DayOfMonth.parse(day_of_month),
            months=_MONTH.values(month),
            day_of_week=None if day_of_week == "?" else _DayOfWeek.parse(day_of_week),
            years=_YEAR.values(year),
        )
    except ScheduleExpressionError as error:
        raise ScheduleExpressionError(f"{text!r}: {error}") from None


def parse_timezone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleExpressionError(f"ScheduleExpressionTimezone {name!r} is not an IANA time zone") from None


# --- schedules -----------------------------------------------------------------------------


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    raise TypeError(f"not a date: {value!r}")


@dataclass(frozen=True)
class ScheduleDefinition:
    """One schedule as GetSchedule describes it, with its expression parsed."""

    group: str
    name: str
    arn: str
    expression: Expression
    zone: ZoneInfo
    enabled: bool
    start: datetime | None
    end: datetime | None
    target: dict[str, Any]
    delete_after_completion: bool
    # moto's own timestamps: they tell a re-created or updated schedule from the one seen before
    identity: Any
    revision: Any

    @classmethod
    def from_api(cls, described: dict[str, Any]) -> ScheduleDefinition:
        name = described["Name"]
        try:
            expression = parse_schedule_expression(described["ScheduleExpression"])
            zone = parse_timezone(described.get("ScheduleExpressionTimezone"))
        except ScheduleExpressionError as error:
            raise ScheduleExpressionError(f"schedule {described.get('GroupName')}/{name}: {error}") from None
        return cls(
            group=described.get("GroupName") or "default",
            name=name,
            arn=described.get("Arn", ""),
            expression=expression,
            zone=zone,
            enabled=described.get("State", "ENABLED") == "ENABLED",
            start=_utc(described.get("StartDate")),
            end=_utc(described.get("EndDate")),
            target=described["Target"],
            delete_after_completion=described.get("ActionAfterCompletion") == "DELETE",
            identity=described.get("CreationDate"),
            revision=described.get("LastModificationDate"),
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.name)

    @property
    def one_time(self) -> bool:
        return isinstance(self.expression, AtExpression)

    def instants(self, appeared: datetime, lower: datetime, upper: datetime) -> Iterator[datetime]:
        """Fire instants in [lower, upper] of a schedule that appeared at `appeared`.

        A flexible time window changes nothing here: the engine fires at the window's start.
        """
        if not self.enabled:
            return
        lower = max(lower, appeared)
        if isinstance(self.expression, AtExpression):
            # StartDate and EndDate do not apply to one-time schedules.
            instant = self.expression.instant(self.zone)
            if lower <= instant <= upper:
                yield instant
            return
        if self.start is not None:
            lower = max(lower, self.start)
        if self.end is not None:
            # EndDate: the schedule invokes its target only before it.
            upper = min(upper, self.end - _ONE_MICROSECOND)
        if lower > upper:
            return
        if isinstance(self.expression, RateExpression):
            # The first invocation is at StartDate, or at once when there is none.
            anchor = self.start if self.start is not None else appeared
            yield from self.expression.instants(anchor, lower, upper)
        else:
            # A cron time equal to the instant the schedule appeared has passed already.
            yield from self.expression.instants(self.zone, max(lower, appeared + _ONE_MICROSECOND), upper)


@dataclass
class Firing:
    """One invocation of a schedule's target."""

    schedule: str
    group: str
    scheduled_for: datetime
    target_arn: str
    outcome: Any = None
    error: str | None = None


@dataclass
class _Tracked:
    definition: ScheduleDefinition
    appeared: datetime
    # every instant <= handled_until has been considered (fired, or skipped while disabled)
    handled_until: datetime | None = None
    pending: Iterator[datetime] | None = None
    next_instant: datetime | None = None

    def peek(self, upper: datetime) -> datetime | None:
        if self.pending is None:
            lower = self.appeared if self.handled_until is None else self.handled_until + _ONE_MICROSECOND
            self.pending = self.definition.instants(self.appeared, lower, upper)
            self.next_instant = next(self.pending, None)
        return self.next_instant

    def consume(self, instant: datetime) -> None:
        self.handled_until = instant
        assert self.pending is not None
        self.next_instant = next(self.pending, None)

    def settle(self, upper: datetime) -> None:
        self.handled_until = upper
        self.pending = None
        self.next_instant = None


class CatchUpLimitExceeded(RuntimeError):
    pass


class ScheduleFiringEngine:
    """Fires moto's EventBridge Scheduler schedules on the local cloud's clock.

    ``invoke_lambda(function_arn, event)`` runs a Lambda target in-process (the local cloud passes
    ``LocalLambda.invoke``). Step Functions targets are started through ``stepfunctions``.
    ``max_firings_per_advance`` bounds one advance's catch-up (None: every missed instant fires);
    beyond it the advance raises :class:`CatchUpLimitExceeded` after firing that many, and the next
    advance carries on from there.
    """

    def __init__(
        self,
        clock: ManualClock,
        scheduler: Any,
        stepfunctions: Any,
        invoke_lambda: LambdaInvoker,
        *,
        max_firings_per_advance: int | None = None,
        notified: bool = False,
    ) -> None:
        """``notified``: the owner calls :meth:`changed` after every call that creates, updates or
        deletes a schedule, so an advance lists schedules only when something changed (an advance
        costs microseconds instead of a ListSchedules); without it every advance lists them."""
        self._clock = clock
        self._notified = notified
        self._dirty = True
        self._scheduler = scheduler
        self._stepfunctions = stepfunctions
        self._invoke_lambda = invoke_lambda
        self._limit = max_firings_per_advance
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._swept_until = clock.now()
        self._lock = threading.RLock()
        self._sweeping = False
        self._closed = False
        self.firings: list[Firing] = []

    def attach(self) -> Self:
        """Start firing on every clock advance; schedules existing now appeared now."""
        self.sync()
        self._clock.on_advance(self._on_advance)
        return self

    def close(self) -> None:
        """Stop for good (ManualClock cannot unregister a listener; this one becomes a no-op)."""
        self._closed = True

    def sync(self) -> None:
        """Note schedules created since the last sweep as having appeared at the clock's time."""
        with self._lock:
            self._refresh(self._swept_until)

    def changed(self) -> None:
        """A schedule was created, updated or deleted (see ``notified``)."""
        self._dirty = True

    def failures(self) -> list[Firing]:
        return [firing for firing in self.firings if firing.error is not None]

    def _on_advance(self) -> None:
        if not self._closed:
            self.run_due()

    def run_due(self) -> list[Firing]:
        """Fire every due instant up to the clock's time, oldest first; returns what fired."""
        with self._lock:
            if self._sweeping:
                # A target advanced the clock: the sweep under way reads the clock again when done.
                return []
            self._sweeping = True
            fired: list[Firing] = []
            try:
                while True:
                    upper = self._clock.now()
                    fired += self._sweep(upper)
                    if self._clock.now() == upper:
                        return fired
            finally:
                self._sweeping = False

    # --- internals -------------------------------------------------------------------------
    def _sweep(self, upper: datetime) -> list[Firing]:
        fired: list[Firing] = []
        self._refresh(self._swept_until)
        while True:
            due = [(t.peek(upper), key) for key, t in self._tracked.items()]
            candidates = [(instant, key) for instant, key in due if instant is not None]
            if not candidates:
                break
            instant, key = min(candidates)
            if self._limit is not None and len(fired) >= self._limit:
                raise CatchUpLimitExceeded(
                    f"more than {self._limit} schedule invocations in one clock advance (next: {key} at {instant})"
                )
            tracked = self._tracked[key]
            tracked.consume(instant)
            fired.append(self._fire(tracked.definition, instant))
            if tracked.definition.one_time and tracked.definition.delete_after_completion:
                self._delete(tracked.definition)
            # A target may have created, changed or deleted schedules: they did so at `instant`.
            self._refresh(instant)
        for key, tracked in list(self._tracked.items()):
            tracked.settle(upper)
            definition = tracked.definition
            if (
                definition.delete_after_completion
                and not definition.one_time
                and definition.end is not None
                and definition.end <= upper
            ):
                self._delete(definition)
                del self._tracked[key]
        self._swept_until = upper
        return fired

    def _refresh(self, at: datetime) -> None:
        """Bring the tracked set in line with moto; new or changed schedules take effect at `at`."""
        if self._notified and not self._dirty:
            return
        self._dirty = False  # before listing: a change made while listing marks it again
        listed: dict[tuple[str, str], dict[str, Any]] = {}
        for page in self._scheduler.get_paginator("list_schedules").paginate():
            for summary in page["Schedules"]:
                listed[(summary.get("GroupName") or "default", summary["Name"])] = summary
        for key in set(self._tracked) - set(listed):
            del self._tracked[key]
        for key, summary in listed.items():
            known = self._tracked.get(key)
            if known is not None and (known.definition.identity, known.definition.revision) == (
                summary.get("CreationDate"),
                summary.get("LastModificationDate"),
            ):
                continue
            described = self._scheduler.get_schedule(GroupName=key[0], Name=key[1])
            definition = ScheduleDefinition.from_api(described)
            if known is None or known.definition.identity != definition.identity:
                self._tracked[key] = _Tracked(definition, appeared=at)
            else:
                # Updated in place: the change applies from `at`; instants before stay handled.
                # A rate keeps the anchor it had (AWS does not document re-anchoring on update).
                handled = at - _ONE_MICROSECOND
                if known.handled_until is not None:
                    handled = max(handled, known.handled_until)
                self._tracked[key] = _Tracked(definition, appeared=known.appeared, handled_until=handled)

    def _fire(self, definition: ScheduleDefinition, instant: datetime) -> Firing:
        target_arn: str = definition.target["Arn"]
        firing = Firing(definition.name, definition.group, instant, target_arn)
        raw_input = definition.target.get("Input")
        try:
            if ":states:" in target_arn and ":stateMachine:" in target_arn:
                started = self._stepfunctions.start_execution(
                    stateMachineArn=target_arn,
                    name=_execution_name(definition.name, instant),
                    input=raw_input if raw_input is not None else "{}",
                )
                firing.outcome = started["executionArn"]
            elif ":lambda:" in target_arn and ":function:" in target_arn:
                firing.outcome = self._invoke_lambda(target_arn, _lambda_event(raw_input))
            else:
                raise ValueError(f"target {target_arn!r} is not a state machine or a Lambda function")
        except Exception as error:  # a failed invocation is recorded (and logged), as AWS would log it
            firing.error = f"{type(error).__name__}: {error}"
            logger.warning("schedule %s/%s at %s: %s", definition.group, definition.name, instant, firing.error)
        self.firings.append(firing)
        return firing

    def _delete(self, definition: ScheduleDefinition) -> None:
        self._scheduler.delete_schedule(GroupName=definition.group, Name=definition.name)


def _execution_name(schedule: str, instant: datetime) -> str:
    # Step Functions names: at most 80 characters, unique per state machine.
    return f"{schedule[:44]}-{instant:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _lambda_event(raw_input: str | None) -> Any:
    """The payload a Lambda target receives: the target's Input (JSON when it parses), else {}."""
    if raw_input is None:
        return {}
    try:
        return json.loads(raw_input)
    except json.JSONDecodeError:
        return raw_input


__all__ = [
    "AtExpression",
    "CatchUpLimitExceeded",
    "CronExpression",
    "Firing",
    "RateExpression",
    "ScheduleDefinition",
    "ScheduleExpressionError",
    "ScheduleFiringEngine",
    "local_to_utc",
    "parse_schedule_expression",
    "parse_timezone",
]
