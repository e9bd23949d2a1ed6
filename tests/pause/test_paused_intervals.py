"""The paused intervals the state table keeps for savings: one open interval at most, closed by the
resume that recreates the environment, bounded in age and count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mwaa_control.pause.models import (
    PAUSED_INTERVALS_DAYS,
    PAUSED_INTERVALS_KEPT,
    EnvironmentRecord,
    PausedInterval,
    Phase,
)

T0 = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)


def record(intervals: list[PausedInterval]) -> EnvironmentRecord:
    return EnvironmentRecord(environment="etl", phase=Phase.PAUSED, updated_at=T0, paused_intervals=intervals)


def test_a_pause_opens_an_interval_and_a_resume_closes_it() -> None:
    opened = record([]).pause_began(T0)
    assert opened == [PausedInterval(paused_at=T0)]
    closed = record(opened).pause_ended(T0 + timedelta(hours=14))
    assert closed == [PausedInterval(paused_at=T0, resumed_at=T0 + timedelta(hours=14))]
    again = record(closed).pause_began(T0 + timedelta(days=1))
    assert [i.resumed_at for i in again] == [T0 + timedelta(hours=14), None]


def test_a_retried_pause_step_does_not_open_a_second_interval() -> None:
    opened = record([]).pause_began(T0)
    assert record(opened).pause_began(T0 + timedelta(minutes=5)) == opened


def test_a_resume_without_an_open_interval_changes_nothing() -> None:
    closed = [PausedInterval(paused_at=T0, resumed_at=T0 + timedelta(hours=1))]
    assert record(closed).pause_ended(T0 + timedelta(hours=5)) == closed
    assert record([]).pause_ended(T0) == []


def test_a_resume_never_ends_before_its_pause_began() -> None:
    # Clocks of two functions can disagree by a little: the interval is empty, never negative.
    [interval] = record([PausedInterval(paused_at=T0)]).pause_ended(T0 - timedelta(seconds=3))
    assert interval.resumed_at == T0


def test_old_intervals_are_dropped_and_the_count_is_bounded() -> None:
    old = PausedInterval(paused_at=T0 - timedelta(days=500), resumed_at=T0 - timedelta(days=PAUSED_INTERVALS_DAYS + 1))
    recent = [
        PausedInterval(paused_at=T0 - timedelta(hours=2 * n + 1), resumed_at=T0 - timedelta(hours=2 * n))
        for n in range(PAUSED_INTERVALS_KEPT + 5, 0, -1)
    ]
    kept = record([old, *recent]).pause_began(T0)
    assert old not in kept
    assert len(kept) == PAUSED_INTERVALS_KEPT
    assert kept[-1] == PausedInterval(paused_at=T0) and kept[-2] == recent[-1]


def test_a_reported_restore_duration_is_used_only_when_it_is_a_plausible_number() -> None:
    from mwaa_control.pause.service import _restore_seconds

    assert _restore_seconds({"seconds": 12.5}) == 12.5
    assert _restore_seconds({"result": {"seconds": 3}}) == 3.0
    for hostile in ({"seconds": "12"}, {"seconds": True}, {"seconds": -1}, {"seconds": 1e12}, {"result": "x"}, {}):
        assert _restore_seconds(hostile) is None
