"""Desired state and next transition: periods, holidays, overrides and ready-by (Given/When/Then)."""

from __future__ import annotations

import datetime as dt

import pytest

from mwaa_control.schedules.evaluate import (
    DesiredState,
    Reason,
    desired_state,
    next_transition,
    ready_lead,
    timeline,
)
from mwaa_control.schedules.model import HolidayAction, OverrideKind, Period, ReadyBy, Schedule, Weekday
from tests.schedules.helpers import EVERY_DAY, calendar_of, local, office_hours, override

BERLIN = "Europe/Berlin"
MINUTES = dt.timedelta(minutes=1)


def test_inside_and_outside_a_period_in_the_schedules_time_zone() -> None:
    # Given office hours 08:00-18:00 in Berlin (CET, UTC+1, in January)
    schedule = office_hours()
    # When it is 08:30 in Berlin (07:30 UTC) on a Monday
    monday_morning = dt.datetime(2026, 1, 5, 7, 30, tzinfo=dt.UTC)
    decision = desired_state(schedule, None, (), (), monday_morning)
    # Then the environment runs, and pauses at 18:00 Berlin time (17:00 UTC)
    assert (decision.state, decision.reason) == (DesiredState.RUNNING, Reason.IN_PERIOD)
    transition = next_transition(schedule, None, (), (), monday_morning)
    assert transition is not None
    assert transition.at == dt.datetime(2026, 1, 5, 17, 0, tzinfo=dt.UTC)
    assert transition.target is DesiredState.PAUSED
    # And 07:30 Berlin time (06:30 UTC) is before the period
    assert desired_state(schedule, None, (), (), monday_morning - dt.timedelta(hours=1)).state is DesiredState.PAUSED


def test_weekend_is_skipped_to_monday() -> None:
    schedule = office_hours()
    friday_evening = local(BERLIN, 2026, 1, 9, 18, 0)
    transition = next_transition(schedule, None, (), (), friday_evening)
    assert transition is not None
    assert transition.at == local(BERLIN, 2026, 1, 12, 8, 0)
    assert transition.target is DesiredState.RUNNING


def test_a_period_crossing_midnight_ends_the_next_morning() -> None:
    # Given a Friday-night period 22:00-06:00
    schedule = office_hours(start="22:00", stop="06:00", days=frozenset({Weekday.FRI}))
    # Then it runs on Saturday 05:59 and is paused at 06:00, and does not run on Friday 05:00
    assert desired_state(schedule, None, (), (), local(BERLIN, 2026, 1, 10, 5, 59)).state is DesiredState.RUNNING
    transition = next_transition(schedule, None, (), (), local(BERLIN, 2026, 1, 9, 23, 0))
    assert transition is not None and transition.at == local(BERLIN, 2026, 1, 10, 6, 0)
    assert desired_state(schedule, None, (), (), local(BERLIN, 2026, 1, 9, 5, 0)).state is DesiredState.PAUSED


def test_stop_at_midnight_means_the_end_of_the_start_day() -> None:
    schedule = office_hours(start="18:00", stop="00:00", days=frozenset({Weekday.MON}))
    transition = next_transition(schedule, None, (), (), local(BERLIN, 2026, 1, 5, 19, 0))
    assert transition is not None and transition.at == local(BERLIN, 2026, 1, 6, 0, 0)


def test_a_holiday_keeps_the_environment_paused_all_day() -> None:
    # Given office hours with Christmas (a Friday) as a stay-paused holiday
    schedule = office_hours(calendar="holidays")
    calendar = calendar_of((dt.date(2026, 12, 25), HolidayAction.STAY_PAUSED))
    # When it is 10:00 on Christmas Day
    decision = desired_state(schedule, calendar, (), (), local(BERLIN, 2026, 12, 25, 10, 0))
    # Then it stays paused, because of the holiday
    assert (decision.state, decision.reason) == (DesiredState.PAUSED, Reason.HOLIDAY_STAY_PAUSED)
    # And from Thursday evening the next resume is Monday 08:00, not Friday 08:00
    transition = next_transition(schedule, calendar, (), (), local(BERLIN, 2026, 12, 24, 18, 0))
    assert transition is not None
    assert transition.at == local(BERLIN, 2026, 12, 28, 8, 0)
    # And without the calendar it would have resumed on Friday
    plain = next_transition(office_hours(), None, (), (), local(BERLIN, 2026, 12, 24, 18, 0))
    assert plain is not None and plain.at == local(BERLIN, 2026, 12, 25, 8, 0)


def test_a_holiday_that_stays_up_runs_the_whole_local_day() -> None:
    schedule = office_hours(calendar="holidays")
    calendar = calendar_of((dt.date(2026, 3, 7), HolidayAction.STAY_UP))  # a Saturday
    transition = next_transition(schedule, calendar, (), (), local(BERLIN, 2026, 3, 6, 18, 0))
    assert transition is not None
    assert (transition.at, transition.target) == (local(BERLIN, 2026, 3, 7, 0, 0), DesiredState.RUNNING)
    assert transition.reason is Reason.HOLIDAY_STAY_UP
    after = next_transition(schedule, calendar, (), (), transition.at)
    assert after is not None and after.at == local(BERLIN, 2026, 3, 8, 0, 0)


def test_a_stay_paused_override_that_expires_in_the_middle_of_a_period() -> None:
    # Given an operator keeps the environment paused until Tuesday 12:00
    schedule = office_hours()
    hold = override(OverrideKind.STAY_PAUSED, local(BERLIN, 2026, 1, 5, 20, 0), local(BERLIN, 2026, 1, 6, 12, 0))
    # When it is Tuesday 10:00, inside the period
    decision = desired_state(schedule, None, (hold,), (), local(BERLIN, 2026, 1, 6, 10, 0))
    # Then it stays paused because of the override, and resumes when the override expires
    assert (decision.state, decision.reason) == (DesiredState.PAUSED, Reason.OVERRIDE_STAY_PAUSED)
    transition = next_transition(schedule, None, (hold,), (), local(BERLIN, 2026, 1, 6, 7, 0))
    assert transition is not None
    assert transition.at == local(BERLIN, 2026, 1, 6, 12, 0)
    assert (transition.target, transition.reason) == (DesiredState.RUNNING, Reason.IN_PERIOD)


def test_a_keep_awake_override_that_expires_in_the_middle_of_a_period_hands_over_to_the_period() -> None:
    # Given a keep-awake override from 06:00 to 10:00 on a weekday (the period starts at 08:00)
    schedule = office_hours()
    awake = override(OverrideKind.KEEP_AWAKE, local(BERLIN, 2026, 1, 6, 6, 0), local(BERLIN, 2026, 1, 6, 10, 0))
    # Then it runs from 06:00 because of the override, then because of the period, until 18:00
    early = desired_state(schedule, None, (awake,), (), local(BERLIN, 2026, 1, 6, 9, 59))
    assert (early.state, early.reason) == (DesiredState.RUNNING, Reason.OVERRIDE_KEEP_AWAKE)
    later = desired_state(schedule, None, (awake,), (), local(BERLIN, 2026, 1, 6, 10, 0))
    assert (later.state, later.reason) == (DesiredState.RUNNING, Reason.IN_PERIOD)
    transition = next_transition(schedule, None, (awake,), (), local(BERLIN, 2026, 1, 6, 6, 30))
    assert transition is not None and transition.at == local(BERLIN, 2026, 1, 6, 18, 0)


def test_keep_awake_after_hours_expires_into_a_pause() -> None:
    schedule = office_hours()
    awake = override(OverrideKind.KEEP_AWAKE, local(BERLIN, 2026, 1, 6, 17, 0), local(BERLIN, 2026, 1, 6, 21, 0))
    transition = next_transition(schedule, None, (awake,), (), local(BERLIN, 2026, 1, 6, 17, 30))
    assert transition is not None
    assert (transition.at, transition.target) == (local(BERLIN, 2026, 1, 6, 21, 0), DesiredState.PAUSED)
    assert transition.reason is Reason.OUTSIDE_PERIODS


def test_the_most_recent_override_wins() -> None:
    schedule = office_hours()
    awake = override(OverrideKind.KEEP_AWAKE, local(BERLIN, 2026, 1, 6, 1, 0), local(BERLIN, 2026, 1, 7, 0, 0))
    hold = override(OverrideKind.STAY_PAUSED, local(BERLIN, 2026, 1, 6, 9, 0), local(BERLIN, 2026, 1, 6, 11, 0))
    assert desired_state(schedule, None, (awake, hold), (), local(BERLIN, 2026, 1, 6, 10, 0)).state is (
        DesiredState.PAUSED
    )
    assert desired_state(schedule, None, (awake, hold), (), local(BERLIN, 2026, 1, 6, 20, 0)).state is (
        DesiredState.RUNNING
    )


READY = ReadyBy(percentile=90, min_samples=3, margin=dt.timedelta(minutes=5), default_lead=dt.timedelta(minutes=40))


def test_ready_by_resumes_early_by_the_p90_of_recorded_resume_durations() -> None:
    # Given ten recorded resumes, the 9th-slowest of which took 50 minutes
    durations = [dt.timedelta(minutes=m) for m in (24, 26, 28, 30, 31, 33, 35, 41, 50, 70)]
    schedule = office_hours(ready_by=READY)
    # When we ask on Monday at 06:00 for the next transition
    transition = next_transition(schedule, None, (), durations, local(BERLIN, 2026, 1, 5, 6, 0))
    # Then the resume starts 55 minutes (p90 50 + 5 margin) before 08:00
    assert transition is not None
    assert transition.at == local(BERLIN, 2026, 1, 5, 7, 5)
    assert (transition.target, transition.reason) == (DesiredState.RUNNING, Reason.READY_BY)
    assert desired_state(schedule, None, (), durations, local(BERLIN, 2026, 1, 5, 7, 4)).state is DesiredState.PAUSED
    # And the pause at 18:00 is not moved
    evening = next_transition(schedule, None, (), durations, local(BERLIN, 2026, 1, 5, 12, 0))
    assert evening is not None and evening.at == local(BERLIN, 2026, 1, 5, 18, 0)


def test_ready_by_uses_the_default_lead_without_enough_history() -> None:
    schedule = office_hours(ready_by=READY)
    for history in ([], [dt.timedelta(minutes=90), dt.timedelta(minutes=90)]):
        transition = next_transition(schedule, None, (), history, local(BERLIN, 2026, 1, 5, 6, 0))
        assert transition is not None
        assert transition.at == local(BERLIN, 2026, 1, 5, 7, 20)


def test_ready_lead_is_capped_and_rounded_up_to_a_minute() -> None:
    policy = ReadyBy(max_lead=dt.timedelta(hours=2), margin=dt.timedelta(0))
    assert ready_lead([dt.timedelta(hours=5)] * 5, policy) == dt.timedelta(hours=2)
    assert ready_lead([dt.timedelta(minutes=20, seconds=1)] * 5, policy) == dt.timedelta(minutes=21)
    assert ready_lead([dt.timedelta(minutes=20)] * 5, None) == dt.timedelta(0)


def test_ready_by_does_not_resume_early_for_a_stay_paused_holiday() -> None:
    schedule = office_hours(calendar="holidays", ready_by=READY)
    calendar = calendar_of((dt.date(2026, 12, 25), HolidayAction.STAY_PAUSED))
    transition = next_transition(schedule, calendar, (), (), local(BERLIN, 2026, 12, 24, 19, 0))
    assert transition is not None
    assert transition.at == local(BERLIN, 2026, 12, 28, 7, 20)


def test_a_schedule_that_never_changes_has_no_next_transition() -> None:
    around_the_clock = Schedule(
        name="always",
        timezone="UTC",
        periods=(
            Period(days=EVERY_DAY, start=dt.time(0), stop=dt.time(12)),
            Period(days=EVERY_DAY, start=dt.time(12), stop=dt.time(0)),
        ),
    )
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert desired_state(around_the_clock, None, (), (), now).state is DesiredState.RUNNING
    assert next_transition(around_the_clock, None, (), (), now, horizon=dt.timedelta(days=30)) is None


def test_timeline_of_a_week() -> None:
    schedule = office_hours()
    week = timeline(schedule, None, (), (), local(BERLIN, 2026, 1, 5), local(BERLIN, 2026, 1, 12))
    running = [(a, b) for a, b, d in week if d.state is DesiredState.RUNNING]
    assert len(running) == 5
    assert sum((b - a for a, b in running), dt.timedelta(0)) == dt.timedelta(hours=50)
    assert week[0][0] == local(BERLIN, 2026, 1, 5) and week[-1][1] == local(BERLIN, 2026, 1, 12)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        desired_state(office_hours(), None, (), (), dt.datetime(2026, 1, 5, 8, 0))
