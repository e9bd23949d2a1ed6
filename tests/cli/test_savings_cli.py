"""mwaactl savings against a local cloud in this process: the fleet document, the state table, the
snapshot of a paused environment and a live one in the emulated MWAA. The local cloud's clock
stands at 2026-11-21 09:00 UTC; the office-hours schedule (08:00-18:00 Berlin, CET in November)
runs 07:00-17:00 UTC and pauses 17:00-07:00 UTC, 14 hours a day."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from localcloud import LocalCloud
from localcloud.network import build_shared_vpc
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE
from mwaactl.main import app
from tests.cli.test_fleet_cli import FLEET, fleet_of
from tests.conftest import create_request
from tests.fleet_support import BACKUP_ID

runner = CliRunner()
NOW = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)
PAUSED_AT = "2026-11-20T19:00:00+00:00"
"""14 hours before NOW: what the state table records as the current pause's start."""
MEDIUM = {"EnvironmentClass": "mw1.medium", "MinWorkers": 3, "Schedulers": 3, "MinWebservers": 2}
"""1.07 USD/hour: 0.74 + 2 extra workers at 0.11 + 1 extra scheduler at 0.11."""
DOCUMENT = {**FLEET, "environments": {"etl-paused": "office-hours", "etl-live": "office-hours"}}


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCloud]:
    import mwaactl.fleet

    with LocalCloud() as local:
        assert local.clock.now() == NOW  # the figures below are computed from it
        monkeypatch.setattr(mwaactl.fleet, "locate", lambda *_: fleet_of(local))
        monkeypatch.setattr(mwaactl.fleet.console, "width", 240)
        local.client("s3").put_object(
            Bucket=local.physical["MetadataBackupBucket"],
            Key="fleet/schedules.json",
            Body=json.dumps(DOCUMENT).encode(),
        )
        yield local


def paused_medium_environment(cloud: LocalCloud, name: str) -> None:
    """A PAUSED record since PAUSED_AT and the snapshot its resume would recreate an mw1.medium from."""
    record = {"environment": name, "phase": "PAUSED", "updated_at": PAUSED_AT, "last_good_backup_id": BACKUP_ID}
    cloud.client("dynamodb").put_item(
        TableName=cloud.physical["LockTable"],
        Item={"pk": {"S": f"environment#{name}"}, "phase": {"S": "PAUSED"}, "record": {"S": json.dumps(record)}},
    )
    snapshot = {"environment": name, "create_request": {"Name": name, "Tags": {OPT_IN_TAG: OPT_IN_VALUE}, **MEDIUM}}
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"],
        Key=f"snapshots/{name}/{BACKUP_ID}/environment.json",
        Body=json.dumps(snapshot).encode(),
    )


def savings_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["savings", "-o", "json", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_realised_is_measured_since_the_pause_and_projected_follows_the_schedule(cloud: LocalCloud) -> None:
    # Given a paused mw1.medium on office hours, a running mw1.large (4 webservers) on the same
    # schedule, and an environment on no schedule
    paused_medium_environment(cloud, "etl-paused")
    vpc = build_shared_vpc(cloud.client("ec2"))
    tags = {OPT_IN_TAG: OPT_IN_VALUE}
    mwaa = cloud.client("mwaa")
    mwaa.create_environment(
        **create_request("etl-live", vpc, EnvironmentClass="mw1.large", MinWebservers=4, Schedulers=2, Tags=tags)
    )
    mwaa.create_environment(**create_request("adhoc", vpc, Tags={OPT_IN_TAG: OPT_IN_VALUE}))

    # When the on-call engineer asks for this month's savings
    report = savings_json()

    # Then the paused one has saved 14 measured hours at its snapshot's price, and both are
    # projected to save the rest of November's paused hours: nine nights of 14 hours and the
    # last evening's 7 (Nov 30 17:00 to Dec 1 00:00 UTC), 133 hours
    assert (report["month"], report["as_of"]) == ("2026-11", "2026-11-21T09:00:00Z")
    rows = {row["environment"]: row for row in report["environments"]}
    assert set(rows) == {"etl-paused", "etl-live"}  # adhoc is neither scheduled nor paused
    paused, live = rows["etl-paused"], rows["etl-live"]
    assert (paused["status"], paused["size_from"], paused["hourly_price"]) == ("paused", "snapshot", "1.07")
    assert paused["paused_since"] == "2026-11-20T19:00:00Z"
    assert (paused["realised"]["hours_paused"], paused["realised"]["usd"]) == ("14.00", "14.98")
    assert (paused["projected"]["hours_paused"], paused["projected"]["usd"]) == ("133.00", "142.31")
    assert (live["size_from"], live["environment_class"], live["hourly_price"]) == ("environment", "mw1.large", "1.21")
    assert live["paused_since"] is None and live["realised"]["usd"] == "0.00"
    assert (live["projected"]["hours_paused"], live["projected"]["usd"]) == ("133.00", "160.93")  # 133 h x 1.21
    assert (report["realised_usd"], report["projected_usd"]) == ("14.98", "303.24")
    assert "measured" in report["notes"]["realised"] and "from the schedule" in report["notes"]["projected"]


def test_a_past_month_has_nothing_to_project_and_a_future_one_nothing_measured(cloud: LocalCloud) -> None:
    paused_medium_environment(cloud, "etl-paused")

    [october] = savings_json("--month", "2026-10")["environments"]
    [december] = savings_json("--month", "2026-12")["environments"]

    # The pause began in November; December's 31 days each pause 00:00-07:00 and 17:00-24:00 UTC
    assert (october["realised"]["usd"], october["projected"]["usd"]) == ("0.00", "0.00")
    assert december["realised"]["usd"] == "0.00"
    assert (december["projected"]["hours_paused"], december["projected"]["usd"]) == ("434.00", "464.38")
    assert december["projected"]["start"] == "2026-12-01T00:00:00Z"


def test_the_table_says_which_figures_are_measured_and_which_projected(cloud: LocalCloud) -> None:
    paused_medium_environment(cloud, "etl-paused")

    table = runner.invoke(app, ["savings"])
    refused = runner.invoke(app, ["savings", "--month", "2026-13"])
    help_text = runner.invoke(app, ["savings", "--help"])

    assert table.exit_code == 0, table.output
    assert "realised (measured)" in table.stdout and "projected (schedule)" in table.stdout
    assert "$14.98 (14.00 h)" in table.stdout and "$142.31 (133.00 h)" in table.stdout
    assert "lower bound" in table.stdout
    assert refused.exit_code == 2 and "YYYY-MM" in refused.output
    assert "MEASURED" in help_text.stdout and "FROM THE SCHEDULE" in help_text.stdout


def test_a_region_without_a_price_table_is_named_not_guessed(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mwaactl.fleet

    paused_medium_environment(cloud, "etl-paused")
    elsewhere = fleet_of(cloud)
    elsewhere.stack = elsewhere.stack.model_copy(update={"region": "eu-central-1"})
    monkeypatch.setattr(mwaactl.fleet, "locate", lambda *_: elsewhere)

    result = runner.invoke(app, ["savings", "-o", "json"])

    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["environments"]
    assert row["realised"] is None and row["projected"] is None and row["hourly_price"] is None
    assert "eu-central-1" in row["problem"] and "not guessed" in row["problem"]
