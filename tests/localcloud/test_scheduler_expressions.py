"""EventBridge Scheduler expression semantics, as AWS documents them, on the local cloud's parser.

Every expected instant below was worked out by hand from the 2026 calendar and the zones' rules:
Europe/Berlin springs forward on Sunday 29 March 2026 (02:00 CET -> 03:00 CEST, 01:00 UTC) and falls
back on Sunday 25 October (03:00 CEST -> 02:00 CET, 01:00 UTC); America/New_York springs forward on
Sunday 8 March (02:00 EST -> 03:00 EDT, 07:00 UTC) and falls back on Sunday 1 November (02:00 EDT ->
01:00 EST, 06:00 UTC). AWS: a cron time skipped by spring-forward is not invoked; one repeated by
fall-back is invoked once (the engine picks the first occurrence)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from localcloud.scheduler import (
    AtExpression,
    CronExpression,
    RateExpression,
    ScheduleExpressionError,
    parse_schedule_expression,
    parse_timezone,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def cron_fires(expression: str, zone: str, lower: datetime, upper: datetime) -> list[datetime]:
    parsed = parse_schedule_expression(expression)
    assert isinstance(parsed, CronExpression)
    return list(parsed.instants(ZoneInfo(zone), lower, upper))


def fire_days(expression: str, lower: datetime, upper: datetime) -> list[str]:
    return [instant.date().isoformat() for instant in cron_fires(expression, "UTC", lower, upper)]


# --- at() and rate() ----------------------------------------------------------------------------


def test_at_is_a_local_wall_time_in_the_schedule_zone() -> None:
    parsed = parse_schedule_expression("at(2026-07-01T09:30:00)")
    assert parsed == AtExpression(datetime(2026, 7, 1, 9, 30))
    assert parsed.instant(ZoneInfo("Europe/Berlin")) == utc(2026, 7, 1, 7, 30)
    assert parsed.instant(ZoneInfo("America/New_York")) == utc(2026, 7, 1, 13, 30)
    assert parsed.instant(ZoneInfo("UTC")) == utc(2026, 7, 1, 9, 30)


def test_an_at_time_inside_the_spring_forward_gap_is_read_with_the_offset_before_it() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026: read as 02:30 CET, i.e. 03:30 CEST
    parsed = parse_schedule_expression("at(2026-03-29T02:30:00)")
    assert isinstance(parsed, AtExpression)
    assert parsed.instant(ZoneInfo("Europe/Berlin")) == utc(2026, 3, 29, 1, 30)


def test_an_ambiguous_at_time_is_its_first_occurrence() -> None:
    parsed = parse_schedule_expression("at(2026-11-01T01:30:00)")
    assert isinstance(parsed, AtExpression)
    assert parsed.instant(ZoneInfo("America/New_York")) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT


@pytest.mark.parametrize(
    ("expression", "period"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(12 hours)", timedelta(hours=12)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(3 days)", timedelta(days=3)),
    ],
)
def test_rate_units(expression: str, period: timedelta) -> None:
    assert parse_schedule_expression(expression) == RateExpression(period)


def test_rate_instants_start_at_the_anchor_and_keep_its_grid() -> None:
    rate = RateExpression(timedelta(minutes=20))
    anchor = utc(2026, 1, 5, 8, 0)
    assert list(rate.instants(anchor, anchor, utc(2026, 1, 5, 9, 0))) == [
        utc(2026, 1, 5, 8, 0),
        utc(2026, 1, 5, 8, 20),
        utc(2026, 1, 5, 8, 40),
        utc(2026, 1, 5, 9, 0),
    ]
    # a window that starts between two instants begins at the next one on the anchor's grid
    assert list(rate.instants(anchor, utc(2026, 1, 5, 8, 25), utc(2026, 1, 5, 9, 10))) == [
        utc(2026, 1, 5, 8, 40),
        utc(2026, 1, 5, 9, 0),
    ]


# --- cron fields --------------------------------------------------------------------------------


def test_cron_every_weekday_at_nine_in_utc() -> None:
    # Given Monday 2 March 2026 to Sunday 8 March
    fires = cron_fires("cron(0 9 ? * MON-FRI *)", "UTC", utc(2026, 3, 2), utc(2026, 3, 8, 23, 59))
    assert fires == [utc(2026, 3, day, 9) for day in (2, 3, 4, 5, 6)]


def test_day_of_week_numbers_run_from_sunday_1_to_saturday_7() -> None:
    week = (utc(2026, 3, 1), utc(2026, 3, 7, 23, 59))  # Sunday 1 to Saturday 7 March 2026
    assert fire_days("cron(0 0 ? * 1 *)", *week) == ["2026-03-01"]  # SUN
    assert fire_days("cron(0 0 ? * 2 *)", *week) == ["2026-03-02"]  # MON
    assert fire_days("cron(0 0 ? * 7 *)", *week) == ["2026-03-07"]  # SAT
    assert fire_days("cron(0 0 ? * 2-6 *)", *week) == fire_days("cron(0 0 ? * mon-fri *)", *week)
    assert fire_days("cron(0 0 ? * SUN,SAT *)", *week) == ["2026-03-01", "2026-03-07"]


def test_minutes_hours_lists_ranges_and_steps() -> None:
    day = (utc(2026, 3, 2), utc(2026, 3, 2, 23, 59))
    assert [f.strftime("%H:%M") for f in cron_fires("cron(5/20 8-9 * * ? *)", "UTC", *day)] == [
        "08:05",
        "08:25",
        "08:45",
        "09:05",
        "09:25",
        "09:45",
    ]
    assert [f.strftime("%H:%M") for f in cron_fires("cron(0,30 22/1 * * ? *)", "UTC", *day)] == [
        "22:00",
        "22:30",
        "23:00",
        "23:30",
    ]
    assert [f.strftime("%H") for f in cron_fires("cron(0 */6 * * ? *)", "UTC", *day)] == ["00", "06", "12", "18"]
    assert [f.strftime("%H") for f in cron_fires("cron(0 0-12/4 * * ? *)", "UTC", *day)] == ["00", "04", "08", "12"]


def test_month_names_day_of_month_steps_and_years() -> None:
    assert fire_days("cron(0 0 1/10 FEB,APR ? 2026)", utc(2026, 1, 1), utc(2027, 12, 31)) == [
        "2026-02-01",
        "2026-02-11",
        "2026-02-21",
        "2026-04-01",
        "2026-04-11",
        "2026-04-21",
    ]
    assert fire_days("cron(0 0 29 2 ? 2026-2029)", utc(2026, 1, 1), utc(2030, 1, 1)) == ["2028-02-29"]


def test_l_in_day_of_month_is_the_last_day() -> None:
    assert fire_days("cron(0 12 L * ? 2026)", utc(2026, 1, 1), utc(2026, 4, 30, 23)) == [
        "2026-01-31",
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
    ]


def test_w_is_the_nearest_weekday_without_leaving_the_month() -> None:
    # 15 November 2026 is a Sunday: the Monday after
    assert fire_days("cron(0 12 15W * ? *)", utc(2026, 11, 1), utc(2026, 11, 30)) == ["2026-11-16"]
    # 1 August 2026 is a Saturday: not Friday 31 July, but Monday 3 August
    assert fire_days("cron(0 12 1W * ? *)", utc(2026, 7, 1), utc(2026, 8, 31)) == ["2026-07-01", "2026-08-03"]
    # 31 January 2026 is a Saturday: Friday 30; 31 May is a Sunday: Friday 29, not Monday 1 June
    assert fire_days("cron(0 12 31W * ? *)", utc(2026, 1, 1), utc(2026, 6, 30)) == [
        "2026-01-30",
        "2026-03-31",
        "2026-05-29",
    ]
    # 10 March 2026 is a Tuesday: that day
    assert fire_days("cron(0 12 10W * ? *)", utc(2026, 3, 1), utc(2026, 3, 31)) == ["2026-03-10"]


def test_lw_is_the_last_weekday_of_the_month() -> None:
    assert fire_days("cron(0 12 LW * ? *)", utc(2026, 5, 1), utc(2026, 5, 31, 23)) == ["2026-05-29"]
    assert fire_days("cron(0 12 LW * ? *)", utc(2026, 8, 1), utc(2026, 8, 31, 23)) == ["2026-08-31"]


def test_hash_is_the_nth_weekday_of_the_month() -> None:
    # the third Friday of March and April 2026
    assert fire_days("cron(0 12 ? * 6#3 *)", utc(2026, 3, 1), utc(2026, 4, 30)) == ["2026-03-20", "2026-04-17"]
    # a fifth Monday exists in March 2026 (30th) but not in April
    assert fire_days("cron(0 12 ? * MON#5 *)", utc(2026, 3, 1), utc(2026, 4, 30)) == ["2026-03-30"]
    # the first and fourth Saturdays of March 2026 fall on the 7th and the 28th
    assert fire_days("cron(0 12 ? * SAT#1 *)", utc(2026, 3, 1), utc(2026, 3, 31)) == ["2026-03-07"]
    assert fire_days("cron(0 12 ? * 7#4 *)", utc(2026, 3, 1), utc(2026, 3, 31)) == ["2026-03-28"]


def test_l_in_day_of_week_alone_is_saturday_and_after_a_day_the_last_one_of_the_month() -> None:
    assert fire_days("cron(0 12 ? * L *)", utc(2026, 3, 1), utc(2026, 3, 14, 23)) == ["2026-03-07", "2026-03-14"]
    assert fire_days("cron(0 12 ? * 6L *)", utc(2026, 3, 1), utc(2026, 4, 30)) == ["2026-03-27", "2026-04-24"]


# --- time zones and DST --------------------------------------------------------------------------


def test_berlin_spring_forward_skips_the_nonexistent_time() -> None:
    fires = cron_fires("cron(30 2 * * ? *)", "Europe/Berlin", utc(2026, 3, 27), utc(2026, 3, 31))
    assert fires == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        # 29 March: 02:30 does not exist, no invocation
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_berlin_wall_time_is_kept_across_both_transitions() -> None:
    spring = cron_fires("cron(0 9 * * ? *)", "Europe/Berlin", utc(2026, 3, 28), utc(2026, 3, 30))
    assert spring == [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7)]
    autumn = cron_fires("cron(0 9 * * ? *)", "Europe/Berlin", utc(2026, 10, 24), utc(2026, 10, 26))
    assert autumn == [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8)]


def test_berlin_fall_back_fires_the_repeated_time_once() -> None:
    fires = cron_fires("cron(30 2 * * ? *)", "Europe/Berlin", utc(2026, 10, 24), utc(2026, 10, 27))
    assert fires == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, first occurrence; not again at 01:30 UTC (02:30 CET)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_new_york_spring_forward_skips_the_nonexistent_time() -> None:
    fires = cron_fires("cron(30 2 * * ? *)", "America/New_York", utc(2026, 3, 7), utc(2026, 3, 10))
    assert fires == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        # 8 March: 02:30 does not exist
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_new_york_fall_back_fires_the_repeated_time_once() -> None:
    fires = cron_fires("cron(30 1 * * ? *)", "America/New_York", utc(2026, 10, 31), utc(2026, 11, 3))
    assert fires == [
        utc(2026, 10, 31, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, first occurrence; not again at 06:30 UTC (01:30 EST)
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]


def test_new_york_half_hourly_through_the_repeated_hour() -> None:
    fires = cron_fires("cron(0/30 * * * ? *)", "America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 1, 7, 30))
    assert fires == [
        utc(2026, 11, 1, 4, 0),  # 00:00 EDT
        utc(2026, 11, 1, 4, 30),  # 00:30 EDT
        utc(2026, 11, 1, 5, 0),  # 01:00 EDT
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        # 01:00 EST and 01:30 EST repeat wall times already invoked
        utc(2026, 11, 1, 7, 0),  # 02:00 EST
        utc(2026, 11, 1, 7, 30),  # 02:30 EST
    ]


def test_new_york_half_hourly_through_the_skipped_hour() -> None:
    fires = cron_fires("cron(0/30 * * * ? *)", "America/New_York", utc(2026, 3, 8, 6), utc(2026, 3, 8, 7, 30))
    assert fires == [
        utc(2026, 3, 8, 6, 0),  # 01:00 EST
        utc(2026, 3, 8, 6, 30),  # 01:30 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT: 02:00 and 02:30 do not exist
        utc(2026, 3, 8, 7, 30),  # 03:30 EDT
    ]


# --- refused expressions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "every day",
        "cron(0 9 * * *)",  # five fields: a Unix crontab, not AWS's six
        "cron(0 0 9 * * ? *)",  # seven fields: Quartz seconds
        "cron(0 9 * * * *)",  # neither day field is '?'
        "cron(0 9 ? * ? *)",  # both are
        "cron(60 9 * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 9 0 * ? *)",
        "cron(0 9 32 * ? *)",
        "cron(0 9 ? 13 * *)",
        "cron(0 9 ? * 0 *)",  # day-of-week is 1-7
        "cron(0 9 ? * 8 *)",
        "cron(0 9 * * ? 1969)",
        "cron(0 9 * * ? 2200)",
        "cron(0 9 ? * MON/2 *)",  # no '/' in day-of-week
        "cron(0 9 ? * 3#1,6#3 *)",  # one '#' expression only
        "cron(0 9 ? * 3#6 *)",
        "cron(0 9 L-2 * ? *)",
        "cron(0 9 1,L * ? *)",
        "cron(0 9 W * ? *)",
        "cron(0 9 ? * 5W *)",  # W only in day-of-month
        "cron(0 9 * * L *)",  # neither '?'
        "cron(0 ? * * ? *)",
        "cron(0 10-8 * * ? *)",  # backwards range
        "cron(0/0 9 * * ? *)",
        "cron(0 9 * JUNE ? *)",
        "cron(0 9 * * ? * )x",
        "rate(0 minutes)",
        "rate(5 seconds)",
        "rate(1 week)",
        "rate(-5 minutes)",
        "rate(5minutes)",
        "at(2026-02-30T09:00:00)",
        "at(2026-07-01 09:00:00)",
        "at(2026-07-01T09:00)",
    ],
)
def test_invalid_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ScheduleExpressionError):
        parse_schedule_expression(expression)


def test_a_refusal_names_the_field() -> None:
    with pytest.raises(ScheduleExpressionError, match="day-of-week"):
        parse_schedule_expression("cron(0 9 ? * 8 *)")


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ScheduleExpressionError, match="Mars/Olympus_Mons"):
        parse_timezone("Mars/Olympus_Mons")
    assert parse_timezone(None) == ZoneInfo("UTC")
