"""The firing engine wired into LocalCloud: it lists schedules only after a schedule was written
(an after-call hook), so a schedule written by any client, including one a Lambda handler creates
in-process, must still fire, and an advance with nothing changed must not miss a due instant."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from localcloud import LocalCloud

ROLE = "arn:aws:iam::123456789012:role/scheduler"
# A run-DAG input for an environment that does not exist: each execution fails fast and notifies.
RUN_DAG_INPUT = {"environment": "no-such-environment", "dag_id": "d", "conf": {}}


def _settle(sfn: Any, machine: str, timeout: float = 60.0) -> None:
    """The started executions fail (no such environment): let them end inside the test,
    so their interpreter threads do not log into the next test's output."""
    deadline = time.monotonic() + timeout
    while any(e["status"] == "RUNNING" for e in sfn.list_executions(stateMachineArn=machine)["executions"]):
        assert time.monotonic() < deadline, "the test's executions did not end"
        time.sleep(0.2)


def test_schedules_written_through_any_client_fire_on_the_clock() -> None:
    with LocalCloud() as cloud:
        machine = cloud.physical["RunDagStateMachine"]
        sfn = cloud.client("stepfunctions")
        now = cloud.clock.now()
        at = (now + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
        # A fresh client, as a handler would create: the hook is global, not per client.
        cloud.client("scheduler").create_schedule(
            Name="one-shot",
            ScheduleExpression=f"at({at})",
            FlexibleTimeWindow={"Mode": "OFF"},
            ActionAfterCompletion="DELETE",
            Target={"Arn": machine, "RoleArn": ROLE, "Input": json.dumps({**RUN_DAG_INPUT, "marker": "one-shot"})},
        )
        cloud.client("scheduler").create_schedule(
            Name="hourly",
            ScheduleExpression="rate(1 hour)",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": machine, "RoleArn": ROLE, "Input": json.dumps({**RUN_DAG_INPUT, "marker": "hourly"})},
        )
        cloud.run_for(timedelta(minutes=29))
        assert not sfn.list_executions(stateMachineArn=machine)["executions"][1:]  # only rate's first fire
        cloud.run_for(timedelta(hours=2, minutes=31))  # nothing is written in between: no listing
        # rate() fires at creation and every hour after: 0, 1, 2 and 3 hours; at() once, at 30 min.
        inputs = [
            json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["marker"]
            for e in sfn.list_executions(stateMachineArn=machine)["executions"]
        ]
        assert sorted(inputs) == ["hourly", "hourly", "hourly", "hourly", "one-shot"]
        _settle(sfn, machine)
        # The one-time schedule deleted itself after firing, as ActionAfterCompletion says.
        names = [s["Name"] for s in cloud.client("scheduler").list_schedules()["Schedules"]]
        assert names == ["hourly"]
        assert not cloud.scheduler.failures()


def test_the_templates_periodic_functions_run_on_the_clock_when_asked() -> None:
    """SAM's ScheduleV2 events become schedules in moto: the endpoint reconciler and the fleet
    scheduler then run every 15 minutes of the local clock, as deployed."""
    with LocalCloud(fire_template_schedules=True) as cloud:
        cloud.run_for(timedelta(minutes=31))
        fired = [(f.target_arn.rsplit(":", 1)[-1], f.error) for f in cloud.scheduler.firings]
        reconciler = [error for name, error in fired if name == "EndpointReconcilerFunction"]
        fleet = [error for name, error in fired if name == "FleetSchedulerFunction"]
        # rate(15 minutes) from creation: at 0, 15 and 30 minutes.
        assert len(reconciler) == 3 and len(fleet) == 3
        assert reconciler == [None, None, None]
        assert fleet == [None, None, None]  # no fleet document: nothing to schedule, no error
    with LocalCloud() as cloud:
        cloud.run_for(timedelta(minutes=31))
        assert not cloud.scheduler.firings
