"""The pause's REST-path drain (pause/rest_fallback.py), step by step as the workflow retries it:
real state table (moto DynamoDB) and a local backup store; Airflow's REST API is a small in-memory
stand-in here (the full path runs against real Airflow 3 in tests/workflow/test_pause_resume_airflow3.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from moto import mock_aws

from mwaa_control.metadata.manifest import PAUSE_STATES, backup_prefix
from mwaa_control.metadata.store import LocalStore
from mwaa_control.pause.models import DrainOptions, Operation
from mwaa_control.pause.rest_fallback import (
    DrainPending,
    DrainTimedOut,
    RestPathLossesNotAccepted,
    RestPathService,
)
from mwaa_control.pause.service import LockLost
from mwaa_control.pause.state import PauseStateTable

if TYPE_CHECKING:
    from mwaa_control.airflow.client import AirflowClient
    from mwaa_control.metadata.sealing import KeyService

ENV = "no-creds"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:pause:one"
BACKUP = "20261130T200000Z-0000beef"


@dataclass
class FakeAirflow:
    """Airflow 3's REST API as the drain uses it: DAGs with pause states, unfinished task instances."""

    paused: dict[str, bool]
    running: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, bool]] = field(default_factory=list)

    def paged(self, path: str, field_name: str, page_size: int = 100) -> Iterator[dict[str, Any]]:
        if (path, field_name) != ("/dags", "dags"):
            raise RuntimeError(f"{path}: not in this stand-in")
        return iter([{"dag_id": d, "is_paused": p} for d, p in list(self.paused.items())])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.calls.append((dag_id, paused))
        self.paused[dag_id] = paused

    def batch_list(self, path: str, field_name: str, body: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        assert field_name == "task_instances" and body is not None and "running" in body["state"]
        return iter(self.running)


@dataclass
class World:
    service: RestPathService
    airflow: FakeAirflow
    store: LocalStore
    state: PauseStateTable
    now: list[datetime]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="state",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        now = [datetime(2026, 11, 30, 20, tzinfo=UTC)]
        state = PauseStateTable(dynamodb, "state", execution_running=lambda _: True, clock=lambda: now[0])
        state.acquire(ENV, Operation.PAUSE, EXECUTION)
        state.update(ENV, pending_backup_id=BACKUP)
        airflow = FakeAirflow(
            paused={"hello": False, "reports": True, "mwaa_control_metadata_export": False},
            running=[{"dag_id": "hello", "dag_run_id": "r1", "task_id": "t", "map_index": -1, "state": "running"}],
        )
        store = LocalStore(tmp_path)
        service = RestPathService(
            state=state,
            store=store,
            keys=cast("KeyService", None),  # never reached: these tests stop before the backup is written
            airflow_for=lambda _: cast("AirflowClient", airflow),
            clock=lambda: now[0],
        )
        yield World(service, airflow, store, state, now)


def _recorded(world: World) -> dict[str, bool]:
    return dict(json.loads(world.store.get_bytes(f"{backup_prefix(ENV, BACKUP)}/{PAUSE_STATES}")))


def test_without_acceptance_nothing_is_paused_or_written(world: World) -> None:
    with pytest.raises(RestPathLossesNotAccepted, match="accept_rest_path_losses"):
        world.service.back_up(ENV, EXECUTION, BACKUP, DrainOptions(), accepted=False)
    assert world.airflow.calls == []
    assert not world.store.occupied(backup_prefix(ENV, BACKUP))


def test_a_drain_records_the_states_once_pauses_and_waits_across_retries(world: World) -> None:
    drain = DrainOptions(timeout=600, on_timeout="abort")
    # When the first attempt finds a task running
    with pytest.raises(DrainPending, match="1 tasks still run"):
        world.service.back_up(ENV, EXECUTION, BACKUP, drain, accepted=True)
    # Then the states from before the drain are recorded (not the control plane's own DAGs) and
    # the unpaused DAG is paused
    assert _recorded(world) == {"hello": False, "reports": True}
    assert world.airflow.calls == [("hello", True)]
    # And a retry a few minutes later keeps what the first attempt recorded, though all is paused now
    world.now[0] += timedelta(minutes=5)
    with pytest.raises(DrainPending):
        world.service.back_up(ENV, EXECUTION, BACKUP, drain, accepted=True)
    assert _recorded(world) == {"hello": False, "reports": True}
    # And a DAG someone unpaused during the drain is paused again
    world.airflow.paused["hello"] = False
    with pytest.raises(DrainPending):
        world.service.back_up(ENV, EXECUTION, BACKUP, drain, accepted=True)
    assert world.airflow.calls == [("hello", True), ("hello", True)]
    # And once the timeout has passed with the task still running, an aborting drain fails, unpauses
    # what it paused and removes what it recorded
    world.now[0] += timedelta(minutes=6)
    with pytest.raises(DrainTimedOut, match="nothing was deleted"):
        world.service.back_up(ENV, EXECUTION, BACKUP, drain, accepted=True)
    assert world.airflow.paused == {"hello": False, "reports": True, "mwaa_control_metadata_export": False}
    assert world.airflow.calls[-1] == ("hello", False)
    assert not world.store.occupied(backup_prefix(ENV, BACKUP))


def test_tasks_a_paused_dag_never_moves_forward_do_not_hold_the_drain(world: World) -> None:
    # Given only a task waiting for a retry (the scheduler moves nothing of a paused DAG)
    world.airflow.running = [
        {"dag_id": "hello", "dag_run_id": "r1", "task_id": "t", "map_index": -1, "state": "up_for_retry"}
    ]
    # When the drain looks, it goes straight on to the backup (which fails here: no API behind it)
    with pytest.raises(Exception) as failed:
        world.service.back_up(ENV, EXECUTION, BACKUP, DrainOptions(timeout=600), accepted=True)
    assert not isinstance(failed.value, DrainPending)
    # Then the failure unpaused what the drain paused and left nothing under the backup's prefix
    assert world.airflow.calls == [("hello", True), ("hello", False)]
    assert not world.store.occupied(backup_prefix(ENV, BACKUP))


def test_an_unreadable_drain_start_stops_the_drain_and_puts_the_dags_back(world: World) -> None:
    prefix = backup_prefix(ENV, BACKUP)
    world.store.put_bytes(f"{prefix}/rest-drain.json", b'{"began_at": "not a time"}')
    with pytest.raises(Exception, match="not the start a drain records"):
        world.service.back_up(ENV, EXECUTION, BACKUP, DrainOptions(), accepted=True)
    assert world.airflow.paused["hello"] is False
    assert not world.store.occupied(prefix)


def test_recorded_states_that_are_not_a_drains_are_refused(world: World) -> None:
    world.store.put_bytes(f"{backup_prefix(ENV, BACKUP)}/{PAUSE_STATES}", b'{"hello": "yes"}')
    with pytest.raises(Exception, match="not the pause states a drain writes"):
        world.service.back_up(ENV, EXECUTION, BACKUP, DrainOptions(), accepted=True)
    assert world.airflow.calls == []


def test_an_execution_without_the_lock_changes_nothing(world: World) -> None:
    other = EXECUTION.replace(":one", ":two")
    with pytest.raises(LockLost):
        world.service.back_up(ENV, other, BACKUP, DrainOptions(), accepted=True)
    with pytest.raises(LockLost, match="not the one this pause planned"):
        world.service.back_up(ENV, EXECUTION, BACKUP.replace("beef", "cafe"), DrainOptions(), accepted=True)
    assert world.airflow.calls == []
    assert not world.store.occupied(backup_prefix(ENV, BACKUP))
