"""The schedule model: when each environment of a fleet should run, in its own time zone.

A `Schedule` is a set of weekly `Period`s in one IANA time zone, optionally tied to a
`HolidayCalendar` (dates on which the environment stays paused, or stays up, all local day) and
to a `ReadyBy` policy (resume early enough to be AVAILABLE when a period starts). An `Override`
belongs to one environment and beats the schedule until it expires.

Local times are wall-clock times of the schedule's zone. How they map to instants on the two days
a year the clocks change is decided once, in `evaluate.resolve_local` (see there).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, model_validator

from mwaa_control.pause.models import DrainOptions, EnvironmentName

ScheduleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
"""Short enough to fit a tag value, safe in a DynamoDB key and an EventBridge Scheduler name."""


def _valid_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from error
    return name


TimeZoneName = Annotated[str, AfterValidator(_valid_zone)]


def _whole_minute(value: dt.time) -> dt.time:
    # EventBridge Scheduler's cron has minute resolution; a second-level schedule would be a typo.
    if value.tzinfo is not None:
        raise ValueError("a local time carries no offset: the schedule's timezone applies")
    if value.second or value.microsecond:
        raise ValueError("times are whole minutes (HH:MM)")
    return value


LocalTime = Annotated[dt.time, AfterValidator(_whole_minute)]


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """`datetime.date.weekday()` of this day (Monday is 0)."""
        return _WEEKDAY_ORDER.index(self.value)


_WEEKDAY_ORDER = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(_Frozen):
    """Running time that starts at `start` on each of `days` and ends at `stop`.

    When `stop` is earlier than `start` the period crosses midnight and ends on the next day
    (`fri 22:00-06:00` runs Friday night into Saturday morning); `stop` 00:00 means midnight at
    the end of the start day. `start == stop` is refused: it could mean 24 hours or nothing."""

    days: frozenset[Weekday] = Field(min_length=1)
    start: LocalTime
    stop: LocalTime

    @model_validator(mode="after")
    def _not_empty(self) -> Period:
        if self.start == self.stop:
            raise ValueError("start and stop are equal: use two periods for a full day")
        return self

    @property
    def crosses_midnight(self) -> bool:
        return self.stop <= self.start


class HolidayAction(StrEnum):
    STAY_PAUSED = "stay-paused"
    STAY_UP = "stay-up"


class Holiday(_Frozen):
    """One local calendar day (00:00 to the next 00:00 in the schedule's zone) off the weekly rhythm."""

    date: dt.date
    action: HolidayAction = HolidayAction.STAY_PAUSED
    name: str = Field(default="", max_length=80)


class HolidayCalendar(_Frozen):
    name: ScheduleName
    holidays: tuple[Holiday, ...] = ()

    @model_validator(mode="after")
    def _one_action_per_date(self) -> HolidayCalendar:
        seen: set[dt.date] = set()
        for holiday in self.holidays:
            if holiday.date in seen:
                raise ValueError(f"{holiday.date.isoformat()} is listed twice")
            seen.add(holiday.date)
        return self

    def action_on(self, day: dt.date) -> HolidayAction | None:
        return next((h.action for h in self.holidays if h.date == day), None)


DEFAULT_READY_LEAD = dt.timedelta(minutes=40)
"""Lead before there is history: MWAA takes 20-30 minutes to create an environment (AWS compute
blog, "Automating stopping and starting Amazon MWAA environments"), plus the metadata import."""


class ReadyBy(_Frozen):
    """Resume early, so that the environment is AVAILABLE when a running period starts.

    The lead is the `percentile` of the environment's last `window` recorded resume durations
    (nearest-rank: a duration that was actually observed), plus `margin`, rounded up to a whole
    minute and capped at `max_lead`. With fewer than `min_samples` records it is `default_lead`."""

    percentile: int = Field(default=90, ge=50, le=100)
    min_samples: int = Field(default=3, ge=1, le=100)
    window: int = Field(default=20, ge=1, le=500)
    margin: dt.timedelta = Field(default=dt.timedelta(minutes=5), ge=dt.timedelta(0), le=dt.timedelta(hours=1))
    default_lead: dt.timedelta = Field(default=DEFAULT_READY_LEAD, gt=dt.timedelta(0), le=dt.timedelta(hours=6))
    max_lead: dt.timedelta = Field(default=dt.timedelta(hours=3), gt=dt.timedelta(0), le=dt.timedelta(hours=6))
    """A resume that takes longer than this is broken, not slow: do not start ever earlier."""

    @model_validator(mode="after")
    def _default_within_cap(self) -> ReadyBy:
        if self.default_lead > self.max_lead:
            raise ValueError("default_lead is longer than max_lead")
        if self.min_samples > self.window:
            raise ValueError("min_samples is larger than window")
        return self


class Schedule(_Frozen):
    name: ScheduleName
    timezone: TimeZoneName
    periods: tuple[Period, ...]
    calendar: ScheduleName | None = None
    """Name of the fleet document's holiday calendar that applies, if any."""
    ready_by: ReadyBy | None = None
    drain: DrainOptions | None = None
    """How its scheduled pauses wait for running tasks (seconds). None: the pause workflow's default,
    which waits up to 30 minutes and abandons the pause (nothing deleted) if tasks still run; a
    nightly pause of an environment with long tasks may prefer `on_timeout: proceed` (the backup
    then records the tasks in flight)."""
    accept_rest_path_losses: StrictBool = False
    """Its scheduled pauses of Airflow 3 environments whose workers carry no database credentials
    back up through the REST API and delete on that backup, although run history and redacted
    connection secrets do not come back on resume. False: such a pause fails and deletes nothing."""

    @model_validator(mode="after")
    def _some_period(self) -> Schedule:
        # Not Field(min_length=1): Pydantic would add that error to each invalid period's own.
        if not self.periods:
            raise ValueError("periods: at least one period is needed")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class OverrideKind(StrEnum):
    KEEP_AWAKE = "keep-awake"
    STAY_PAUSED = "stay-paused"


class Override(_Frozen):
    """An operator's exception for one environment, from `created_at` until `until` (exclusive).

    It expires by itself; clearing it earlier means deleting it from the store. When several are
    active at once the most recent wins."""

    environment: EnvironmentName
    kind: OverrideKind
    created_at: AwareDatetime
    until: AwareDatetime
    reason: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _expires_after_creation(self) -> Override:
        if self.until <= self.created_at:
            raise ValueError("until must be later than created_at")
        return self

    def active_at(self, instant: dt.datetime) -> bool:
        return self.created_at <= instant < self.until


def unexpired(overrides: tuple[Override, ...], now: dt.datetime) -> tuple[Override, ...]:
    """The overrides a store should keep: the others can never apply again."""
    return tuple(o for o in overrides if o.until > now)
