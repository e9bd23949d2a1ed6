"""Property tests over random schedules, calendars, overrides, histories and instants: the desired
state holds from now until the next transition and is the transition's target at it."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mwaa_control.schedules.evaluate import desired_state, next_transition, resolve_local
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

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Santiago",  # DST changes at local midnight: holidays start in a gap
    "Asia/Kolkata",
    "UTC",
)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=730)

times = st.builds(dt.time, st.integers(0, 23), st.sampled_from((0, 15, 30, 45)))
instants = st.integers(0, int(SPAN.total_seconds())).map(lambda s: START + dt.timedelta(seconds=s))


def _period(days: frozenset[Weekday], start: dt.time, stop: dt.time) -> Period | None:
    return None if start == stop else Period(days=days, start=start, stop=stop)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[Schedule, HolidayCalendar, tuple[Override, ...], list[dt.timedelta], dt.datetime]:
    now = draw(instants)
    raw = draw(
        st.lists(
            st.tuples(st.frozensets(st.sampled_from(list(Weekday)), min_size=1), times, times), min_size=1, max_size=3
        )
    )
    built = [p for p in (_period(*r) for r in raw) if p is not None] or [
        Period(days=frozenset({Weekday.MON}), start=dt.time(9), stop=dt.time(17))
    ]
    ready_by = draw(st.none() | st.builds(ReadyBy, percentile=st.integers(50, 100), min_samples=st.integers(1, 5)))
    schedule = Schedule(
        name="random", timezone=draw(st.sampled_from(ZONES)), periods=tuple(built), calendar="days", ready_by=ready_by
    )
    today = now.astimezone(schedule.zone).date()
    holiday_days = draw(st.sets(st.integers(-3, 10), max_size=4))
    calendar = HolidayCalendar(
        name="days",
        holidays=tuple(
            Holiday(date=today + dt.timedelta(days=d), action=draw(st.sampled_from(list(HolidayAction))))
            for d in sorted(holiday_days)
        ),
    )
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        created = now + dt.timedelta(minutes=draw(st.integers(-3000, 3000)))
        until = created + dt.timedelta(minutes=draw(st.integers(1, 6000)))
        kind = draw(st.sampled_from(list(OverrideKind)))
        overrides.append(Override(environment="env", kind=kind, created_at=created, until=until))
    history = draw(st.lists(st.integers(60, 4 * 3600).map(lambda s: dt.timedelta(seconds=s)), max_size=8))
    return schedule, calendar, tuple(overrides), history, now


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), fractions=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=12))
def test_state_holds_until_the_next_transition_and_flips_at_it(
    scenario: tuple[Schedule, HolidayCalendar, tuple[Override, ...], list[dt.timedelta], dt.datetime],
    fractions: list[float],
) -> None:
    schedule, calendar, overrides, history, now = scenario
    current = desired_state(schedule, calendar, overrides, history, now).state
    transition = next_transition(schedule, calendar, overrides, history, now, horizon=dt.timedelta(days=30))
    end = transition.at if transition is not None else now + dt.timedelta(days=30)
    # No flip before it: at random instants in [now, end) and just before it
    probes = [now + (end - now) * f for f in fractions] + [end - dt.timedelta(microseconds=1)]
    for probe in probes:
        if now <= probe < end:
            assert desired_state(schedule, calendar, overrides, history, probe).state is current, probe
    if transition is not None:
        # A flip at it, to its target, and the transition from there is strictly later
        assert transition.at > now
        assert transition.target is not current
        assert desired_state(schedule, calendar, overrides, history, transition.at).state is transition.target
        following = next_transition(
            schedule, calendar, overrides, history, transition.at, horizon=dt.timedelta(days=30)
        )
        assert following is None or (following.at > transition.at and following.target is current)


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    day=st.dates(dt.date(2026, 1, 1), dt.date(2027, 12, 31)),
    wall=st.builds(dt.time, st.integers(0, 23), st.integers(0, 59)),
)
def test_resolved_local_times_show_the_wall_time_or_the_end_of_a_gap(zone: str, day: dt.date, wall: dt.time) -> None:
    schedule = Schedule(
        name="z", timezone=zone, periods=(Period(days=frozenset(Weekday), start=dt.time(0), stop=dt.time(1)),)
    )
    instant = resolve_local(day, wall, schedule.zone)
    shown = instant.astimezone(schedule.zone)
    if shown.date() == day and shown.time() == wall:
        # an existing wall time; if ambiguous, its first occurrence
        assert shown.fold == 0
    else:
        # a skipped wall time: the instant is the end of the gap, the wall time falls inside the gap
        just_before = (instant - dt.timedelta(seconds=1)).astimezone(schedule.zone)
        assert just_before.utcoffset() != shown.utcoffset()
        assert just_before.replace(tzinfo=None) < dt.datetime.combine(day, wall) < shown.replace(tzinfo=None)
