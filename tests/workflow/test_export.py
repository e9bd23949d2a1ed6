"""The scheduled export workflow: a metadata export without pausing, on real Airflow 2.11 behind the
emulator, the real ASL and Lambdas; and the template's schedule that starts it."""

from __future__ import annotations

from localcloud import LocalCloud
from localcloud.lifecycle import failures, run_until_done, start, upload_environment_files
from localcloud.network import SharedVpc
from localcloud.template import load_template
from tests.workflow.test_pause_resume import (
    DAG_BUCKET,
    HELLO,
    Observers,
    create_environment,
    drain_queue,
    lifecycle_cloud,
    lock_of,
    state_record,
)

__all__ = ["lifecycle_cloud"]


def test_an_export_backs_up_a_running_environment_without_pausing_anything(
    lifecycle_cloud: tuple[LocalCloud, SharedVpc, Observers],
) -> None:
    cloud, vpc, observers = lifecycle_cloud
    version = upload_environment_files(cloud, DAG_BUCKET, {"hello": HELLO})
    create_environment(
        cloud,
        vpc,
        "analytics",
        opted_in=False,
        DagS3Path="dags",
        PluginsS3Path="plugins.zip",
        PluginsS3ObjectVersion=version,
    )
    client = cloud.client("mwaa")
    paused_before = client.invoke_rest_api(Name="analytics", Method="GET", Path="/dags")["RestApiResponse"]["dags"]

    execution = start(cloud, "ExportStateMachine", "export-1", {"environment": "analytics"})
    described = run_until_done(cloud, execution, timeout=600)

    assert described["status"] == "SUCCEEDED", failures(cloud, execution)
    assert client.get_environment(Name="analytics")["Environment"]["Status"] == "AVAILABLE"  # never paused
    record = state_record(cloud, "analytics")
    assert record is not None and record["last_export_backup_id"]
    assert record["last_good_backup_id"] is None  # an export is never what a resume restores
    assert record["phase"] == "ACTIVE"
    keys = [
        o["Key"] for o in cloud.client("s3").list_objects_v2(Bucket=cloud.physical["MetadataBackupBucket"])["Contents"]
    ]
    assert f"backups/analytics/{record['last_export_backup_id']}/manifest.json" in keys
    assert not any(k.startswith("snapshots/") for k in keys)
    paused_after = client.invoke_rest_api(Name="analytics", Method="GET", Path="/dags")["RestApiResponse"]["dags"]
    assert {d["dag_id"]: d["is_paused"] for d in paused_after} == {d["dag_id"]: d["is_paused"] for d in paused_before}
    assert lock_of(cloud, "analytics") is None
    assert [e["detail-type"] for e in drain_queue(cloud, observers.events)] == ["MWAA Metadata Exported"]


def test_the_schedule_starts_the_export_of_the_configured_environment() -> None:
    resources = load_template()["Resources"]
    schedule = resources["MetadataExportSchedule"]
    assert schedule["Condition"] == "HasExportEnvironment"
    target = schedule["Properties"]["Target"]
    assert target["Arn"] == {"Ref": "ExportStateMachine"}
    assert target["Input"] == {"Fn::Sub": '{"environment": "${ExportEnvironment}"}'}
    assert schedule["Properties"]["ScheduleExpressionTimezone"] == {"Ref": "ExportScheduleTimezone"}
    role = resources["ExportScheduleRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert role == [{"Effect": "Allow", "Action": "states:StartExecution", "Resource": {"Ref": "ExportStateMachine"}}]
