"""The fleet reconciler (`schedules.fleet.reconcile`): a pure function, tested without AWS."""

from __future__ import annotations

import datetime as dt

import pytest

from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE, DrainOptions, Phase
from mwaa_control.schedules.config import (
    SCHEDULE_TAG,
    ConfigProblem,
    FleetDocument,
    ScheduleConfigError,
    parse_fleet_document,
)
from mwaa_control.schedules.evaluate import Reason
from mwaa_control.schedules.fleet import (
    DeferReason,
    FleetAction,
    FleetLimits,
    ObservedEnvironment,
    execution_name,
    reconcile,
)
from mwaa_control.schedules.model import HolidayAction, OverrideKind
from tests.schedules.helpers import calendar_of, local, office_hours, override

OPTED_IN = {OPT_IN_TAG: OPT_IN_VALUE}
# Tuesday 1 December 2026, 10:00 in Berlin: inside office hours (08:00-18:00 on weekdays).
WORKDAY = local("Europe/Berlin", 2026, 12, 1, 10)
NIGHT = local("Europe/Berlin", 2026, 12, 1, 22)


def document(*environments: str) -> FleetDocument:
    return FleetDocument(
        schedules={"office": office_hours()}, calendars={}, environments=dict.fromkeys(environments, "office")
    )


def live(name: str, status: str = "AVAILABLE", **changes: object) -> ObservedEnvironment:
    return ObservedEnvironment.model_validate({"name": name, "status": status, "tags": OPTED_IN, **changes})


def paused(name: str, **changes: object) -> ObservedEnvironment:
    return ObservedEnvironment.model_validate({"name": name, "phase": Phase.PAUSED, "tags": OPTED_IN, **changes})


def test_given_office_hours_when_night_falls_then_running_environments_are_paused_and_paused_ones_stay() -> None:
    decision = reconcile(document("a", "b"), [live("a"), paused("b")], {}, NIGHT)
    [start] = decision.start
    assert (start.environment, start.action, start.reason) == ("a", FleetAction.PAUSE, Reason.OUTSIDE_PERIODS)
    assert start.due == local("Europe/Berlin", 2026, 12, 1, 18)
    assert start.name == "a-pause-20261201T170000Z"
    assert start.execution_input["environment"] == "a"
    assert decision.in_step == ("b",)
    assert decision.deferred == ()
    assert decision.next_wake_up == local("Europe/Berlin", 2026, 12, 2, 8)


def test_a_schedule_with_drain_options_passes_them_to_its_pauses_only() -> None:
    drained = office_hours().model_copy(update={"drain": DrainOptions(timeout=600, on_timeout="proceed")})
    fleet = FleetDocument(schedules={"office": drained}, calendars={}, environments={"a": "office", "b": "office"})
    night = reconcile(fleet, [live("a"), paused("b")], {}, NIGHT)
    [pause] = night.start
    assert pause.execution_input["drain"] == {"timeout": 600, "poll": 15, "on_timeout": "proceed"}
    [resume] = reconcile(fleet, [live("a"), paused("b")], {}, WORKDAY).start
    assert resume.action is FleetAction.RESUME and "drain" not in resume.execution_input
    # Without options the workflow's default applies (the input names none).
    [default] = reconcile(document("a"), [live("a")], {}, NIGHT).start
    assert "drain" not in default.execution_input


def test_a_schedule_that_accepts_the_rest_path_losses_says_so_in_its_pauses_only() -> None:
    accepting = office_hours().model_copy(update={"accept_rest_path_losses": True})
    fleet = FleetDocument(schedules={"office": accepting}, calendars={}, environments={"a": "office", "b": "office"})
    [pause] = reconcile(fleet, [live("a"), paused("b")], {}, NIGHT).start
    assert pause.execution_input["accept_rest_path_losses"] is True
    [resume] = reconcile(fleet, [live("a"), paused("b")], {}, WORKDAY).start
    assert resume.action is FleetAction.RESUME and "accept_rest_path_losses" not in resume.execution_input
    # Not accepted unless the schedule says so: the pause workflow then deletes nothing on a REST backup.
    [default] = reconcile(document("a"), [live("a")], {}, NIGHT).start
    assert "accept_rest_path_losses" not in default.execution_input
    schedule = {"timezone": "Europe/Berlin", "periods": [{"days": ["mon"], "start": "08:00", "stop": "18:00"}]}
    raw = {"version": 1, "schedules": {"office": {**schedule, "accept_rest_path_losses": "maybe"}}, "environments": {}}
    with pytest.raises(ScheduleConfigError) as refused:
        parse_fleet_document(raw)
    assert [p.field for p in refused.value.problems] == ["schedules.office.accept_rest_path_losses"]


def test_a_drain_option_in_the_document_is_validated_like_a_pause_input() -> None:
    schedule = {"timezone": "Europe/Berlin", "periods": [{"days": ["mon"], "start": "08:00", "stop": "18:00"}]}
    raw = {"version": 1, "schedules": {"office": {**schedule, "drain": {"timeout": -1}}}, "environments": {}}
    with pytest.raises(ScheduleConfigError) as refused:
        parse_fleet_document(raw)
    assert [p.field for p in refused.value.problems] == ["schedules.office.drain.timeout"]


def test_the_same_interval_always_proposes_the_same_execution_name() -> None:
    first = reconcile(document("a"), [paused("a")], {}, WORKDAY)
    later = reconcile(document("a"), [paused("a")], {}, WORKDAY + dt.timedelta(hours=5, minutes=59))
    tomorrow = reconcile(document("a"), [paused("a")], {}, WORKDAY + dt.timedelta(days=1))
    assert [s.name for s in first.start] == [s.name for s in later.start] == ["a-resume-20261201T070000Z"]
    assert [s.name for s in tomorrow.start] == ["a-resume-20261202T070000Z"]


def test_long_environment_names_still_give_valid_distinct_execution_names() -> None:
    due = dt.datetime(2026, 12, 1, 7, tzinfo=dt.UTC)
    one, other = ("x" * 79 + "1", "x" * 79 + "2")
    names = {execution_name(one, FleetAction.RESUME, due), execution_name(other, FleetAction.RESUME, due)}
    assert len(names) == 2
    assert all(len(n) <= 80 and n.endswith("-resume-20261201T070000Z") for n in names)


def test_an_environment_that_did_not_opt_in_is_never_paused() -> None:
    not_opted = ObservedEnvironment(name="a", status="AVAILABLE", tags={SCHEDULE_TAG: "office"})
    decision = reconcile(document("a"), [not_opted], {}, NIGHT)
    assert decision.start == ()
    assert decision.not_opted_in == ("a",)


def test_a_refused_document_starts_nothing_and_reports_why() -> None:
    refused = ScheduleConfigError([ConfigProblem(field="schedules.office.timezone", message="not a zone")])
    decision = reconcile(refused, [live("a"), paused("b")], {}, NIGHT)
    assert decision.start == () and decision.next_wake_up is None
    assert [p.field for p in decision.problems] == ["schedules.office.timezone"]


def test_a_refused_tag_defers_only_its_environment() -> None:
    wrong = live("a", tags={**OPTED_IN, SCHEDULE_TAG: "no-such-schedule"})
    decision = reconcile(document("b"), [wrong, live("b")], {}, NIGHT)
    assert [s.environment for s in decision.start] == ["b"]
    [deferred] = decision.deferred
    assert (deferred.environment, deferred.reason) == ("a", DeferReason.REFUSED_CONFIG)
    assert "no-such-schedule" in deferred.detail


def test_busy_environments_and_running_operations_wait_and_bring_the_wake_up_forward() -> None:
    observed = [
        live("updating", "UPDATING"),
        live("locked", operation_running=True, phase=Phase.PAUSING),
        live("deleting", "DELETING"),  # being paused: in step
    ]
    decision = reconcile(document("updating", "locked", "deleting"), observed, {}, NIGHT)
    assert decision.start == ()
    assert {(d.environment, d.reason) for d in decision.deferred} == {
        ("updating", DeferReason.BUSY),
        ("locked", DeferReason.OPERATION_RUNNING),
    }
    assert decision.in_step == ("deleting",)
    assert decision.next_wake_up == NIGHT.astimezone(dt.UTC) + FleetLimits().retry_after


def test_failed_resumes_and_contradicting_records_need_a_human() -> None:
    observed = [
        paused("failed", phase=Phase.RESUME_FAILED),
        paused("attention", phase=Phase.NEEDS_ATTENTION),
        paused("vanished", phase=Phase.ACTIVE),  # deleted behind our back: no verified backup
    ]
    decision = reconcile(document("failed", "attention", "vanished"), observed, {}, WORKDAY)
    assert decision.start == ()
    assert {d.environment for d in decision.deferred if d.reason is DeferReason.NEEDS_HUMAN} == {
        "failed",
        "attention",
        "vanished",
    }
    # Nothing clears by itself: the next wake-up is the next transition, not a retry.
    assert decision.next_wake_up == local("Europe/Berlin", 2026, 12, 1, 18)


def test_a_resume_waits_when_it_would_exceed_the_environment_quota() -> None:
    others = [ObservedEnvironment(name=f"other-{i}", status="AVAILABLE", tags={}) for i in range(8)]
    creating = ObservedEnvironment(name="creating", status="CREATING", tags={})
    observed = [*others, creating, paused("late"), paused("early")]
    # "late" stayed paused by an override until 09:00; "early" fell due at 08:00 and takes the last slot.
    held = override(OverrideKind.STAY_PAUSED, WORKDAY - dt.timedelta(days=1), WORKDAY - dt.timedelta(hours=1))
    wake = {"late": (held.model_copy(update={"environment": "late"}),)}
    decision = reconcile(document("late", "early"), observed, wake, WORKDAY, FleetLimits(environment_quota=10))
    assert [s.environment for s in decision.start] == ["early"]
    [deferred] = decision.deferred
    assert (deferred.environment, deferred.reason, deferred.action) == ("late", DeferReason.QUOTA, FleetAction.RESUME)
    assert "quota of 10" in deferred.detail


def test_resumes_go_before_pauses_when_the_concurrency_cap_bites() -> None:
    # Sydney's office is open while Berlin's is closed: one resume and two pauses fall due at once.
    fleet = FleetDocument(
        schedules={
            "office": office_hours(),
            "sydney": office_hours("Australia/Sydney").model_copy(update={"name": "sydney"}),
        },
        calendars={},
        environments={"berlin-1": "office", "berlin-2": "office", "sydney": "sydney"},
    )
    at = local("Europe/Berlin", 2026, 12, 1, 23)  # Wednesday 09:00 in Sydney
    observed = [live("berlin-1"), live("berlin-2"), paused("sydney"), live("busy", operation_running=True, tags={})]
    decision = reconcile(fleet, observed, {}, at, FleetLimits(max_concurrent_operations=3))
    assert [(s.environment, s.action) for s in decision.start] == [
        ("sydney", FleetAction.RESUME),
        ("berlin-1", FleetAction.PAUSE),
    ]
    [deferred] = decision.deferred
    assert (deferred.environment, deferred.reason) == ("berlin-2", DeferReason.CONCURRENCY)


def test_a_keep_awake_override_keeps_an_environment_running_until_it_expires() -> None:
    keep = override(OverrideKind.KEEP_AWAKE, NIGHT - dt.timedelta(hours=6), NIGHT + dt.timedelta(hours=2))
    keep = keep.model_copy(update={"environment": "a"})
    decision = reconcile(document("a"), [live("a")], {"a": (keep,)}, NIGHT)
    assert decision.start == () and decision.in_step == ("a",)
    assert decision.next_wake_up == keep.until
    after = reconcile(document("a"), [live("a")], {"a": (keep,)}, keep.until)
    assert [(s.action, s.reason, s.due) for s in after.start] == [
        (FleetAction.PAUSE, Reason.OUTSIDE_PERIODS, keep.until)
    ]


def test_paused_environments_whose_tags_cannot_be_read_are_not_resumed() -> None:
    decision = reconcile(document("a"), [paused("a", tags=None)], {}, WORKDAY)
    assert decision.start == ()
    [deferred] = decision.deferred
    assert deferred.reason is DeferReason.TAGS_UNKNOWN


def test_a_weeks_long_override_keeps_one_execution_name_so_a_hand_resume_is_not_undone_daily() -> None:
    # Given a stay-paused override made three weeks ago and running for another week
    made = WORKDAY - dt.timedelta(days=21)
    hold = override(OverrideKind.STAY_PAUSED, made, WORKDAY + dt.timedelta(days=7))
    hold = hold.model_copy(update={"environment": "a"})
    # When an operator resumed the environment by hand and the scheduler runs on two days
    names = {
        s.name
        for day in (0, 1, 2)
        for s in reconcile(document("a"), [live("a")], {"a": (hold,)}, WORKDAY + dt.timedelta(days=day)).start
    }
    # Then it proposes the one pause its override began (already run: Step Functions refuses it again)
    assert names == {execution_name("a", FleetAction.PAUSE, made)}


def test_a_long_run_of_holidays_keeps_one_execution_name_so_a_hand_resume_is_not_undone_daily() -> None:
    # Given office hours with three weeks of stay-paused holidays that began 12 days ago
    first = (WORKDAY - dt.timedelta(days=12)).date()
    holidays = calendar_of(*((first + dt.timedelta(days=n), HolidayAction.STAY_PAUSED) for n in range(21)))
    fleet = FleetDocument(
        schedules={"office": office_hours(calendar="holidays")},
        calendars={"holidays": holidays},
        environments={"a": "office"},
    )
    # When an operator resumed it by hand and the scheduler runs on three days of the holidays
    names = {
        s.name for day in (0, 1, 2) for s in reconcile(fleet, [live("a")], {}, WORKDAY + dt.timedelta(days=day)).start
    }
    # Then it proposes one pause, the one at the evening before the holidays (already run)
    [name] = names
    assert name == execution_name("a", FleetAction.PAUSE, local("Europe/Berlin", 2026, 11, 18, 18))
