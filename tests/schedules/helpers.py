"""Builders shared by the schedule tests."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from mwaa_control.schedules.model import (
    Holiday,
    HolidayAction,
    HolidayCalendar,
    Override,
    OverrideKind,
    Period,
    ReadyBy,
    Schedule,
    Weekday,
)

WEEKDAYS = frozenset({Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI})
EVERY_DAY = frozenset(Weekday)


def office_hours(
    timezone: str = "Europe/Berlin",
    start: str = "08:00",
    stop: str = "18:00",
    days: frozenset[Weekday] = WEEKDAYS,
    calendar: str | None = None,
    ready_by: ReadyBy | None = None,
) -> Schedule:
    return Schedule(
        name="office",
        timezone=timezone,
        periods=(Period(days=days, start=dt.time.fromisoformat(start), stop=dt.time.fromisoformat(stop)),),
        calendar=calendar,
        ready_by=ready_by,
    )


def calendar_of(*days: tuple[dt.date, HolidayAction]) -> HolidayCalendar:
    return HolidayCalendar(name="holidays", holidays=tuple(Holiday(date=d, action=a) for d, a in days))


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """An aware datetime from local wall-clock fields (first occurrence if ambiguous)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


def override(kind: OverrideKind, created_at: dt.datetime, until: dt.datetime) -> Override:
    return Override(environment="analytics-dev", kind=kind, created_at=created_at, until=until)
