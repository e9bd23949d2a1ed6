"""The local cloud fires moto's EventBridge Scheduler schedules on its ManualClock.

moto stores schedules and never fires them; these tests create schedules through the ordinary
``scheduler`` client, advance the clock, and look at what was started (Step Functions executions in
moto) or invoked (the Lambda callback). No Airflow, no LocalCloud: a bare moto mock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from localcloud.clock import ManualClock
from localcloud.scheduler import CatchUpLimitExceeded, ScheduleExpressionError, ScheduleFiringEngine

REGION = "us-east-1"
FUNCTION = f"arn:aws:lambda:{REGION}:123456789012:function:pause_resume"
ROLE = "arn:aws:iam::123456789012:role/scheduler"
OFF = {"Mode": "OFF"}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass
class RecordingLambda:
    calls: list[tuple[str, Any, datetime]] = field(default_factory=list)
    clock: ManualClock | None = None
    fail: bool = False

    def __call__(self, function_arn: str, event: Any) -> Any:
        assert self.clock is not None
        self.calls.append((function_arn, event, self.clock.now()))
        if self.fail:
            raise RuntimeError("handler failed")
        return {"ok": True}


@dataclass
class Rig:
    clock: ManualClock
    scheduler: Any
    sfn: Any
    lambdas: RecordingLambda
    engine: ScheduleFiringEngine

    def create(self, name: str, expression: str, **kwargs: Any) -> None:
        target = kwargs.pop("Target", {"Arn": FUNCTION, "RoleArn": ROLE, "Input": json.dumps({"schedule": name})})
        self.scheduler.create_schedule(
            Name=name,
            ScheduleExpression=expression,
            FlexibleTimeWindow=kwargs.pop("FlexibleTimeWindow", OFF),
            Target=target,
            **kwargs,
        )

    def fired(self, name: str | None = None) -> list[datetime]:
        return [f.scheduled_for for f in self.engine.firings if name is None or f.schedule == name]

    def schedule_names(self) -> set[str]:
        return {s["Name"] for s in self.scheduler.list_schedules()["Schedules"]}


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        clock = ManualClock(utc(2027, 1, 4, 8, 0))  # a Monday, after the moto host's real time
        scheduler = boto3.client("scheduler", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        lambdas = RecordingLambda(clock=clock)
        engine = ScheduleFiringEngine(clock, scheduler, sfn, invoke_lambda=lambdas).attach()
        yield Rig(clock, scheduler, sfn, lambdas, engine)
        engine.close()


def test_a_lambda_target_receives_the_target_input(rig: Rig) -> None:
    # Given an hourly schedule with a JSON Input
    rig.create("hourly", "cron(0 * * * ? *)")
    # When two and a half hours pass
    rig.clock.advance(timedelta(hours=2, minutes=30))
    # Then the function was invoked at 09:00 and 10:00 (08:00, the creation instant, has passed)
    assert rig.fired() == [utc(2027, 1, 4, 9), utc(2027, 1, 4, 10)]
    assert [(arn, event) for arn, event, _ in rig.lambdas.calls] == [(FUNCTION, {"schedule": "hourly"})] * 2


def test_rate_without_start_date_fires_at_creation_then_every_period(rig: Rig) -> None:
    rig.create("every-20", "rate(20 minutes)")
    rig.clock.advance(timedelta(hours=1))
    assert rig.fired() == [utc(2027, 1, 4, 8, m) for m in (0, 20, 40)] + [utc(2027, 1, 4, 9)]


def test_rate_with_start_and_end_dates(rig: Rig) -> None:
    # StartDate sets the first occurrence; EndDate is exclusive
    rig.create("window", "rate(30 minutes)", StartDate=utc(2027, 1, 4, 8, 45), EndDate=utc(2027, 1, 4, 10, 15))
    rig.clock.advance(timedelta(hours=4))
    assert rig.fired() == [utc(2027, 1, 4, 8, 45), utc(2027, 1, 4, 9, 15), utc(2027, 1, 4, 9, 45)]


def test_cron_respects_start_and_end_dates(rig: Rig) -> None:
    rig.create("daily", "cron(0 6 * * ? *)", StartDate=utc(2027, 1, 6), EndDate=utc(2027, 1, 8, 6, 0))
    rig.clock.advance(timedelta(days=7))
    # 6 and 7 January; 8 January at 06:00 is the EndDate itself
    assert rig.fired() == [utc(2027, 1, 6, 6), utc(2027, 1, 7, 6)]


def test_rate_in_days_is_24_hours_across_a_dst_change(rig: Rig) -> None:
    # Berlin springs forward on Sunday 28 March 2027; a day stays 24 hours of elapsed time
    rig.clock.advance(utc(2027, 3, 27, 7, 0) - rig.clock.now())
    rig.create(
        "daily-rate",
        "rate(1 day)",
        ScheduleExpressionTimezone="Europe/Berlin",
        StartDate=utc(2027, 3, 27, 8, 0),
    )
    rig.clock.advance(timedelta(days=3))
    assert rig.fired() == [utc(2027, 3, 27, 8), utc(2027, 3, 28, 8), utc(2027, 3, 29, 8)]


def test_cron_in_berlin_over_a_week_across_spring_forward(rig: Rig) -> None:
    # Given office-days 09:00 Berlin time, created on Thursday 25 March 2027 at 00:00 UTC
    rig.clock.advance(utc(2027, 3, 25) - rig.clock.now())
    rig.create("office", "cron(0 9 ? * MON-FRI *)", ScheduleExpressionTimezone="Europe/Berlin")
    # When a week passes in one advance
    rig.clock.advance(timedelta(days=7))
    # Then 09:00 CET is 08:00 UTC before Sunday 28 March, 09:00 CEST is 07:00 UTC after it
    assert rig.fired() == [
        utc(2027, 3, 25, 8),
        utc(2027, 3, 26, 8),
        utc(2027, 3, 29, 7),
        utc(2027, 3, 30, 7),
        utc(2027, 3, 31, 7),
    ]


def test_a_state_machine_target_is_started_with_the_input(rig: Rig) -> None:
    machine = rig.sfn.create_state_machine(
        name="pause",
        definition=json.dumps({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}}),
        roleArn=ROLE,
    )["stateMachineArn"]
    payload = json.dumps({"environment": "analytics", "action": "pause"})
    rig.create("evening-pause", "cron(0 19 ? * MON-FRI *)", Target={"Arn": machine, "RoleArn": ROLE, "Input": payload})
    rig.clock.advance(timedelta(hours=12))
    executions = rig.sfn.list_executions(stateMachineArn=machine)["executions"]
    assert len(executions) == 1
    assert rig.engine.firings[0].outcome == executions[0]["executionArn"]
    described = rig.sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert json.loads(described["input"]) == {"environment": "analytics", "action": "pause"}
    deadline = time.monotonic() + 10
    while described["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
        described = rig.sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"environment": "analytics", "action": "pause"}


def test_one_time_schedule_with_delete_after_completion(rig: Rig) -> None:
    # 10:30 in New York on 4 January 2027 (EST) is 15:30 UTC
    rig.create(
        "resume-once",
        "at(2027-01-04T10:30:00)",
        ScheduleExpressionTimezone="America/New_York",
        ActionAfterCompletion="DELETE",
    )
    rig.create("kept-once", "at(2027-01-04T10:30:00)", ScheduleExpressionTimezone="America/New_York")
    rig.clock.advance(timedelta(hours=7, minutes=29))
    assert rig.fired() == []
    rig.clock.advance(timedelta(minutes=1))
    assert rig.fired("resume-once") == [utc(2027, 1, 4, 15, 30)]
    assert rig.fired("kept-once") == [utc(2027, 1, 4, 15, 30)]
    with pytest.raises(ClientError) as raised:
        rig.scheduler.get_schedule(Name="resume-once")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Without DELETE the schedule stays, and never fires again
    assert rig.schedule_names() == {"kept-once"}
    rig.clock.advance(timedelta(days=400))
    assert len(rig.engine.firings) == 2


def test_an_at_time_already_past_never_fires(rig: Rig) -> None:
    rig.create("late", "at(2027-01-04T07:00:00)")
    rig.clock.advance(timedelta(days=1))
    assert rig.fired() == []


def test_disabled_schedules_do_not_fire_and_missed_times_stay_missed(rig: Rig) -> None:
    rig.create("hourly", "cron(0 * * * ? *)", State="DISABLED")
    rig.clock.advance(timedelta(hours=3))
    assert rig.fired() == []
    # When it is enabled at 11:00, only later hours fire
    rig.scheduler.update_schedule(
        Name="hourly",
        ScheduleExpression="cron(0 * * * ? *)",
        FlexibleTimeWindow=OFF,
        Target={"Arn": FUNCTION, "RoleArn": ROLE},
        State="ENABLED",
    )
    rig.clock.advance(timedelta(hours=2))
    assert rig.fired() == [utc(2027, 1, 4, 12), utc(2027, 1, 4, 13)]
    # an enabled target without Input receives {}
    assert rig.lambdas.calls[0][1] == {}


def test_schedules_in_every_group_fire_in_time_order(rig: Rig) -> None:
    rig.scheduler.create_schedule_group(Name="fleet")
    rig.create("late-group", "cron(30 8 * * ? *)", GroupName="fleet")
    rig.create("early-default", "cron(15 8 * * ? *)")
    rig.create("same-instant", "cron(30 8 * * ? *)")
    rig.clock.advance(timedelta(hours=1))
    assert [(f.group, f.schedule, f.scheduled_for.minute) for f in rig.engine.firings] == [
        ("default", "early-default", 15),
        # one instant: by group, then name
        ("default", "same-instant", 30),
        ("fleet", "late-group", 30),
    ]


def test_a_large_advance_fires_every_missed_instant_in_order(rig: Rig) -> None:
    rig.create("hourly", "rate(1 hour)")
    rig.create("daily", "cron(0 12 * * ? *)")
    rig.clock.advance(timedelta(days=30))
    hourly = rig.fired("hourly")
    assert len(hourly) == 30 * 24 + 1  # the creation instant and every hour up to the end inclusive
    assert hourly[0] == utc(2027, 1, 4, 8) and hourly[-1] == utc(2027, 2, 3, 8)
    assert len(rig.fired("daily")) == 30
    assert rig.fired() == sorted(rig.fired())


def test_a_catch_up_limit_stops_one_advance_and_the_next_carries_on(rig: Rig) -> None:
    engine = ScheduleFiringEngine(rig.clock, rig.scheduler, rig.sfn, rig.lambdas, max_firings_per_advance=5)
    rig.engine.close()
    rig.engine = engine.attach()
    rig.create("minutely", "rate(1 minute)")
    with pytest.raises(CatchUpLimitExceeded):
        rig.clock.advance(timedelta(minutes=9))
    assert len(engine.firings) == 5
    rig.clock.advance(timedelta(0))  # the next advance fires the rest of the missed instants
    assert rig.fired() == [utc(2027, 1, 4, 8, m) for m in range(10)]


def test_a_schedule_created_by_a_target_appears_at_the_fired_instant(rig: Rig) -> None:
    # Given a nightly target that creates a one-time schedule an hour after it runs (ready-by style)
    def creating_lambda(function_arn: str, event: Any) -> Any:
        rig.lambdas(function_arn, event)
        if event.get("schedule") == "nightly":
            rig.create("follow-up", "at(2027-01-04T21:00:00)", ActionAfterCompletion="DELETE")
        return None

    engine = ScheduleFiringEngine(rig.clock, rig.scheduler, rig.sfn, creating_lambda)
    rig.engine.close()
    rig.engine = engine.attach()
    rig.create("nightly", "cron(0 20 * * ? *)")
    # When a whole day passes in one advance
    rig.clock.advance(timedelta(days=1))
    # Then the follow-up, created "at 20:00", fired at 21:00 in the same advance and was deleted
    assert [(f.schedule, f.scheduled_for) for f in engine.firings] == [
        ("nightly", utc(2027, 1, 4, 20)),
        ("follow-up", utc(2027, 1, 4, 21)),
    ]
    assert rig.schedule_names() == {"nightly"}


def test_recurring_schedule_with_delete_is_removed_after_its_end_date(rig: Rig) -> None:
    rig.create("temporary", "rate(1 hour)", EndDate=utc(2027, 1, 4, 10, 30), ActionAfterCompletion="DELETE")
    rig.clock.advance(timedelta(hours=2))
    assert rig.schedule_names() == {"temporary"}
    rig.clock.advance(timedelta(hours=1))
    assert rig.fired() == [utc(2027, 1, 4, 8), utc(2027, 1, 4, 9), utc(2027, 1, 4, 10)]
    assert rig.schedule_names() == set()


def test_a_flexible_window_fires_at_its_start(rig: Rig) -> None:
    rig.create("flexible", "cron(0 9 * * ? *)", FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15})
    rig.clock.advance(timedelta(hours=2))
    assert rig.fired() == [utc(2027, 1, 4, 9)]


def test_a_failing_target_is_recorded_and_the_clock_moves_on(rig: Rig) -> None:
    rig.lambdas.fail = True
    rig.create("broken", "cron(0 9 * * ? *)")
    rig.create(
        "missing-target", "cron(0 9 * * ? *)", Target={"Arn": "arn:aws:sqs:us-east-1:123456789012:q", "RoleArn": ROLE}
    )
    rig.clock.advance(timedelta(hours=2))
    assert [(f.schedule, f.error) for f in rig.engine.failures()] == [
        ("broken", "RuntimeError: handler failed"),
        (
            "missing-target",
            "ValueError: target 'arn:aws:sqs:us-east-1:123456789012:q' is not a state machine or a Lambda function",
        ),
    ]
    assert rig.clock.now() == utc(2027, 1, 4, 10)


def test_an_invalid_expression_in_moto_is_refused_with_the_schedule_name(rig: Rig) -> None:
    # moto accepts anything at create time
    rig.create("typo", "cron(0 9 * * * *)")
    with pytest.raises(ScheduleExpressionError, match=r"default/typo.*exactly one of day-of-month"):
        rig.clock.advance(timedelta(minutes=1))


def test_a_closed_engine_fires_nothing(rig: Rig) -> None:
    rig.create("hourly", "rate(1 hour)")
    rig.engine.close()
    rig.clock.advance(timedelta(hours=3))
    assert rig.fired() == []
