"""Savings from the price table, and the AWS compute blog's cost example reproduced to the cent.

The blog ("Automating stopping and starting Amazon MWAA environments to reduce cost"): mw1.small in
us-east-2 with one worker costs $357.80 a month; run 06:00-18:00 on 21 weekdays it costs
21 x 12 x 0.49 = $123.48, "65.46% less". The $357.80 is 730 hours at $0.49 plus 1 GB of metadata
storage at $0.10; the 65.46% is against 729.6 hours (30.4 days), the compute alone."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from mwaa_control.schedules.evaluate import paused_intervals, timeline
from mwaa_control.schedules.pricing import (
    EnvironmentSize,
    UnknownPrice,
    cost,
    hourly_price,
    hours,
    paused_duration,
    savings,
    to_cents,
)
from tests.schedules.helpers import local, office_hours

SMALL = EnvironmentSize(environment_class="mw1.small", min_workers=1)
OHIO = "America/New_York"  # us-east-2's local time


def test_the_blogs_running_cost_and_monthly_cost() -> None:
    assert cost(dt.timedelta(hours=21 * 12), SMALL) == Decimal("123.48")
    storage = Decimal("0.10")  # 1 GB-month of metadata
    assert cost(dt.timedelta(hours=730), SMALL) + storage == Decimal("357.80")
    reduction = 1 - Decimal("123.48") / (hourly_price(SMALL) * Decimal("729.6"))
    assert to_cents(reduction * 100) == Decimal("65.46")


def test_the_blogs_schedule_over_a_month_with_21_weekdays() -> None:
    # Given the blog's schedule, 06:00-18:00 on weekdays in Ohio, over May 2026 (21 weekdays)
    schedule = office_hours(timezone=OHIO, start="06:00", stop="18:00")
    start, end = local(OHIO, 2026, 5, 1), local(OHIO, 2026, 6, 1)
    # When the hours paused and saved are computed from the schedule's own timeline
    result = savings(paused_intervals(timeline(schedule, None, (), (), start, end)), start, end, SMALL)
    # Then the environment ran 252 hours for $123.48, and the 492 paused hours saved $241.08
    assert result.hours_running == 252
    assert result.spent == Decimal("123.48")
    assert result.hours_paused == 31 * 24 - 252
    assert result.saved == Decimal("241.08")
    assert to_cents(result.saved_fraction * 100) == Decimal("66.13")


def test_extra_capacity_is_priced_beyond_the_included_counts() -> None:
    medium = EnvironmentSize(environment_class="mw1.medium", min_workers=3, schedulers=3, min_webservers=2)
    # 0.74 + 2 extra workers x 0.11 + 1 extra scheduler x 0.11
    assert hourly_price(medium) == Decimal("1.07")
    assert hourly_price(EnvironmentSize(environment_class="mw1.large", min_webservers=4)) == Decimal("1.21")
    micro = EnvironmentSize(environment_class="mw1.micro", min_workers=1, schedulers=1, min_webservers=1)
    assert hourly_price(micro) == Decimal("0.29")


def test_unknown_prices_are_refused_not_guessed() -> None:
    with pytest.raises(UnknownPrice, match="eu-west-1"):
        hourly_price(SMALL, region="eu-west-1")
    with pytest.raises(UnknownPrice, match=r"mw1\.tiny"):
        hourly_price(EnvironmentSize(environment_class="mw1.tiny"))
    with pytest.raises(UnknownPrice, match=r"worker of mw1\.xlarge"):
        hourly_price(EnvironmentSize(environment_class="mw1.xlarge", min_workers=2))
    assert hourly_price(SMALL, region="us-west-2") == Decimal("0.49")


def test_paused_hours_are_clipped_to_the_window_and_counted_once() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    h = dt.timedelta(hours=1)
    pauses = [(t0 - 2 * h, t0 + h), (t0 + 3 * h, t0 + 5 * h), (t0 + 4 * h, t0 + 6 * h), (t0 + 9 * h, None)]
    assert paused_duration(pauses, t0, t0 + 10 * h) == 5 * h
    assert hours(dt.timedelta(minutes=90)) == Decimal("1.5")
    result = savings(pauses, t0, t0 + 10 * h, SMALL)
    assert (result.hours_paused, result.saved, result.spent) == (Decimal(5), Decimal("2.45"), Decimal("2.45"))
