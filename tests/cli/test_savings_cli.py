"""mwaactl savings, and what `mwaactl status` shows of it, against a local cloud in this process: the
fleet document, the state table, the snapshot of a paused environment and a live one in the emulated
MWAA. The local cloud's clock
stands at 2026-11-21 09:00 UTC; the office-hours schedule (08:00-18:00 Berlin, CET in November)
runs 07:00-17:00 UTC and pauses 17:00-07:00 UTC, 14 hours a day."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from localcloud import LocalCloud
from localcloud.network import build_shared_vpc
from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE
from mwaa_control.schedules.pricing import hourly_price, size_from_request, to_cents
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


def write_record(
    cloud: LocalCloud,
    name: str,
    phase: str,
    updated_at: str,
    intervals: Sequence[tuple[str, str | None]] = (),
) -> None:
    """The state table's record of `name`; `intervals`: its paused intervals (paused_at, resumed_at),
    none for a record written before they were recorded."""
    record: dict[str, Any] = {"environment": name, "phase": phase, "updated_at": updated_at}
    if phase == "PAUSED":
        record["last_good_backup_id"] = BACKUP_ID
    if intervals:
        record["paused_intervals"] = [{"paused_at": a, "resumed_at": b} for a, b in intervals]
    cloud.client("dynamodb").put_item(
        TableName=cloud.physical["LockTable"],
        Item={"pk": {"S": f"environment#{name}"}, "phase": {"S": phase}, "record": {"S": json.dumps(record)}},
    )


def write_snapshot(cloud: LocalCloud, name: str, size: dict[str, Any]) -> None:
    """The snapshot a resume of `name` would recreate it from, with `size`'s sizing fields."""
    snapshot = {"environment": name, "create_request": {"Name": name, "Tags": {OPT_IN_TAG: OPT_IN_VALUE}, **size}}
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"],
        Key=f"snapshots/{name}/{BACKUP_ID}/environment.json",
        Body=json.dumps(snapshot).encode(),
    )


def paused_medium_environment(cloud: LocalCloud, name: str) -> None:
    """A PAUSED record since PAUSED_AT written before paused intervals were recorded (a legacy
    record), and the snapshot its resume would recreate an mw1.medium from."""
    write_record(cloud, name, "PAUSED", PAUSED_AT)
    write_snapshot(cloud, name, MEDIUM)


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
    assert "$14.98* (14.00 h)" in table.stdout and "$142.31 (133.00 h)" in table.stdout  # *: a legacy record
    assert "lower bound" in table.stdout
    assert refused.exit_code == 2 and "YYYY-MM" in refused.output
    described = " ".join(help_text.stdout.split())
    assert "MEASURED" in described and "FROM THE SCHEDULE" in described


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


# --- realised savings from the recorded paused intervals (`savings` and `status`) -----------------

EARLIER = [
    ("2026-10-31T20:00:00+00:00", "2026-11-02T07:00:00+00:00"),
    ("2026-11-10T17:00:00+00:00", "2026-11-11T07:30:00+00:00"),
]
"""Two pauses that ended: 31 hours of the first in November (it began in October), 14.5 of the second."""
CURRENT = ("2026-11-20T19:00:00+00:00", None)
"""The pause going on: 14 hours up to NOW."""
PAUSED_RECORD_AT = "2026-11-20T19:05:00+00:00"
"""When the pause that began at CURRENT's start wrote its PAUSED record."""
LIVE_INTERVALS = [
    ("2026-10-20T17:00:00+00:00", "2026-10-21T07:00:00+00:00"),
    ("2026-11-05T17:00:00+00:00", "2026-11-06T07:00:00+00:00"),
]
"""An October night of 14 hours, and a November one of 14 hours."""
PAUSED_REALISED = {
    "start": "2026-11-01T00:00:00Z",
    "end": "2026-11-21T09:00:00Z",
    "hours_paused": "59.50",
    "usd": "63.67",  # 59.5 h x 1.07 USD/hour = 63.665, half up
    "measured_from": "paused_intervals",
}


def paused_with_history(cloud: LocalCloud, name: str) -> None:
    """A paused mw1.medium (1.07 USD/hour) whose record holds EARLIER and CURRENT."""
    write_record(cloud, name, "PAUSED", PAUSED_RECORD_AT, [*EARLIER, CURRENT])
    write_snapshot(cloud, name, MEDIUM)


def running_resumed_this_month(cloud: LocalCloud, name: str) -> None:
    """A running mw1.large with 4 webservers (1.21 USD/hour) whose record holds LIVE_INTERVALS."""
    vpc = build_shared_vpc(cloud.client("ec2"))
    large = {"EnvironmentClass": "mw1.large", "MinWebservers": 4, "Schedulers": 2}
    cloud.client("mwaa").create_environment(**create_request(name, vpc, **large, Tags={OPT_IN_TAG: OPT_IN_VALUE}))
    write_record(cloud, name, "ACTIVE", "2026-11-06T07:40:00+00:00", LIVE_INTERVALS)


def status_json() -> dict[str, Any]:
    result = runner.invoke(app, ["status", "-o", "json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_realised_adds_up_the_recorded_pauses_clipped_to_the_month(cloud: LocalCloud) -> None:
    # Given a paused environment with two earlier pauses and the current one, and a running one
    # paused for a night in October and one in November
    paused_with_history(cloud, "etl-paused")
    running_resumed_this_month(cloud, "etl-live")

    # When the on-call engineer asks for November's savings, and October's
    november = savings_json()
    october = savings_json("--month", "2026-10")

    # Then November's realised figure adds up the recorded intervals within the month up to now, to
    # the cent, and the current pause is dated by its interval, not by the record's last update
    rows = {row["environment"]: row for row in november["environments"]}
    paused, live = rows["etl-paused"], rows["etl-live"]
    assert paused["realised"] == PAUSED_REALISED
    hours = Decimal(31) + Decimal("14.5") + Decimal(14)
    assert Decimal(PAUSED_REALISED["usd"]) == to_cents(hours * hourly_price(size_from_request(MEDIUM), cloud.region))
    assert paused["paused_since"] == "2026-11-20T19:00:00Z"
    assert live["paused_since"] is None
    assert (live["realised"]["hours_paused"], live["realised"]["usd"]) == ("14.00", "16.94")  # 14 h x 1.21
    assert november["realised_usd"] == "80.61"
    assert "legacy_records" not in november["notes"] and "intervals" in november["notes"]["realised"]
    # And October's counts what fell in October: the evening before the first pause ended, the night
    rows = {row["environment"]: row for row in october["environments"]}
    assert (rows["etl-paused"]["realised"]["hours_paused"], rows["etl-paused"]["realised"]["usd"]) == ("4.00", "4.28")
    assert (rows["etl-live"]["realised"]["hours_paused"], rows["etl-live"]["realised"]["usd"]) == ("14.00", "16.94")


def test_an_environment_paused_earlier_in_the_month_counts_though_no_longer_scheduled(cloud: LocalCloud) -> None:
    # Given an environment on no schedule, running again after a pause this month
    running_resumed_this_month(cloud, "adhoc")

    # When the savings are asked for, Then its November pause is counted
    rows = {row["environment"]: row for row in savings_json()["environments"]}
    assert rows["adhoc"]["schedule"] is None and rows["adhoc"]["projected"] is None
    assert rows["adhoc"]["realised"]["usd"] == "16.94"


def test_status_shows_what_pausing_saved_each_environment_this_month(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mwaactl.fleet

    # Given the environments of the savings test
    paused_with_history(cloud, "etl-paused")
    running_resumed_this_month(cloud, "etl-live")

    # When the on-call engineer asks for the fleet's status as JSON, and as a table
    report = status_json()
    realised = {row["environment"]: row["realised"] for row in savings_json()["environments"]}
    wide = runner.invoke(app, ["status"])

    # Then each environment shows what it saved this month, as `mwaactl savings` measures it
    rows = {row["environment"]: row for row in report["environments"]}
    assert rows["etl-paused"]["saved_this_month"] == PAUSED_REALISED
    assert rows["etl-live"]["saved_this_month"]["usd"] == "16.94"
    assert all(rows[name]["saved_this_month"] == realised[name] for name in rows)
    assert all(row["savings_problem"] is None for row in rows.values())
    assert wide.exit_code == 0, wide.output
    [header] = [line for line in wide.stdout.splitlines() if "environment" in line]
    assert "saved this month" in header
    assert "$63.67 (59.50 h)" in wide.stdout and "$16.94 (14.00 h)" in wide.stdout

    # And in an 80-column terminal nothing is wider or cut: each environment is a block of its fields
    monkeypatch.setattr(mwaactl.fleet.console, "width", 80)
    narrow = runner.invoke(app, ["status"])
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80 and "…" not in narrow.stdout
    for whole in ("etl-paused", "etl-live", BACKUP_ID, "PAUSED at 2026-11-21 17:00 UTC", "$63.67 (59.50 h)"):
        assert whole in narrow.stdout, whole
    assert re.search(r"^\s+saved this month\s+\$63\.67 \(59\.50 h\)\s*$", narrow.stdout, re.MULTILINE)


def test_a_record_from_before_paused_intervals_counts_its_current_pause_and_says_so(cloud: LocalCloud) -> None:
    # Given a PAUSED record written before paused intervals were recorded (PAUSED_AT, 14 hours ago)
    paused_medium_environment(cloud, "etl-paused")

    # When the savings and the status are asked for
    report = savings_json()
    status_row = {row["environment"]: row for row in status_json()["environments"]}["etl-paused"]
    table = runner.invoke(app, ["status"])

    # Then its current pause is measured from the record's updated_at, and both say so
    [row] = report["environments"]
    assert row["paused_since"] == "2026-11-20T19:00:00Z"
    assert row["realised"]["measured_from"] == "updated_at"
    assert (row["realised"]["hours_paused"], row["realised"]["usd"]) == ("14.00", "14.98")
    assert "etl-paused" in report["notes"]["legacy_records"] and "lower bound" in report["notes"]["legacy_records"]
    assert status_row["saved_this_month"] == row["realised"]
    assert table.exit_code == 0, table.output
    assert "$14.98* (14.00 h)" in table.stdout and "* measured from the current pause only" in table.stdout


def test_an_environment_of_unknown_size_or_price_shows_a_dash_and_the_others_their_savings(
    cloud: LocalCloud,
) -> None:
    # Given a paused environment of a class no price is known for, and one whose snapshot is gone
    paused_with_history(cloud, "etl-paused")
    write_record(cloud, "etl-odd", "PAUSED", PAUSED_RECORD_AT, [CURRENT])
    write_snapshot(cloud, "etl-odd", {"EnvironmentClass": "mw1.colossal"})
    write_record(cloud, "etl-lost", "PAUSED", PAUSED_RECORD_AT, [CURRENT])
    document = {**FLEET, "environments": dict.fromkeys(("etl-paused", "etl-odd", "etl-lost"), "office-hours")}
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"], Key="fleet/schedules.json", Body=json.dumps(document).encode()
    )

    # When the on-call engineer asks for the status, as JSON and as a table
    report = status_json()
    table = runner.invoke(app, ["status"])

    # Then those two show no figure and say why, and the table shows "-" for them and the others' savings
    rows = {row["environment"]: row for row in report["environments"]}
    assert rows["etl-paused"]["saved_this_month"] == PAUSED_REALISED
    odd, lost = rows["etl-odd"], rows["etl-lost"]
    assert odd["saved_this_month"] is None and "mw1.colossal" in odd["savings_problem"]
    assert "not guessed" in odd["savings_problem"]
    assert lost["saved_this_month"] is None and "size unknown" in lost["savings_problem"]
    assert table.exit_code == 0, table.output
    cells = {
        cells[0]: cells[-1]
        for line in table.stdout.splitlines()
        if (cells := [cell.strip() for cell in line.strip("│ ").split("│")])[0].startswith("etl-")
    }
    assert cells == {"etl-paused": "$63.67 (59.50 h)", "etl-odd": "-", "etl-lost": "-"}


@pytest.mark.parametrize(
    "body",
    [
        b"{" * 100_000,  # nested past the parser's recursion limit
        b"[1, 2, 3]",  # JSON, not an object
        json.dumps({"create_request": "mw1.small"}).encode(),
        json.dumps({"create_request": {"EnvironmentClass": "mw1.small", "MinWorkers": "lots"}}).encode(),
        json.dumps({"create_request": {"MinWorkers": 10**9}}).encode(),
        b" " * (4 << 20) + b"{}",  # larger than any snapshot this stack writes
    ],
    ids=["deep", "list", "string-request", "text-workers", "absurd-workers", "oversized"],
)
def test_a_forged_snapshot_gives_no_figure_and_breaks_nothing(cloud: LocalCloud, body: bytes) -> None:
    # Given a paused environment whose snapshot someone with write access to the bucket replaced
    paused_with_history(cloud, "etl-paused")
    write_record(cloud, "etl-forged", "PAUSED", PAUSED_RECORD_AT, [CURRENT])
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"],
        Key=f"snapshots/etl-forged/{BACKUP_ID}/environment.json",
        Body=body,
    )
    document = {**FLEET, "environments": dict.fromkeys(("etl-paused", "etl-forged"), "office-hours")}
    cloud.client("s3").put_object(
        Bucket=cloud.physical["MetadataBackupBucket"], Key="fleet/schedules.json", Body=json.dumps(document).encode()
    )

    # When the on-call engineer asks for the status and the savings
    rows = {row["environment"]: row for row in status_json()["environments"]}
    saved = {row["environment"]: row for row in savings_json()["environments"]}

    # Then the forged one has no figure and says why; the other is unaffected
    assert rows["etl-forged"]["saved_this_month"] is None and rows["etl-forged"]["savings_problem"]
    assert saved["etl-forged"]["realised"] is None and saved["etl-forged"]["problem"]
    assert rows["etl-paused"]["saved_this_month"] == PAUSED_REALISED
