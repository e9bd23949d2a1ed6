"""What the fleet tests (the scheduler's workflow test, the on-call CLI's) set up and tear down on a
local cloud: a paused environment as a verified pause leaves it, and the workflows they start."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from localcloud import LocalCloud
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE

BACKUP_ID = "20261130T020000Z-0a1b2c3d"
MACHINES = ("PauseStateMachine", "ResumeStateMachine")


def write_paused_environment(
    cloud: LocalCloud, name: str, *, backup_id: str = BACKUP_ID, creation_seconds: Sequence[float] = (1500.0,)
) -> None:
    """What a verified pause leaves behind: the PAUSED record and the snapshot with the tags."""
    record = {
        "environment": name,
        "phase": "PAUSED",
        "updated_at": "2026-11-30T02:30:00+00:00",
        "last_good_backup_id": backup_id,
        "creation_seconds": list(creation_seconds),
    }
    cloud.client("dynamodb").put_item(
        TableName=cloud.physical["LockTable"],
        Item={"pk": {"S": f"environment#{name}"}, "phase": {"S": "PAUSED"}, "record": {"S": json.dumps(record)}},
    )
    snapshot = {"environment": name, "create_request": {"Name": name, "Tags": {OPT_IN_TAG: OPT_IN_VALUE}}}
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"],
        Key=f"snapshots/{name}/{backup_id}/environment.json",
        Body=json.dumps(snapshot).encode(),
    )


def settle_workflows(cloud: LocalCloud, *, stop: bool = False, timeout: float = 60.0) -> None:
    """The pauses and resumes a test started keep running in moto's interpreter threads after it
    ends: let them end (`stop`: stop them first), so none outlives its cloud or reaches the next
    test's with its notifications."""
    sfn = cloud.client("stepfunctions")
    arns = [
        e["executionArn"]
        for machine in MACHINES
        for e in sfn.list_executions(stateMachineArn=cloud.physical[machine])["executions"]
    ]
    if stop:
        for arn in arns:
            if sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
                sfn.stop_execution(executionArn=arn, error="TestOver", cause="the test ended")
    deadline = time.monotonic() + timeout
    while any(sfn.describe_execution(executionArn=a)["status"] == "RUNNING" for a in arns):
        assert time.monotonic() < deadline, "the test's workflows did not end"
        time.sleep(0.2)
