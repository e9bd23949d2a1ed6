"""The fleet document and the environments' tags: what is managed, what is refused and why."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mwaa_control.schedules.config import (
    SCHEDULE_TAG,
    ScheduleConfigError,
    load_fleet_document,
    managed_environment,
    parse_fleet_document,
    plan_fleet,
)
from mwaa_control.schedules.model import HolidayAction, Weekday

OPT_IN = {"mwaa-control:pause-resume": "enabled"}

FLEET_YAML = """
version: 1
calendars:
  de-holidays:
    holidays:
      - {date: 2026-12-25, action: stay-paused, name: Christmas}
      - {date: 2026-12-31, action: stay-up}
schedules:
  office-berlin:
    timezone: Europe/Berlin
    calendar: de-holidays
    ready_by: {percentile: 90, default_lead: PT45M}
    periods:
      - {days: [mon, tue, wed, thu, fri], start: "07:00", stop: "19:00"}
  nights-sydney:
    timezone: Australia/Sydney
    periods:
      - {days: [sun, mon, tue, wed, thu], start: "22:00", stop: "04:00"}
environments:
  analytics-dev: office-berlin
  ingest-dev: {schedule: nights-sydney}
"""


def test_a_yaml_fleet_document_is_parsed() -> None:
    document = load_fleet_document(FLEET_YAML, syntax="yaml")
    berlin = document.schedules["office-berlin"]
    assert berlin.periods[0].days == frozenset({Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI})
    assert berlin.ready_by is not None and berlin.ready_by.default_lead == dt.timedelta(minutes=45)
    calendar = document.calendar_of(berlin)
    assert calendar is not None and calendar.action_on(dt.date(2026, 12, 25)) is HolidayAction.STAY_PAUSED
    assert document.environments == {"analytics-dev": "office-berlin", "ingest-dev": "nights-sydney"}
    assert document.schedules["nights-sydney"].periods[0].crosses_midnight


def test_the_same_document_in_json() -> None:
    raw = {"schedules": {"s": {"timezone": "UTC", "periods": [{"days": ["sat"], "start": "01:00", "stop": "02:00"}]}}}
    assert load_fleet_document(json.dumps(raw)).schedules["s"].timezone == "UTC"


BROKEN: dict[str, Any] = {
    "version": 1,
    "colour": "blue",
    "calendars": {"de": {"holidays": [{"date": "2026-12-25"}, {"date": "2026-12-25"}]}},
    "schedules": {
        "office": {"timezone": "Europe/Berlinn", "periods": [{"days": ["mon"], "start": "07:00", "stop": "19:00"}]},
        "empty": {"timezone": "UTC", "periods": []},
        "same": {"timezone": "UTC", "periods": [{"days": ["mon"], "start": "07:00", "stop": "07:00"}]},
        "holidays": {"timezone": "UTC", "calendar": "de", "periods": [{"days": ["funday"], "start": "1", "stop": "2"}]},
        "fine-but-missing-calendar": {
            "timezone": "UTC",
            "calendar": "nope",
            "periods": [{"days": ["mon"], "start": "07:00", "stop": "19:00"}],
        },
    },
    "environments": {
        "analytics-dev": "office",
        "ingest-dev": {"schedule": "does-not-exist"},
        "ml-dev": {"schedule": "same", "owner": "ml"},
        "9bad": "office",
    },
}


def test_every_problem_of_a_document_is_reported_at_once_naming_environment_and_field() -> None:
    with pytest.raises(ScheduleConfigError) as raised:
        parse_fleet_document(BROKEN)
    problems = {(p.environment, p.field) for p in raised.value.problems}
    assert {
        (None, "colour"),
        (None, "calendars.de"),
        (None, "schedules.office.timezone"),
        (None, "schedules.same.periods.0"),
        (None, "schedules.empty"),
        (None, "schedules.holidays.periods.0.days.0"),
        (None, "schedules.fine-but-missing-calendar.calendar"),
        ("analytics-dev", "environments.analytics-dev.schedule"),
        ("ingest-dev", "environments.ingest-dev.schedule"),
        ("ml-dev", "environments.ml-dev"),
        ("ml-dev", "environments.ml-dev.schedule"),
        ("9bad", "environments.9bad"),
    } <= problems
    message = str(raised.value)
    assert "environment 'analytics-dev', environments.analytics-dev.schedule: schedule 'office' is invalid" in message
    assert "'Europe/Berlinn' is not an IANA time zone" in message
    assert "listed twice" in message
    assert "start and stop are equal" in message
    assert "at least one period" in message
    assert "at least 1 item" not in message  # one message per mistake


def test_unparseable_text_is_refused() -> None:
    with pytest.raises(ScheduleConfigError, match="not valid JSON"):
        load_fleet_document("{")
    with pytest.raises(ScheduleConfigError, match="not valid YAML"):
        load_fleet_document("a: [", syntax="yaml")
    with pytest.raises(ScheduleConfigError, match="mapping at the top level"):
        load_fleet_document("[]")


def test_overrides_need_aware_times() -> None:
    from pydantic import ValidationError

    from mwaa_control.schedules.model import Override

    with pytest.raises(ValidationError, match="timezone"):
        Override.model_validate(
            {"environment": "e", "kind": "keep-awake", "created_at": "2026-01-01T00:00", "until": "2026-01-02T00:00"}
        )
    with pytest.raises(ValidationError, match="later than created_at"):
        Override.model_validate(
            {"environment": "e", "kind": "keep-awake", "created_at": "2026-01-02T00:00Z", "until": "2026-01-01T00:00Z"}
        )


def test_only_opted_in_environments_are_managed() -> None:
    document = load_fleet_document(FLEET_YAML, syntax="yaml")
    plan = plan_fleet(
        document,
        {
            "analytics-dev": OPT_IN,  # assigned by the document
            "ingest-dev": {},  # assigned by the document, not opted in
            "team-dev": {**OPT_IN, SCHEDULE_TAG: "nights-sydney"},  # assigned by its tag
            "manual-dev": OPT_IN,  # opted in, on no schedule
            "prod": {SCHEDULE_TAG: "office-berlin"},  # tagged, not opted in
        },
    )
    # A tag alone assigns nothing unless the document allows it: whoever may tag an environment
    # could otherwise have it deleted on a schedule every day.
    assert [(m.environment, m.schedule.name, m.assigned_by) for m in plan.managed] == [
        ("analytics-dev", "office-berlin", "document"),
    ]
    assert [(p.environment, p.field) for p in plan.refused] == [("team-dev", f"tags.{SCHEDULE_TAG}")]
    assert "allow_tag_assignment" in plan.refused[0].message
    assert plan.managed[0].calendar is not None
    assert plan.not_opted_in == ("ingest-dev", "prod")
    assert plan.unscheduled == ("manual-dev",)
    assert plan_fleet(document, {}).absent == ("analytics-dev", "ingest-dev")

    self_service = load_fleet_document(FLEET_YAML + "allow_tag_assignment: true\n", syntax="yaml")
    plan = plan_fleet(self_service, {"team-dev": {**OPT_IN, SCHEDULE_TAG: "nights-sydney"}, "prod": {}})
    assert [(m.environment, m.schedule.name, m.assigned_by) for m in plan.managed] == [
        ("team-dev", "nights-sydney", "tag"),
    ]
    assert plan.refused == ()
    with pytest.raises(ScheduleConfigError, match="allow_tag_assignment: 'yes' is not true or false"):
        load_fleet_document(FLEET_YAML + "allow_tag_assignment: 'yes'\n", syntax="yaml")


def test_bad_tags_refuse_only_that_environment_naming_the_tag() -> None:
    document = load_fleet_document(FLEET_YAML + "allow_tag_assignment: true\n", syntax="yaml")
    plan = plan_fleet(
        document,
        {
            "analytics-dev": {**OPT_IN, SCHEDULE_TAG: "nights-sydney"},  # disagrees with the document
            "typo-dev": {**OPT_IN, SCHEDULE_TAG: "office-berln"},
            "yes-dev": {"mwaa-control:pause-resume": "true", SCHEDULE_TAG: "office-berlin"},
            "team-dev": {**OPT_IN, SCHEDULE_TAG: "office-berlin"},
        },
    )
    assert [m.environment for m in plan.managed] == ["team-dev"]
    refused = {(p.environment, p.field) for p in plan.refused}
    assert refused == {
        ("analytics-dev", f"tags.{SCHEDULE_TAG}"),
        ("typo-dev", f"tags.{SCHEDULE_TAG}"),
        ("yes-dev", "tags.mwaa-control:pause-resume"),
    }
    with pytest.raises(ScheduleConfigError, match=r"environment 'analytics-dev', tags\.mwaa-control:schedule: names"):
        managed_environment(document, "analytics-dev", {**OPT_IN, SCHEDULE_TAG: "nights-sydney"})
