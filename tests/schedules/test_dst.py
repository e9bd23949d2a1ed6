"""Every DST transition of Europe/Berlin, America/New_York and Australia/Sydney in 2026-2027.

The transitions are found here by scanning UTC hours (independently of the code under test). For
each one a period starts inside the skipped or repeated local hour: a start that does not exist
begins at the first instant after the gap; an ambiguous one at its first occurrence."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from mwaa_control.schedules.evaluate import DesiredState, desired_state, next_transition, resolve_local, timeline
from tests.schedules.helpers import EVERY_DAY, office_hours

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney")


def transitions(zone_name: str) -> list[tuple[dt.datetime, dt.timedelta, dt.timedelta]]:
    """(instant, offset before, offset after) of every offset change in 2026-2027."""
    zone = ZoneInfo(zone_name)
    found = []
    hour = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    previous = hour.astimezone(zone).utcoffset()
    while hour < dt.datetime(2028, 1, 1, tzinfo=dt.UTC):
        hour += dt.timedelta(hours=1)
        offset = hour.astimezone(zone).utcoffset()
        assert offset is not None and previous is not None
        if offset != previous:
            found.append((hour, previous, offset))
        previous = offset
    return found


CASES = [(zone, *t) for zone in ZONES for t in transitions(zone)]


def test_four_transitions_per_zone() -> None:
    assert len(CASES) == 12


@pytest.mark.parametrize(("zone_name", "instant", "before", "after"), CASES, ids=str)
def test_a_period_starting_inside_the_changed_hour(
    zone_name: str, instant: dt.datetime, before: dt.timedelta, after: dt.timedelta
) -> None:
    zone = ZoneInfo(zone_name)
    # Given the local wall time 30 minutes into the skipped (or repeated) hour
    changed_wall = (instant + min(before, after)).replace(tzinfo=None)
    # for a gap, local clocks jump from `changed_wall`; for a fall-back they repeat from it
    start_wall = (changed_wall + dt.timedelta(minutes=30)).time()
    day = changed_wall.date()
    schedule = office_hours(timezone=zone_name, start=start_wall.isoformat("minutes"), stop="08:00", days=EVERY_DAY)
    naive_start = dt.datetime.combine(day, start_wall)
    if after > before:
        # When the clocks spring forward, the start time does not exist:
        # Then the period starts at the first instant after the gap, the transition itself
        expected_start = instant
        expected_length = (
            dt.datetime.combine(day, dt.time(8)) - naive_start - (after - before) + dt.timedelta(minutes=30)
        )
    else:
        # When the clocks fall back, the start time happens twice: Then the first occurrence
        expected_start = (naive_start - before).replace(tzinfo=dt.UTC)
        expected_length = dt.datetime.combine(day, dt.time(8)) - naive_start + (before - after)
    assert resolve_local(day, start_wall, zone) == expected_start
    found = next_transition(schedule, None, (), (), expected_start - dt.timedelta(hours=3))
    assert found is not None
    assert (found.at, found.target) == (expected_start, DesiredState.RUNNING)
    assert desired_state(schedule, None, (), (), expected_start - dt.timedelta(seconds=1)).state is DesiredState.PAUSED
    # And the day's running time is longer or shorter by the shift
    day_start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    running = [
        b - a
        for a, b, d in timeline(schedule, None, (), (), day_start, day_start + dt.timedelta(hours=12))
        if d.state is DesiredState.RUNNING
    ]
    assert running == [expected_length]


@pytest.mark.parametrize(("zone_name", "instant", "before", "after"), CASES, ids=str)
def test_office_hours_around_the_transition_keep_their_wall_clock_times(
    zone_name: str, instant: dt.datetime, before: dt.timedelta, after: dt.timedelta
) -> None:
    # Given 07:00-19:00 every day: after the change the period still starts at 07:00 local time
    zone = ZoneInfo(zone_name)
    schedule = office_hours(timezone=zone_name, start="07:00", stop="19:00", days=EVERY_DAY)
    found = next_transition(schedule, None, (), (), instant)
    assert found is not None
    local_start = found.at.astimezone(zone)
    assert (local_start.hour, local_start.minute, local_start.utcoffset()) == (7, 0, after)
    previous_day = next_transition(schedule, None, (), (), instant - dt.timedelta(days=1))
    assert previous_day is not None
    assert found.at - previous_day.at in (dt.timedelta(hours=24), dt.timedelta(hours=24) - (after - before))
