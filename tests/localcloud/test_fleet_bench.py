"""The fleet bench's building blocks (bench/fleet_bench.py), fast: the emulator's throttling and its
replaceable quota, the bench's fleet document and timeline, and a new environment's database copied
from a migrated one (with its own Fernet key and secrets) holding the bench's seeded metadata."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fleet_bench import (
    OPENS,
    PAUSE_DUE,
    RESUME_DUE,
    RUN_START,
    SCHEDULES,
    environment_names,
    fleet_document,
    seed_metadata,
)
from localcloud.airflow.backend import AirflowBackend
from localcloud.clock import ManualClock
from localcloud.lifecycle import metadata_fingerprint
from localcloud.mwaa import MwaaApiError
from localcloud.mwaa.emulator import MwaaEmulator
from mwaa_control.schedules.config import parse_fleet_document
from mwaa_control.schedules.evaluate import DesiredState, desired_state

SUBNETS = [
    {"SubnetId": "subnet-a", "VpcId": "vpc-1", "AvailabilityZone": "us-east-1a"},
    {"SubnetId": "subnet-b", "VpcId": "vpc-1", "AvailabilityZone": "us-east-1b"},
]


@pytest.fixture
def emulator() -> Iterator[MwaaEmulator]:
    emulated = MwaaEmulator(ManualClock(), subnet_lookup=lambda *_: SUBNETS, endpoints_exist=lambda *_: True)
    yield emulated
    emulated.close()


def _call(emulator: MwaaEmulator, operation: str, **params: Any) -> str:
    try:
        emulator.call(operation, "123456789012", "us-east-1", params)
    except MwaaApiError as error:
        return f"{error.code} {error.status}"
    return "ok"


def test_throttling_refuses_every_third_call_whatever_the_operation(emulator: MwaaEmulator) -> None:
    throttling = emulator.inject_throttling(every=3)
    answers = [
        _call(emulator, "ListEnvironments") if i % 2 else _call(emulator, "GetEnvironment", Name="absent")
        for i in range(9)
    ]
    refused = "ThrottlingException 429"
    assert [i for i, answer in enumerate(answers) if answer == refused] == [2, 5, 8]
    assert set(answers) - {refused} == {"ok", "ResourceNotFoundException 404"}  # the others are answered
    assert throttling.throttled == {"GetEnvironment": 2, "ListEnvironments": 1}
    assert throttling.counted == {"GetEnvironment": 5, "ListEnvironments": 4}
    assert emulator.stop_throttling() is throttling
    assert [_call(emulator, "ListEnvironments") for _ in range(3)] == ["ok"] * 3


def test_throttling_may_count_some_operations_only(emulator: MwaaEmulator) -> None:
    throttling = emulator.inject_throttling(every=2, operations=["ListEnvironments"])
    answers = [_call(emulator, op, Name="absent") for op in ("ListEnvironments", "GetEnvironment", "ListEnvironments")]
    assert answers == ["ok", "ResourceNotFoundException 404", "ThrottlingException 429"]
    assert throttling.counted == {"ListEnvironments": 2}


def test_the_per_region_quota_is_replaceable(emulator: MwaaEmulator) -> None:
    emulator.quota_per_region = 2
    request = {
        "ExecutionRoleArn": "arn:aws:iam::123456789012:role/mwaa-execution",
        "SourceBucketArn": "arn:aws:s3:::dags",
        "DagS3Path": "dags",
        "NetworkConfiguration": {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]},
    }
    assert [_call(emulator, "CreateEnvironment", Name=f"etl-{i}", **request) for i in range(3)] == [
        "ok",
        "ok",
        "ValidationException 400",
    ]


def test_the_fleet_pauses_and_resumes_at_one_instant_in_three_time_zones() -> None:
    environments = environment_names(50)
    assert len(environments) == 50
    assert set(environments.values()) == set(SCHEDULES)
    assert all(re.fullmatch(r"[a-z]+-etl-\d\d", name) for name in environments)
    document = parse_fleet_document(fleet_document(environments))
    assert {schedule.timezone for schedule in document.schedules.values()} == {z for z, _, _ in SCHEDULES.values()}
    second = dt.timedelta(seconds=1)
    for schedule in document.schedules.values():
        state = {
            at: desired_state(schedule, None, (), (), at).state
            for at in (RUN_START, PAUSE_DUE - second, PAUSE_DUE, RESUME_DUE - second, RESUME_DUE, OPENS)
        }
        assert state == {
            RUN_START: DesiredState.RUNNING,
            PAUSE_DUE - second: DesiredState.RUNNING,
            PAUSE_DUE: DesiredState.PAUSED,
            RESUME_DUE - second: DesiredState.PAUSED,
            RESUME_DUE: DesiredState.RUNNING,  # ready-by: 40 minutes before the office opens
            OPENS: DesiredState.RUNNING,
        }, schedule.name


def _airflow_2(tmp_path: Path, name: str) -> AirflowBackend:
    # No skip: `make test` installs Airflow 2.11 (a missing one is a broken set-up, not a pass).
    return AirflowBackend(tmp_path / name, release="2.11.0")


def test_new_databases_are_copies_with_their_own_key_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MWAA_CONTROL_FAST_AIRFLOW", "1")  # the fleet bench's speed-ups
    first, second = _airflow_2(tmp_path, "first"), _airflow_2(tmp_path, "second")
    for backend in (first, second):
        backend.ensure_ready()
    assert first.fernet_key != second.fernet_key
    configs = [(b.home / "airflow.cfg").read_text() for b in (first, second)]
    assert f"sql_alchemy_conn = sqlite:///{first.home / 'airflow.db'}" in configs[0]
    assert "airflow-backends-" not in configs[0]  # the template's home was replaced everywhere
    keys = [re.findall(r"^secret_key = (.+)$", config, re.MULTILINE) for config in configs]
    assert len(keys[0]) == 1 and keys[0] != keys[1]
    assert (first.home / "airflow.cfg").stat().st_mode & 0o077 == 0
    seed_metadata(first, "first")
    seeded = metadata_fingerprint(first)
    assert [run[2] for run in seeded["dag_run"]] == ["success", "success"]
    assert seeded["variable"] == [("report_bucket", "s3://reports/first")]
    assert seeded["connection"] == [("warehouse", "pw-first")]
    assert metadata_fingerprint(second)["dag_run"] == []  # a database of its own
    listed = first.cli(["variables", "get", "report_bucket"])  # real Airflow reads it with this key
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.strip().splitlines()[-1] == "s3://reports/first"
