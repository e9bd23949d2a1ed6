"""The fault matrix of the pause and resume workflows (issue 11): the real ASL on moto's interpreter,
the real Lambdas with their template IAM, the MWAA emulator on the local cloud's clock and real
Airflow running the export/import DAGs.

Every failing case asserts the same four things: nothing was deleted without a verified backup
(the environment still exists), the last good backup is intact (the state record still names it and
its objects are the same), a notification went out (the SNS alert and the "... Failed" event), and a
re-run converges once the fault is gone.

One module-scoped cloud and one customer-managed-endpoint environment carry the whole story,
because real Airflow costs half a minute per environment generation: a pause that survives
transient faults on every call (generation 1), resumes that fail (persistent CreateEnvironment,
CREATE_FAILED, PENDING without endpoints), a resume with lost events that converges (generation 2),
pauses of generation 2 that fail in every stage, and the final pause that converges. The tests
depend on running in file order (pytest's default)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.handlers import BUILTIN_HANDLERS
from moto.core.exceptions import JsonRESTError
from moto.kms.models import KmsBackend
from moto.s3.exceptions import S3ClientError
from moto.s3.models import S3Backend
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from localcloud import LocalCloud
from localcloud.airflow.backend import AirflowBackend
from localcloud.lambdas import CURRENT_FUNCTION
from localcloud.lifecycle import failures, history, upload_environment_files
from localcloud.mwaa.emulator import Timings
from localcloud.network import SharedVpc, build_shared_vpc
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE
from tests.conftest import create_request, live_endpoints
from tests.workflow.test_pause_resume import observe

ROOT = Path(__file__).resolve().parents[2]
DAG_BUCKET = "mwaa-dags"
NAME = "etl-faults"
PAUSE, RESUME = "PauseStateMachine", "ResumeStateMachine"
WORKER = "PauseResumeFunction"
WAITER = "StatusWaiterFunction"
ENDPOINT_FUNCTIONS = ("EndpointManagerFunction", "EndpointReconcilerFunction")
RECONCILE_EVERY = timedelta(minutes=15)  # the template's ReconcileSchedule default
USER_DAGS = {
    "hello": False,  # runs
    "dormant": True,  # paused by its owner: a put-back must leave it paused
}
DAG_SOURCE = """
from datetime import datetime
from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None, catchup=False,
         is_paused_upon_creation={paused}):
    EmptyOperator(task_id="only")
"""
# The drain of a pause: short, and it never waits for in-flight work longer than this.
DRAIN = {"timeout": 10, "poll": 2, "on_timeout": "proceed"}


# --- faults on AWS calls made inside this process (the Lambdas, the emulator's S3 reads) ---------
@dataclass
class Fault:
    service: str
    operation: str
    code: str
    status: int
    times: int | None  # None: until removed
    function: str | None = None  # only calls made by this function's handler
    matches: Callable[[dict[str, Any]], bool] = lambda request: True
    hits: int = 0


class FaultInjector:
    """botocore `before-call` handler answering chosen calls with an error response.

    before-call short-circuits the HTTP layer, so botocore's own retries never see these answers:
    an injected fault stands for one that outlasted the client's retries (the MWAA emulator's
    `inject_fault` answers over HTTP instead, so botocore does retry those)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        service = model.service_model.endpoint_prefix
        with self._lock:
            for fault in self._faults:
                if (fault.service, fault.operation) != (service, model.name):
                    continue
                if fault.function is not None and CURRENT_FUNCTION.get() != fault.function:
                    continue
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if not fault.matches(params):
                    continue
                fault.hits += 1
                message = f"injected {fault.code}"
                parsed = {
                    "Error": {"Code": fault.code, "Message": message},
                    "ResponseMetadata": {"HTTPStatusCode": fault.status, "HTTPHeaders": {}},
                }
                return AWSResponse("https://fault.local", fault.status, {}, None), parsed
        return None


def body_has(text: str) -> Callable[[dict[str, Any]], bool]:
    """JSON-protocol requests (DynamoDB, KMS, Step Functions): the serialised body mentions `text`."""

    def matches(request: dict[str, Any]) -> bool:
        body = request.get("body") or b""
        return text in (body.decode() if isinstance(body, bytes) else json.dumps(body))

    return matches


def s3_key_under(prefix: str, suffix: str = "") -> Callable[[dict[str, Any]], bool]:
    def matches(request: dict[str, Any]) -> bool:
        path = str(request.get("url_path", "")).split("?")[0]
        return f"/{prefix}" in path and path.endswith(suffix)

    return matches


class FastSleep:
    """Step Functions Retry back-off and botocore's retry back-off, at most a moment each (both are
    real time; the tests' clock is the local cloud's)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.05))


# --- the world ------------------------------------------------------------------------------------
@dataclass
class World:
    cloud: LocalCloud
    vpc: SharedVpc
    faults: FaultInjector
    alerts: str
    events: str
    plugins_version: str
    executions: list[str] = field(default_factory=list)


def _upload_environment_files(cloud: LocalCloud) -> str:
    cloud.client("s3").create_bucket(Bucket=DAG_BUCKET)
    dags = {dag_id: DAG_SOURCE.format(dag_id=dag_id, paused=paused) for dag_id, paused in USER_DAGS.items()}
    return upload_environment_files(cloud, DAG_BUCKET, dags)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    patches = pytest.MonkeyPatch()
    patches.setattr(retrier_decl, "time", FastSleep())
    patches.setattr(botocore.endpoint, "time", FastSleep())
    faults = FaultInjector()
    timings = Timings(pending_timeout=timedelta(hours=2))  # MWAA's is 72 h; the rule is the same
    try:
        with LocalCloud(timings=timings) as cloud:
            # On every session: new ones (the Lambdas' clients) read BUILTIN_HANDLERS when created,
            # the default one and the cloud's own (the emulator's S3 reads) exist already.
            BUILTIN_HANDLERS.append(("before-call", faults))
            assert boto3.DEFAULT_SESSION is not None
            boto3.DEFAULT_SESSION._session.register("before-call", faults)
            cloud.client("s3")  # the cloud's session exists from here on
            assert cloud._session is not None
            cloud._session._session.register("before-call", faults)
            try:
                vpc = build_shared_vpc(cloud.client("ec2"))
                version = _upload_environment_files(cloud)
                observers = observe(cloud)
                alerts, announced = observers.alerts, observers.events
                request = create_request(
                    NAME,
                    vpc,
                    EndpointManagement="CUSTOMER",
                    AirflowVersion="2.11.0",
                    DagS3Path="dags",
                    PluginsS3Path="plugins.zip",
                    PluginsS3ObjectVersion=version,
                    Tags={"team": "data", OPT_IN_TAG: OPT_IN_VALUE},
                )
                cloud.client("mwaa").create_environment(**request)
                cloud.run_for(timedelta(minutes=30))
                assert environment_status(cloud, NAME) == "AVAILABLE"
                yield World(cloud, vpc, faults, alerts, announced, version)
            finally:
                BUILTIN_HANDLERS.remove(("before-call", faults))
    finally:
        patches.undo()


# --- reading the world ----------------------------------------------------------------------------
def environment_status(cloud: LocalCloud, name: str) -> str | None:
    mwaa = cloud.client("mwaa")
    try:
        return str(mwaa.get_environment(Name=name)["Environment"]["Status"])
    except mwaa.exceptions.ResourceNotFoundException:
        return None


def drain_queue(cloud: LocalCloud, url: str) -> list[dict[str, Any]]:
    sqs = cloud.client("sqs")
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def state_record(cloud: LocalCloud) -> dict[str, Any]:
    item = (
        cloud.client("dynamodb")
        .get_item(TableName=cloud.physical["LockTable"], Key={"pk": {"S": f"environment#{NAME}"}})
        .get("Item")
    )
    return {} if item is None else dict(json.loads(item["record"]["S"]))


def lock_held(cloud: LocalCloud) -> bool:
    table = cloud.physical["LockTable"]
    return "Item" in cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": f"operation#{NAME}"}})


def stored_objects(cloud: LocalCloud, backup_id: str) -> dict[str, str]:
    """Key -> ETag of a backup's files and its snapshot."""
    s3, bucket = cloud.client("s3"), cloud.physical["MetadataBackupBucket"]
    found: dict[str, str] = {}
    for prefix in (f"backups/{NAME}/{backup_id}/", f"snapshots/{NAME}/{backup_id}/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            # A restore adds its ledger entry under restores/: the backup's own files never change.
            found |= {o["Key"]: o["ETag"] for o in page.get("Contents", []) if "/restores/" not in o["Key"]}
    return found


def dag_pause_states(cloud: LocalCloud) -> dict[str, bool]:
    backend = cloud.emulator.airflow(cloud.account, cloud.region, NAME)
    status, body = backend.rest("GET", "/dags", {"limit": "100"}, None)
    assert status == 200, body
    return {d["dag_id"]: bool(d["is_paused"]) for d in json.loads(body)["dags"] if d["dag_id"] in USER_DAGS}


def entered(cloud: LocalCloud, execution: str) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history(cloud, execution) if "stateEnteredEventDetails" in e]


# --- driving the workflows -------------------------------------------------------------------------
def start(world: World, machine: str, payload: dict[str, Any]) -> str:
    name = f"{machine[:5].lower()}-{len(world.executions) + 1}"
    arn = str(
        world.cloud.client("stepfunctions").start_execution(
            stateMachineArn=world.cloud.physical[machine], name=name, input=json.dumps({"environment": NAME, **payload})
        )["executionArn"]
    )
    world.executions.append(arn)
    return arn


def run_until_done(
    world: World, execution: str, *, timeout: float = 600, step: timedelta = timedelta(minutes=2)
) -> dict[str, Any]:
    """Advances the clock while the execution runs, and runs the endpoint reconciler on its
    schedule (the fallback for lost events, as deployed)."""
    cloud, sfn = world.cloud, world.cloud.client("stepfunctions")
    deadline = time.monotonic() + timeout
    since_reconcile = timedelta(0)
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        cloud.run_for(step)
        since_reconcile += step
        if since_reconcile >= RECONCILE_EVERY:
            since_reconcile = timedelta(0)
            # A failing schedule run is retried at the next one, as deployed.
            with contextlib.suppress(Exception):
                cloud.run_schedule("EndpointReconcilerFunction")
        time.sleep(0.2)
    raise AssertionError(f"{execution} still running after {timeout}s: {failures(cloud, execution)[-5:]}")


@dataclass(frozen=True)
class Before:
    """What a failed run must leave as it was."""

    record: dict[str, Any]
    objects: dict[str, str]


def before(world: World) -> Before:
    drain_queue(world.cloud, world.alerts)
    drain_queue(world.cloud, world.events)
    record = state_record(world.cloud)
    last_good = record.get("last_good_backup_id")
    return Before(record, stored_objects(world.cloud, last_good) if last_good else {})


def assert_failed_cleanly(
    world: World,
    execution: str,
    was: Before,
    *,
    operation: str,
    reason: str,
    phase: str | None,
    environment_kept: bool = True,
    delete_attempted: bool = False,
) -> str:
    """The four invariants of a failed run; returns the alert's message."""
    cloud = world.cloud
    described = run_until_done(world, execution)
    assert described["status"] == "FAILED", failures(cloud, execution)
    # 1. no deletion without a verified backup
    if environment_kept:
        assert environment_status(cloud, NAME) == "AVAILABLE"
        deleting = "Delete the environment and wait until it is gone" in entered(cloud, execution)
        assert deleting == delete_attempted
    # 2. the last good backup intact
    record = state_record(cloud)
    assert record.get("last_good_backup_id") == was.record.get("last_good_backup_id")
    if was.objects:
        assert stored_objects(cloud, was.record["last_good_backup_id"]) == was.objects
    if phase is not None:
        assert record["phase"] == phase, record
    assert not lock_held(cloud)
    # 3. notified: the alert and the event, once each
    alerts = drain_queue(cloud, world.alerts)
    assert [a["Subject"] for a in alerts] == [f"MWAA {operation} of {NAME} failed"]
    assert reason in alerts[0]["Message"], alerts[0]["Message"][:2000]
    announced = drain_queue(cloud, world.events)
    assert [e["detail-type"] for e in announced] == [f"MWAA Environment {operation.title()} Failed"]
    return str(alerts[0]["Message"])


def assert_succeeded(world: World, execution: str, *, phase: str) -> dict[str, Any]:
    cloud = world.cloud
    described = run_until_done(world, execution, timeout=900)
    assert described["status"] == "SUCCEEDED", failures(cloud, execution)
    record = state_record(cloud)
    assert record["phase"] == phase, record
    assert not lock_held(cloud)
    verb = "paused" if phase == "PAUSED" else "resumed"
    assert [a["Subject"] for a in drain_queue(cloud, world.alerts)] == [f"MWAA environment {NAME} {verb}"]
    assert [e["detail-type"] for e in drain_queue(cloud, world.events)] == [f"MWAA Environment {verb.title()}"]
    return record


def until_gone(world: World) -> None:
    world.cloud.run_for(timedelta(minutes=16))
    assert environment_status(world.cloud, NAME) is None


# --- refusals that change nothing (cases 9 and 10) ------------------------------------------------
def test_a_version_mwaa_cannot_create_again_is_refused_before_anything_changes(world: World) -> None:
    # (Airflow 3 is paused like Airflow 2 where its workers carry database credentials, and refused
    # before anything changes where they do not: tests/workflow/test_pause_resume_airflow3.py.)
    cloud = world.cloud
    for name, version, reason in (("retired-version", "2.6.3", "which MWAA no longer creates"),):
        request = create_request(
            name, world.vpc, EndpointManagement="SERVICE", AirflowVersion="2.11.0" if version == "2.6.3" else version
        )
        request["Tags"] = {OPT_IN_TAG: OPT_IN_VALUE}
        cloud.client("mwaa").create_environment(**request)
        cloud.run_for(timedelta(minutes=26))
        emulated = cloud.emulator.environment(cloud.account, cloud.region, name)
        assert emulated is not None
        emulated.config["AirflowVersion"] = version  # e.g. created before MWAA retired it
        for attempt in (1, 2):  # a re-run is refused the same way, and nothing is left behind
            execution = str(
                cloud.client("stepfunctions").start_execution(
                    stateMachineArn=cloud.physical[PAUSE],
                    name=f"{name}-{attempt}",
                    input=json.dumps({"environment": name}),
                )["executionArn"]
            )
            world.executions.append(execution)
            described = run_until_done(world, execution)
            assert described["status"] == "FAILED"
            assert "Back up the metadata (export DAG, drained)" not in entered(cloud, execution)
            assert environment_status(cloud, name) == "AVAILABLE"
            alerts = drain_queue(cloud, world.alerts)
            assert len(alerts) == 1 and reason in alerts[0]["Message"] and "nothing was changed" in alerts[0]["Message"]
            announced = drain_queue(cloud, world.events)
            assert [e["detail-type"] for e in announced] == ["MWAA Environment Pause Failed"]
            assert announced[0]["detail"]["stage"] == "prepare"
            table = cloud.physical["LockTable"]
            for key in (f"operation#{name}", f"environment#{name}"):
                assert "Item" not in cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": key}})
        assert (
            cloud.client("s3")
            .list_objects_v2(Bucket=cloud.physical["MetadataBackupBucket"], Prefix=f"snapshots/{name}/")
            .get("KeyCount", 0)
            == 0
        )


# --- generation 1: a pause through transient faults, duplicated events and a second pause ---------
def test_a_pause_survives_transient_faults_on_every_call_duplicated_events_and_a_second_pause(world: World) -> None:
    cloud, faults = world.cloud, world.faults
    table = cloud.physical["LockTable"]
    # Given one throttle or server error on every kind of call the pause makes...
    cloud.emulator.inject_fault("GetEnvironment", "ThrottlingException", status=429, times=1)
    cloud.emulator.inject_fault("DeleteEnvironment", "InternalServerException", status=500, times=1)
    injected = [
        faults.add(
            Fault("dynamodb", "PutItem", "ProvisionedThroughputExceededException", 400, 1, WORKER, body_has(table))
        ),
        faults.add(Fault("dynamodb", "GetItem", "InternalServerError", 500, 1, WORKER)),
        faults.add(Fault("kms", "GenerateDataKey", "ThrottlingException", 400, 1, WORKER)),
        faults.add(
            Fault("s3", "PutObject", "SlowDown", 503, 1, WORKER, s3_key_under("snapshots/", "environment.json"))
        ),
        faults.add(Fault("s3", "GetObject", "InternalError", 500, 1, WORKER, s3_key_under("backups/"))),
        faults.add(Fault("states", "SendTaskSuccess", "ThrottlingException", 400, 1, WAITER)),
    ]
    # ...and every status-change event delivered twice
    cloud.emulator.event_mode = "duplicate"
    paused_before = dag_pause_states(cloud)
    assert paused_before == USER_DAGS
    try:
        first = start(world, PAUSE, {"drain": DRAIN})
        # When a second pause starts while the first holds the lock
        deadline = time.monotonic() + 300
        sfn = cloud.client("stepfunctions")
        while not lock_held(cloud):
            assert time.monotonic() < deadline, failures(cloud, first)
            assert sfn.describe_execution(executionArn=first)["status"] == "RUNNING", failures(cloud, first)
            time.sleep(0.5)
        second = start(world, PAUSE, {"drain": DRAIN})
        described = cloud.client("stepfunctions").describe_execution(executionArn=second)
        deadline = time.monotonic() + 120
        while described["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.5)
            described = cloud.client("stepfunctions").describe_execution(executionArn=second)
        # Then the second is refused at once, touching nothing of the first's
        assert described["status"] == "FAILED"
        assert "Back up the metadata (export DAG, drained)" not in entered(cloud, second)
        assert lock_held(cloud)
        alerts = drain_queue(cloud, world.alerts)
        assert [a["Subject"] for a in alerts] == [f"MWAA pause of {NAME} failed"]
        assert "OperationInProgress" in alerts[0]["Message"] and "already running" in alerts[0]["Message"]
        assert [e["detail-type"] for e in drain_queue(cloud, world.events)] == ["MWAA Environment Pause Failed"]
        # And the first completes through every fault
        record = assert_succeeded(world, first, phase="PAUSED")
    finally:
        cloud.emulator.event_mode = "deliver"
        faults.clear()
    assert all(f.hits == 1 for f in injected), [(f.service, f.operation, f.hits) for f in injected]
    assert environment_status(cloud, NAME) is None
    assert record["last_good_backup_id"] and stored_objects(cloud, record["last_good_backup_id"])
    # Nothing ran twice: one deletion, one export run, one completed wait per status
    deleting = [
        e for e in cloud.emulator.emitted if e["detail"]["name"] == NAME and e["detail"]["status"] == "DELETING"
    ]
    assert len(deleting) == 1
    waits = [d for d in cloud.events.deliveries if d.function == WAITER and d.detail_status == "DELETED"]
    assert sorted(str((d.outcome or {}).get("outcome")) for d in waits) == ["nothing waits", "reached"], waits
    assert not live_endpoints_of_ours(world)


def live_endpoints_of_ours(world: World) -> list[str]:
    return [
        e["VpcEndpointId"]
        for e in live_endpoints(world.cloud.client("ec2"), world.vpc.vpc_id)
        if e["VpcEndpointId"] != world.vpc.sqs_endpoint_id
    ]


# --- resumes that fail (cases 1, 5, 6) --------------------------------------------------------------
def test_a_resume_whose_create_call_keeps_failing_fails_cleanly(world: World) -> None:
    was = before(world)
    world.cloud.emulator.inject_fault("CreateEnvironment", "InternalServerException", status=500, times=1000)
    try:
        execution = start(world, RESUME, {"status_wait_seconds": 60})
        assert_failed_cleanly(
            world,
            execution,
            was,
            operation="resume",
            reason="InternalServerException",
            phase="RESUME_FAILED",
            environment_kept=False,
        )
    finally:
        world.cloud.emulator._faults.pop("CreateEnvironment", None)
    assert environment_status(world.cloud, NAME) is None


def test_create_failed_fails_the_resume_with_mwaa_reason_and_the_failed_environment_is_deleted(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    # The plugins object version the snapshot pins cannot be read when MWAA creates the environment.
    unreadable = world.faults.add(
        Fault("s3", "GetObject", "NoSuchVersion", 404, None, None, lambda r: "plugins.zip" in str(r.get("url_path")))
    )
    try:
        execution = start(world, RESUME, {"status_wait_seconds": 60})
        message = assert_failed_cleanly(
            world,
            execution,
            was,
            operation="resume",
            reason="EnvironmentCreateFailed",
            phase="RESUME_FAILED",
            environment_kept=False,
        )
    finally:
        world.faults.clear()
    assert unreadable.hits >= 1
    assert f"version {world.plugins_version} not found" in message
    assert "has been deleted so that a re-run can create it" in message
    assert environment_status(cloud, NAME) == "DELETING"
    until_gone(world)


def test_pending_without_endpoints_ends_in_create_failed_and_the_resume_fails_cleanly(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    for function in ENDPOINT_FUNCTIONS:  # the endpoint automation cannot create endpoints
        world.faults.add(Fault("ec2", "CreateVpcEndpoint", "UnauthorizedOperation", 403, None, function))
    try:
        execution = start(world, RESUME, {"status_wait_seconds": 60})
        assert_failed_cleanly(
            world,
            execution,
            was,
            operation="resume",
            reason="CREATE_FAILED",
            phase="RESUME_FAILED",
            environment_kept=False,
        )
    finally:
        world.faults.clear()
    emitted = [e["detail"]["status"] for e in cloud.emulator.emitted if e["detail"]["name"] == NAME][-4:]
    assert emitted[:3] == ["CREATING", "PENDING", "CREATE_FAILED"], emitted
    until_gone(world)


# --- generation 2: the re-run converges although every event is lost (cases 6 and 8) -------------
def test_the_resume_rerun_converges_with_lost_events(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    cloud.emulator.event_mode = "drop"
    cloud.emulator.inject_fault("CreateEnvironment", "ThrottlingException", status=429, times=1)
    try:
        execution = start(world, RESUME, {"status_wait_seconds": 5})
        record = assert_succeeded(world, execution, phase="ACTIVE")
    finally:
        cloud.emulator.event_mode = "deliver"
    assert environment_status(cloud, NAME) == "AVAILABLE"
    assert record["last_good_backup_id"] == was.record["last_good_backup_id"]
    assert stored_objects(cloud, record["last_good_backup_id"]) == was.objects
    # PENDING was left because the reconciler created the endpoints; the waits ended by the fallback
    assert "Check once whether it is AVAILABLE (an event may be lost)" in entered(cloud, execution)
    assert len(live_endpoints_of_ours(world)) == 2
    assert dag_pause_states(cloud) == USER_DAGS
    created = [
        e for e in cloud.emulator.emitted if e["detail"]["name"] == NAME and e["detail"]["previousStatus"] is None
    ]
    assert len(created) == 4  # the first creation, the two failed resumes and this one: never twice in one run


# --- pauses of generation 2 that fail in every stage (cases 1-4) -----------------------------------
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(lambda t: None, "InternalServerException", id="mwaa-get-environment-5xx"),
        pytest.param(
            lambda t: Fault(
                "dynamodb", "PutItem", "ProvisionedThroughputExceededException", 400, None, WORKER, body_has(t)
            ),
            "ProvisionedThroughputExceededException",
            id="dynamodb-throttled",
        ),
        pytest.param(
            lambda t: Fault("kms", "GenerateDataKey", "KMSInternalException", 500, None, WORKER),
            "KMSInternalException",
            id="kms-5xx",
        ),
        pytest.param(
            lambda t: Fault("s3", "PutObject", "SlowDown", 503, None, WORKER, s3_key_under("snapshots/")),
            "SlowDown",
            id="snapshot-not-written",
        ),
    ],
)
def test_a_pause_whose_calls_keep_failing_before_the_backup_fails_cleanly(
    world: World, fault: Callable[[str], Fault | None], reason: str
) -> None:
    cloud = world.cloud
    was = before(world)
    injected = fault(cloud.physical["LockTable"])
    if injected is None:
        cloud.emulator.inject_fault("GetEnvironment", "InternalServerException", status=500, times=1000)
    else:
        world.faults.add(injected)
    try:
        execution = start(world, PAUSE, {"drain": DRAIN})
        run_until_done(world, execution)
    finally:
        cloud.emulator._faults.pop("GetEnvironment", None)
        world.faults.clear()
    assert_failed_cleanly(world, execution, was, operation="pause", reason=reason, phase=None)
    assert state_record(cloud)["phase"] in ("ACTIVE", "PAUSE_FAILED")
    assert dag_pause_states(cloud) == USER_DAGS


def test_a_backup_dag_that_fails_leaves_the_environment_and_its_dags_as_they_were(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    # The key becomes unusable once the snapshot is taken, when the export DAG starts (moto does
    # not refuse a disabled key, so its backend, which the DAG reaches through the moto server,
    # answers GenerateDataKey with KMS's DisabledException).
    patches = pytest.MonkeyPatch()
    real_invoke = cloud.lambdas.invoke

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise JsonRESTError("DisabledException", "injected: the key is disabled")

    def invoke(function_name: str, event: Any) -> Any:
        if cloud.lambdas.resolve(function_name) == "DagTriggerFunction":
            patches.setattr(KmsBackend, "generate_data_key", refuse)
        return real_invoke(function_name, event)

    cloud.lambdas.invoke = invoke  # type: ignore[method-assign]
    try:
        execution = start(world, PAUSE, {"drain": DRAIN})
        run_until_done(world, execution)
    finally:
        cloud.lambdas.invoke = real_invoke  # type: ignore[method-assign]
        patches.undo()
    assert_failed_cleanly(world, execution, was, operation="pause", reason="Disabled", phase="PAUSE_FAILED")
    assert dag_pause_states(cloud) == USER_DAGS


def test_a_backup_that_cannot_be_written_puts_the_dags_back(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    patches = pytest.MonkeyPatch()
    real_put = S3Backend.put_object

    def put_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        # The DAG writes through the moto server: the pause states go in, the tables' files do not.
        if key_name.startswith(f"backups/{NAME}/") and not key_name.endswith("pause-states.json"):
            raise S3ClientError("AccessDenied", "injected: the backup cannot be written")
        return real_put(self, bucket_name, key_name, *args, **kwargs)

    patches.setattr(S3Backend, "put_object", put_object)
    try:
        execution = start(world, PAUSE, {"drain": DRAIN})
        assert_failed_cleanly(world, execution, was, operation="pause", reason="AccessDenied", phase="PAUSE_FAILED")
    finally:
        patches.undo()
    assert dag_pause_states(cloud) == USER_DAGS


def test_a_delete_that_keeps_failing_after_the_backup_fails_cleanly(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    cloud.emulator.inject_fault("DeleteEnvironment", "InternalServerException", status=500, times=1000)
    try:
        execution = start(world, PAUSE, {"drain": DRAIN})
        run_until_done(world, execution)
    finally:
        cloud.emulator._faults.pop("DeleteEnvironment", None)
    assert_failed_cleanly(
        world,
        execution,
        was,
        operation="pause",
        reason="InternalServerException",
        phase="PAUSE_FAILED",
        delete_attempted=True,
    )
    assert dag_pause_states(cloud) == USER_DAGS


def test_a_callback_that_never_comes_times_out_and_nothing_is_deleted(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    patches = pytest.MonkeyPatch()
    patches.setattr(AirflowBackend, "schedule_runs", lambda self: None)  # the scheduler is down
    try:
        execution = start(world, PAUSE, {"drain": DRAIN, "backup_heartbeat_seconds": 5})
        message = assert_failed_cleanly(
            world, execution, was, operation="pause", reason="failed at backup: States.", phase="PAUSE_FAILED"
        )
    finally:
        patches.undo()
    assert "backup" in message
    assert dag_pause_states(cloud) == USER_DAGS


# --- the final re-run converges ------------------------------------------------------------------------
def test_the_pause_rerun_converges_and_keeps_the_earlier_backup(world: World) -> None:
    cloud = world.cloud
    was = before(world)
    execution = start(world, PAUSE, {"drain": DRAIN})
    record = assert_succeeded(world, execution, phase="PAUSED")
    assert environment_status(cloud, NAME) is None
    assert record["last_good_backup_id"] != was.record["last_good_backup_id"]
    assert stored_objects(cloud, was.record["last_good_backup_id"]) == was.objects  # never deleted
    assert not live_endpoints_of_ours(world)
    # The DAGs' own pause states went into the backup (no leftover export run of a failed pause
    # paused them first): a resume brings them back as their owners left them.
    recorded = (
        cloud.client("s3")
        .get_object(
            Bucket=cloud.physical["MetadataBackupBucket"],
            Key=f"backups/{NAME}/{record['last_good_backup_id']}/pause-states.json",
        )["Body"]
        .read()
    )
    assert {k: v for k, v in json.loads(recorded).items() if k in USER_DAGS} == USER_DAGS
