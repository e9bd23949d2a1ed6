"""The fleet scheduler on the local cloud: the real handler (with its template IAM) reads the fleet
document from the stack's bucket, the emulated MWAA environments, the state table and the
overrides, starts pause/resume executions in moto, and sets its one-time wake-up schedule."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator

import pytest

from localcloud import LocalCloud
from localcloud.network import SharedVpc, build_shared_vpc
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE
from mwaa_control.schedules.evaluate import Reason
from mwaa_control.schedules.fleet import FleetAction, PlannedExecution, execution_name
from mwaa_control.schedules.fleet_adapters import ExecutionStarter
from mwaa_control.schedules.model import Override, OverrideKind
from mwaa_control.schedules.overrides import OverrideStore
from tests.conftest import create_request
from tests.fleet_support import settle_workflows, write_paused_environment

ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
FLEET = {
    "version": 1,
    "schedules": {
        "always": {
            "timezone": "Europe/Berlin",
            "periods": [{**ALWAYS, "start": "00:00", "stop": "12:00"}, {**ALWAYS, "start": "12:00", "stop": "00:00"}],
        },
    },
    "environments": {"etl-a": "always", "etl-b": "always", "etl-paused": "always"},
    "allow_tag_assignment": True,  # etl-c picks its schedule by its own tag
}
AIRFLOW_CALLS = ("CreateCliToken", "CreateWebLoginToken", "InvokeRestApi")


@pytest.fixture
def fleet_cloud() -> Iterator[tuple[LocalCloud, SharedVpc]]:
    with LocalCloud() as cloud:
        yield cloud, build_shared_vpc(cloud.client("ec2"))
        settle_workflows(cloud, stop=True, timeout=120.0)


def _executions(cloud: LocalCloud) -> set[str]:
    sfn = cloud.client("stepfunctions")
    return {
        e["name"]
        for machine in ("PauseStateMachine", "ResumeStateMachine")
        for e in sfn.list_executions(stateMachineArn=cloud.physical[machine])["executions"]
    }


def test_the_scheduler_starts_each_due_transition_once(fleet_cloud: tuple[LocalCloud, SharedVpc]) -> None:
    cloud, vpc = fleet_cloud
    # The pauses it starts run for real; they must not start Airflow on this machine.
    for operation in AIRFLOW_CALLS:
        cloud.emulator.inject_fault(operation, "AccessDeniedException", status=403, times=10_000, message="test")
    mwaa = cloud.client("mwaa")
    for name in ("etl-a", "etl-b", "etl-c"):
        tags = {OPT_IN_TAG: OPT_IN_VALUE} | ({"mwaa-control:schedule": "always"} if name == "etl-c" else {})
        mwaa.create_environment(
            **create_request(name, vpc, EndpointManagement="SERVICE", AirflowVersion="2.11.0", Tags=tags)
        )
    cloud.run_for(dt.timedelta(minutes=40))
    assert {mwaa.get_environment(Name=n)["Environment"]["Status"] for n in ("etl-a", "etl-b", "etl-c")} == {"AVAILABLE"}
    write_paused_environment(cloud, "etl-paused", creation_seconds=(1500.0, 1600.0, 1550.0))
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"], Key="fleet/schedules.json", Body=json.dumps(FLEET).encode()
    )
    # Always running, but the operators keep etl-a and etl-b paused for a day.
    now = cloud.clock.now()  # what the in-process functions read too
    store = OverrideStore(cloud.client("dynamodb"), cloud.physical["LockTable"])
    for name in ("etl-a", "etl-b"):
        store.add(
            Override(
                environment=name,
                kind=OverrideKind.STAY_PAUSED,
                created_at=now - dt.timedelta(minutes=5),
                until=now + dt.timedelta(days=1),
            )
        )

    first = cloud.lambdas.invoke("FleetSchedulerFunction", {"source": "fleet-periodic"})

    stamp = (now - dt.timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ")
    # The resume's schedule never changes: its due instant is the start of the UTC day.
    day = now.strftime("%Y%m%dT000000Z")
    assert sorted(first["started"]) == [f"etl-a-pause-{stamp}", f"etl-b-pause-{stamp}", f"etl-paused-resume-{day}"]
    assert _executions(cloud) == set(first["started"])
    assert first["decision"]["in_step"] == ["etl-c"]  # assigned by its tag, running as it should
    assert first["failures"] == {}
    # The wake-up: the overrides' expiry, one-time, deleting itself, invoking this function.
    schedule = cloud.client("scheduler").get_schedule(Name=os.environ["FLEET_WAKE_UP_SCHEDULE"])
    until = (now + dt.timedelta(days=1)).replace(microsecond=0) + dt.timedelta(seconds=1 if now.microsecond else 0)
    assert schedule["ScheduleExpression"] == f"at({until.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["Target"]["Arn"].endswith(":function:FleetSchedulerFunction")
    assert schedule["Target"]["RoleArn"].endswith("/FleetWakeUpRole")

    second = cloud.lambdas.invoke("FleetSchedulerFunction", {"source": "fleet-wake-up"})

    # A name that exists is the same execution: not started again, and not counted as started.
    assert second["started"] == []
    assert set(second["already_started"]) <= set(first["started"])
    assert _executions(cloud) == set(first["started"])  # nothing new started
    assert second["failures"] == {}


def test_a_planned_execution_that_exists_is_reported_as_already_started(
    fleet_cloud: tuple[LocalCloud, SharedVpc],
) -> None:
    cloud, _ = fleet_cloud
    starter = ExecutionStarter(
        cloud.client("stepfunctions"),
        pause_state_machine=cloud.physical["PauseStateMachine"],
        resume_state_machine=cloud.physical["ResumeStateMachine"],
    )
    due = cloud.clock.now()
    planned = PlannedExecution(
        environment="etl-gone",  # does not exist: the pause ends at once, refused
        action=FleetAction.PAUSE,
        reason=Reason.OUTSIDE_PERIODS,
        due=due,
        name=execution_name("etl-gone", FleetAction.PAUSE, due),
    )
    assert starter.start(planned) == "started"
    assert starter.start(planned) == "already-started"
    assert len(_executions(cloud)) == 1
    settle_workflows(cloud)  # the refused pause ends by itself (moto cannot stop one that is starting)
