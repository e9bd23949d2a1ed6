"""mwaactl's on-call commands (status, pause, resume, follow, override, backups) against a local
cloud in this process: the real state table, bucket, overrides and Pause/Resume state machines.
The environments have no Airflow, and the emulator refuses Airflow calls, so a pause fails fast."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from localcloud import LocalCloud
from mwaa_control.errors import ControlPlaneError
from mwaactl.fleet import Fleet, FleetStack, locate
from mwaactl.main import app
from tests.fleet_support import BACKUP_ID, settle_workflows, write_paused_environment

runner = CliRunner()
ALWAYS = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
FLEET = {
    "version": 1,
    "schedules": {
        "office-hours": {"timezone": "Europe/Berlin", "periods": [{**ALWAYS, "start": "08:00", "stop": "18:00"}]}
    },
    "environments": {"etl-paused": "office-hours"},
}


def fleet_of(cloud: LocalCloud) -> Fleet:
    """The stack as `locate` would read it from the deployed stack's outputs."""
    stack = FleetStack(
        name=cloud.stack_name,
        region=cloud.region,
        state_table=cloud.physical["LockTable"],
        bucket=cloud.physical["MetadataBackupBucket"],
        backup_key_arn=cloud.resolve({"Fn::GetAtt": ["MetadataBackupKey", "Arn"]}),
        pause_state_machine_arn=cloud.physical["PauseStateMachine"],
        resume_state_machine_arn=cloud.physical["ResumeStateMachine"],
    )
    return Fleet(stack, cloud.client)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCloud]:
    import mwaactl.fleet

    with LocalCloud() as local:
        for operation in ("CreateCliToken", "CreateWebLoginToken", "InvokeRestApi"):
            local.emulator.inject_fault(operation, "AccessDeniedException", status=403, times=10_000, message="test")
        asked: list[tuple[str, str | None, str | None]] = []

        def located(stack: str, region: str | None, profile: str | None) -> Fleet:
            asked.append((stack, region, profile))
            return fleet_of(local)

        monkeypatch.setattr(mwaactl.fleet, "locate", located)
        monkeypatch.setattr(mwaactl.fleet.console, "width", 240)  # the table's rows on one line each
        local.asked = asked  # type: ignore[attr-defined]
        yield local
        settle_workflows(local)


def mwaactl(*args: str) -> Any:
    return runner.invoke(app, list(args))


def status_json() -> dict[str, Any]:
    result = mwaactl("status", "--output", "json")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_status_shows_the_paused_environment_its_schedule_next_action_and_backup(cloud: LocalCloud) -> None:
    # Given a paused environment on an office-hours schedule
    write_paused_environment(cloud, "etl-paused")
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"], Key="fleet/schedules.json", Body=json.dumps(FLEET).encode()
    )

    # When the on-call engineer asks for the fleet's status as JSON, and as a table
    report = status_json()
    table = mwaactl("status", "--stack", "prod-mwaa", "--region", "eu-west-1", "--profile", "oncall")

    # Then it is paused, on its schedule, with the next transition and the backup its resume restores
    [row] = report["environments"]
    assert row["environment"] == "etl-paused" and row["status"] == "paused" and row["phase"] == "PAUSED"
    assert row["schedule"] == "office-hours" and row["last_verified_backup"] == BACKUP_ID
    assert row["override"] is None
    action = row["next_action"]
    assert action is not None and action["target"] in ("RUNNING", "PAUSED")
    assert dt.datetime.fromisoformat(action["at"]) > cloud.clock.now()  # the control plane's now, not the wall's
    assert table.exit_code == 0, table.output
    assert "etl-paused" in table.stdout and "office-hours" in table.stdout and "paused" in table.stdout
    assert cloud.asked[-1] == ("prod-mwaa", "eu-west-1", "oncall")  # type: ignore[attr-defined]


def test_an_override_shows_in_status_and_clear_ends_it(cloud: LocalCloud) -> None:
    write_paused_environment(cloud, "etl-paused")
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)

    kept = mwaactl("override", "etl-paused", "--stay-paused-until", until.isoformat(), "--reason", "migration")
    assert kept.exit_code == 0, kept.output
    [row] = status_json()["environments"]
    assert row["override"] == {
        "kind": "stay-paused",
        "until": until.isoformat().replace("+00:00", "Z"),
        "reason": "migration",
    }

    cleared = mwaactl("override", "etl-paused", "--clear")
    assert cleared.exit_code == 0, cleared.output
    [row] = status_json()["environments"]
    assert row["override"] is None


def test_override_refuses_wrong_arguments_and_past_times(cloud: LocalCloud) -> None:
    neither = mwaactl("override", "etl-paused")
    both = mwaactl("override", "etl-paused", "--clear", "--keep-awake-until", "2030-01-01T00:00Z")
    not_a_time = mwaactl("override", "etl-paused", "--keep-awake-until", "tomorrow")
    past = mwaactl("override", "etl-paused", "--keep-awake-until", "2020-01-01T00:00")
    assert (neither.exit_code, both.exit_code, not_a_time.exit_code) == (2, 2, 2)
    assert past.exit_code == 1 and "in the past" in past.output and "future" in past.output


def test_a_pause_is_followed_to_its_failure_and_exits_1_with_the_cause(cloud: LocalCloud) -> None:
    # Given an environment MWAA does not know: the workflow refuses it in its first step
    # When the on-call engineer pauses it and follows the workflow
    result = mwaactl("pause", "ghost", "--poll", "0.2")

    # Then the states it went through are shown, and the failure with its cause
    assert result.exit_code == 1, result.output
    assert "started pause of ghost" in result.stdout and "Ctrl-C stops following" in result.stdout
    sfn = cloud.client("stepfunctions")
    [execution] = sfn.list_executions(stateMachineArn=cloud.physical["PauseStateMachine"])["executions"]
    assert execution["status"] == "FAILED" and execution["executionArn"] in result.output
    described = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"])["environment"] == "ghost"
    assert "Check opt-in and version, take the lock, snapshot the configuration" in result.stdout
    assert "Pause failed" in result.stdout
    assert "FAILED" in result.stderr and "ghost does not exist; nothing to pause" in result.stderr


def test_no_wait_prints_the_execution_arn_and_follow_picks_it_up(cloud: LocalCloud) -> None:
    write_paused_environment(cloud, "etl-paused")

    started = mwaactl("resume", "etl-paused", "--backup", "20261201T000000Z-00000000", "--no-wait")

    assert started.exit_code == 0, started.output
    arn = started.stdout.strip()
    sfn = cloud.client("stepfunctions")
    described = sfn.describe_execution(executionArn=arn)
    assert described["stateMachineArn"] == cloud.physical["ResumeStateMachine"]
    assert json.loads(described["input"]) == {
        "environment": "etl-paused",
        "trigger": {"source": "mwaactl"},
        "backup_id": "20261201T000000Z-00000000",
    }
    followed = mwaactl("follow", arn, "--poll", "0.2")
    assert followed.exit_code == 1, followed.output  # no such backup: the resume refuses
    assert "FAILED" in followed.stderr and "cause: resume of etl-paused failed" in followed.stderr


def test_backups_lists_the_bucket_and_names_what_resume_restores(cloud: LocalCloud) -> None:
    none = mwaactl("backups", "etl-paused", "--no-verify")
    assert none.exit_code == 0, none.output
    assert "0 backups" in none.stdout and "resume would be refused" in none.stdout

    write_paused_environment(cloud, "etl-paused")
    found = mwaactl("backups", "etl-paused")
    assert found.exit_code == 0, found.output
    assert f"resume restores {BACKUP_ID}" in found.stdout


def test_the_stack_is_read_from_its_outputs_and_a_missing_output_is_named() -> None:
    with LocalCloud(stack_name="cfn-host") as cloud:
        cfn = cloud.client("cloudformation")

        def deploy(name: str, outputs: dict[str, str]) -> None:
            template = {
                "Parameters": {"FleetDocumentKey": {"Type": "String", "Default": "fleets/prod.json"}},
                "Resources": {"Handle": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {key: {"Value": value} for key, value in outputs.items()},
            }
            cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))

        complete = {
            "LockTableName": "prod-state",
            "MetadataBackupBucketName": "prod-backups",
            "MetadataBackupKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
            "PauseStateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:pause",
            "ResumeStateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:resume",
        }
        deploy("prod-mwaa", complete)
        deploy("old-mwaa", {k: v for k, v in complete.items() if not k.endswith("StateMachineArn")})

        stack = locate("prod-mwaa", None, None).stack
        assert (stack.state_table, stack.bucket, stack.fleet_document_key, stack.region) == (
            "prod-state",
            "prod-backups",
            "fleets/prod.json",
            "us-east-1",
        )
        assert stack.pause_state_machine_arn.endswith(":pause")
        with pytest.raises(ControlPlaneError, match="PauseStateMachineArn, ResumeStateMachineArn"):
            locate("old-mwaa", None, None)
        refused = mwaactl("status", "--stack", "old-mwaa")
        assert refused.exit_code == 1 and "Deploy the current template" in refused.output


def test_a_pause_accepts_the_rest_path_losses_only_when_asked(cloud: LocalCloud) -> None:
    # When the on-call engineer pauses with and without accepting the REST path's losses
    plain = mwaactl("pause", "ghost", "--no-wait")
    accepting = mwaactl("pause", "ghost-af3", "--accept-rest-losses", "--no-wait")

    # Then only the second workflow's input says so (the pause workflow defaults it to false)
    assert plain.exit_code == 0 and accepting.exit_code == 0, plain.output + accepting.output
    sfn = cloud.client("stepfunctions")
    inputs = [json.loads(sfn.describe_execution(executionArn=r.stdout.strip())["input"]) for r in (plain, accepting)]
    assert "accept_rest_path_losses" not in inputs[0]
    assert inputs[1] == {"environment": "ghost-af3", "trigger": {"source": "mwaactl"}, "accept_rest_path_losses": True}
