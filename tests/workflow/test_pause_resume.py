"""The pause and resume workflows: the real ASL executed by moto's interpreter, the real Lambdas
(with their template IAM), the MWAA emulator's lifecycle on the local cloud's clock, and real
Airflow executing the export/import DAGs, which report back through their task tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from localcloud import LocalCloud
from localcloud.lifecycle import (
    BUDGET_INVOCATIONS,
    BUDGET_TRANSITIONS,
    cost_of,
    failures,
    history,
    run_until_done,
    start,
    upload_environment_files,
)
from localcloud.network import SharedVpc, build_shared_vpc
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE
from tests.conftest import create_request

ROOT = Path(__file__).resolve().parents[2]
DAG_BUCKET = "mwaa-dags"


@dataclass
class Observers:
    alerts: str
    events: str


def observe(cloud: LocalCloud) -> Observers:
    """SQS queues that receive the alert topic's notifications and the workflows' events."""
    sqs, sns, events = cloud.client("sqs"), cloud.client("sns"), cloud.client("events")
    alerts = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    announced = sqs.create_queue(QueueName="announced")["QueueUrl"]

    def arn(url: str) -> str:
        return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    sns.subscribe(TopicArn=cloud.physical["AlertTopic"], Protocol="sqs", Endpoint=arn(alerts))
    events.put_rule(Name="mwaa-control-events", EventPattern=json.dumps({"source": ["mwaa-control"]}))
    events.put_targets(Rule="mwaa-control-events", Targets=[{"Id": "queue", "Arn": arn(announced)}])
    return Observers(alerts, announced)


def drain_queue(cloud: LocalCloud, url: str) -> list[dict[str, Any]]:
    sqs = cloud.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def entered(cloud: LocalCloud, execution: str) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history(cloud, execution) if "stateEnteredEventDetails" in e]


def state_record(cloud: LocalCloud, environment: str) -> dict[str, Any] | None:
    item = (
        cloud.client("dynamodb")
        .get_item(TableName=cloud.physical["LockTable"], Key={"pk": {"S": f"environment#{environment}"}})
        .get("Item")
    )
    return None if item is None else dict(json.loads(item["record"]["S"]))


def lock_of(cloud: LocalCloud, environment: str) -> dict[str, Any] | None:
    item = (
        cloud.client("dynamodb")
        .get_item(TableName=cloud.physical["LockTable"], Key={"pk": {"S": f"operation#{environment}"}})
        .get("Item")
    )
    return None if item is None else dict(item)


def create_environment(
    cloud: LocalCloud, vpc: SharedVpc, name: str, *, opted_in: bool = True, **overrides: Any
) -> None:
    tags = {"team": "data"} | ({OPT_IN_TAG: OPT_IN_VALUE} if opted_in else {})
    request = create_request(name, vpc, EndpointManagement="SERVICE", AirflowVersion="2.11.0", Tags=tags)
    request.update(overrides)
    cloud.client("mwaa").create_environment(**request)
    cloud.run_for(timedelta(minutes=40))
    assert cloud.client("mwaa").get_environment(Name=name)["Environment"]["Status"] == "AVAILABLE"


@pytest.fixture
def lifecycle_cloud() -> Iterator[tuple[LocalCloud, SharedVpc, Observers]]:
    with LocalCloud() as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        s3 = cloud.client("s3")
        s3.create_bucket(Bucket=DAG_BUCKET)
        yield cloud, vpc, observe(cloud)


def test_a_pause_of_an_environment_that_did_not_opt_in_changes_nothing_and_notifies(
    lifecycle_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = lifecycle_cloud
    create_environment(cloud, vpc, "not-opted-in", opted_in=False)
    execution = start(cloud, "PauseStateMachine", "refused", {"environment": "not-opted-in"})
    described = run_until_done(cloud, execution)

    assert described["status"] == "FAILED"
    assert cloud.client("mwaa").get_environment(Name="not-opted-in")["Environment"]["Status"] == "AVAILABLE"
    states = entered(cloud, execution)
    assert "Back up the metadata (export DAG, drained)" not in states
    assert "Delete the environment and wait until it is gone" not in states
    alerts = drain_queue(cloud, observers.alerts)
    assert len(alerts) == 1 and "not opted in" in alerts[0]["Message"].replace("has not opted in", "not opted in")
    announced = drain_queue(cloud, observers.events)
    assert [e["detail-type"] for e in announced] == ["MWAA Environment Pause Failed"]
    assert announced[0]["detail"]["stage"] == "prepare"
    assert lock_of(cloud, "not-opted-in") is None
    assert state_record(cloud, "not-opted-in") is None  # refused before anything was recorded


def test_resume_without_a_verified_backup_is_refused(
    lifecycle_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, _, observers = lifecycle_cloud
    execution = start(cloud, "ResumeStateMachine", "nothing-to-resume", {"environment": "never-paused"})
    described = run_until_done(cloud, execution)
    assert described["status"] == "FAILED"
    assert "Create the environment (or adopt an identical one) and wait until AVAILABLE" not in entered(
        cloud, execution
    )
    alerts = drain_queue(cloud, observers.alerts)
    assert len(alerts) == 1 and "no verified backup" in alerts[0]["Message"]
    assert cloud.client("mwaa").list_environments()["Environments"] == []


# --- the whole cycle on real Airflow ---------------------------------------------------------------
HELLO = """
from datetime import datetime
from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("hello", start_date=datetime(2024, 1, 1), schedule=None, catchup=False, is_paused_upon_creation=False):
    EmptyOperator(task_id="only")
"""
RUN_KEY = ("dag_id", "run_id")
TI_KEY = ("dag_id", "run_id", "task_id", "map_index")


def step_outputs(cloud: LocalCloud, execution: str, marker: str) -> list[dict[str, Any]]:
    """The results of the execution's Lambda steps whose output names `marker`."""
    found = []
    for event in history(cloud, execution):
        details = event.get("taskSucceededEventDetails") or {}
        if f'"{marker}"' in details.get("output", ""):
            payload = json.loads(details["output"])
            found.append(payload.get("Payload", payload))
    return found


def rows_by(
    rows: list[dict[str, Any]], key: tuple[str, ...], columns: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {tuple(r[k] for k in key): tuple(r[c] for c in columns) for r in rows}


def read_database(backend: Any) -> dict[str, list[dict[str, Any]]]:
    import sqlalchemy as sa

    from tests.metadata.compare import decrypt, read_table

    engine = sa.create_engine(f"sqlite:///{backend.home / 'airflow.db'}")
    try:
        tables = ("dag", "dag_run", "task_instance", "variable", "connection", "slot_pool", "log", "job", "xcom")
        return {t: decrypt(read_table(engine, t), t, backend.fernet_key) for t in tables}
    finally:
        engine.dispose()


def test_a_paused_and_resumed_environment_comes_back_with_its_metadata(
    lifecycle_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = lifecycle_cloud
    version = upload_environment_files(cloud, DAG_BUCKET, {"hello": HELLO})
    name = "etl-prod"
    create_environment(
        cloud,
        vpc,
        name,
        DagS3Path="dags",
        PluginsS3Path="plugins.zip",
        PluginsS3ObjectVersion=version,
        AirflowConfigurationOptions={
            "core.default_task_retries": "2",
            "secrets.backend_kwargs": '{"token": "s3cr3t-option"}',
        },
    )
    first = cloud.emulator.airflow(cloud.account, cloud.region, name)
    first.ensure_ready()
    seeded = first.seed_metadata()
    first.parse_dags()
    before = read_database(first)
    paused_before = {d["dag_id"]: d["is_paused"] for d in before["dag"] if not d["dag_id"].startswith("mwaa_control_")}

    invocations_before = len(cloud.lambdas.invocations)
    pause = start(
        cloud,
        "PauseStateMachine",
        "pause-1",
        {"environment": name, "drain": {"timeout": 10, "poll": 2, "on_timeout": "proceed"}},
    )
    described = run_until_done(cloud, pause, timeout=900)
    assert described["status"] == "SUCCEEDED", failures(cloud, pause)
    assert cloud.client("mwaa").list_environments()["Environments"] == []
    assert not first.home.exists(), "deleting the environment deletes its database"
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "PAUSED" and record["last_good_backup_id"]
    # How long the export took, from its manifest (the BackupSeconds metric).
    [verified] = step_outputs(cloud, pause, "authentication")
    assert isinstance(verified["seconds"], float) and 0 < verified["seconds"] < 600
    # The pause is measured on the control plane's clock (the local cloud's): open until a resume.
    [interval] = record["paused_intervals"]
    assert interval["resumed_at"] is None
    paused_at = datetime.fromisoformat(interval["paused_at"])
    assert paused_at <= cloud.clock.now() and cloud.clock.now() - paused_at < timedelta(hours=1)
    backup_id = record["last_good_backup_id"]
    stored = cloud.client("s3").list_objects_v2(Bucket=cloud.physical["MetadataBackupBucket"])["Contents"]
    keys = [o["Key"] for o in stored]
    assert (
        f"backups/{name}/{backup_id}/manifest.json" in keys and f"snapshots/{name}/{backup_id}/environment.json" in keys
    )
    for obj in stored:  # secrets never in plaintext: seeded markers, the configuration option
        body = (
            cloud.client("s3").get_object(Bucket=cloud.physical["MetadataBackupBucket"], Key=obj["Key"])["Body"].read()
        )
        assert b"s3cr3t-option" not in body
    assert lock_of(cloud, name) is None

    resume = start(cloud, "ResumeStateMachine", "resume-1", {"environment": name})
    described = run_until_done(cloud, resume, timeout=900)
    assert described["status"] == "SUCCEEDED", failures(cloud, resume)
    env = cloud.client("mwaa").get_environment(Name=name)["Environment"]
    assert env["Status"] == "AVAILABLE"
    assert env["AirflowConfigurationOptions"] == {
        "core.default_task_retries": "2",
        "secrets.backend_kwargs": '{"token": "s3cr3t-option"}',
    }
    assert env["PluginsS3ObjectVersion"] == version
    assert cloud.client("mwaa").list_tags_for_resource(ResourceArn=env["Arn"])["Tags"][OPT_IN_TAG] == OPT_IN_VALUE
    second = cloud.emulator.airflow(cloud.account, cloud.region, name)
    assert second.fernet_key != first.fernet_key
    after = read_database(second)

    # Run history, task instances, configuration and secrets, as before (ids may differ).
    for table, key, columns in (
        ("dag_run", RUN_KEY, ("state", "run_type", "execution_date")),
        ("task_instance", TI_KEY, ("state", "try_number", "pool")),
        ("variable", ("key",), ("val", "description")),
        ("connection", ("conn_id",), ("conn_type", "host", "login", "password", "extra", "port")),
        ("slot_pool", ("pool",), ("slots",)),
    ):
        old = rows_by(
            [r for r in before[table] if not str(r.get("dag_id", "")).startswith("mwaa_control_")], key, columns
        )
        new = rows_by(after[table], key, columns)
        assert {k: new.get(k) for k in old} == old, table
    paused_after = {d["dag_id"]: d["is_paused"] for d in after["dag"]}
    assert {k: paused_after.get(k) for k in paused_before} == paused_before
    assert seeded["secret_markers"], "the seed planted secrets"
    record = state_record(cloud, name)
    assert record is not None and record["phase"] == "ACTIVE" and record["creation_seconds"]
    # The import DAG's restore time and the paused hours (RestoreSeconds, PausedHours metrics).
    [finished] = step_outputs(cloud, resume, "creation_seconds")
    assert isinstance(finished["restore_seconds"], float) and 0 < finished["restore_seconds"] < 600
    assert finished["paused_hours"] > 0 and finished["saved_usd"] is not None
    [interval] = record["paused_intervals"]  # closed when the resume asked MWAA to create it
    assert datetime.fromisoformat(interval["paused_at"]) == paused_at
    assert paused_at < datetime.fromisoformat(interval["resumed_at"]) < cloud.clock.now()
    assert lock_of(cloud, name) is None
    # What the cycle cost (the budget; the endpoint automation's handlers not counted).
    cost = cost_of(cloud, [pause, resume], invocations_before)
    assert cost.total_transitions <= BUDGET_TRANSITIONS, cost.transitions
    assert cost.total_invocations <= BUDGET_INVOCATIONS, cost.invocations
    announced = [e["detail-type"] for e in drain_queue(cloud, observers.events)]
    assert announced == ["MWAA Environment Paused", "MWAA Environment Resumed"]
