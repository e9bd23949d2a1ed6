"""`make demo`: the control plane against the local cloud, as an on-call engineer would watch it.

A participant account creates a customer-managed-endpoint MWAA environment in a VPC shared by the
owner account; the owner's stack (from template.yaml) creates its endpoints when it goes PENDING,
MWAA finishes creating it, and deleting it removes the endpoints again. A second environment whose
events are all lost is rescued by the scheduled reconciler. A DAG is run from Step Functions, and
the environment's Airflow metadata is backed up to S3 (secrets sealed with KMS), restored into a new
Airflow database under a new Fernet key, and verified. Two environments (public, and shared-VPC
with customer-managed endpoints) are paused and resumed once, with the cost of each cycle. Then a
simulated week (localcloud/week.py): three environments in Berlin, New York and Sydney paused and
resumed by the fleet scheduler alone, with a holiday, an override and a ready-by time, each resume
checked for every row of its metadata, and the hours and dollars saved. Exits non-zero if anything
is off.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from localcloud import LocalCloud
from localcloud.airflow.backend import AirflowBackend
from localcloud.clock import ManualClock
from localcloud.eventbus import Delivery
from localcloud.lifecycle import cost_table, pause_resume_cycle
from localcloud.network import RESTRICTIVE_SQS_POLICY, SharedVpc, build_shared_vpc
from localcloud.week import EXPECTED, WEEK_START, simulated_week, week_table
from mwaa_control.airflow import callback
from mwaa_control.composition import airflow_client
from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from mwaa_control.metadata.sealing import KmsKeyService
from mwaa_control.metadata.store import S3Store
from mwaa_control.metadata.verify import verify_restore
from mwaa_control.observability import logger

OWNER, PARTICIPANT = "123456789012", "222222222222"
console = Console(highlight=False, width=150)


class Timeline:
    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.start = cloud.clock.now()
        self._events = 0
        self._deliveries = 0

    def stamp(self, at: datetime | None = None) -> str:
        minutes = int(((at or self.cloud.clock.now()) - self.start).total_seconds() // 60)
        return f"T+{minutes // 60:02d}:{minutes % 60:02d}"

    def note(self, text: str) -> None:
        console.print(f"[dim]{self.stamp()}[/dim]  {text}")

    def flush(self) -> None:
        emitted = self.cloud.emulator.emitted[self._events :]
        deliveries = self.cloud.events.deliveries[self._deliveries :]
        self._events += len(emitted)
        self._deliveries += len(deliveries)
        for event in emitted:
            detail = event["detail"]
            console.print(
                f"[dim]{self.stamp(datetime.fromisoformat(event['time']))}[/dim]  [bold]{detail['name']}[/bold] "
                f"({event['account']}) {detail['previousStatus'] or '-'} -> [cyan]{detail['status']}[/cyan]"
            )
        for delivery in deliveries:
            console.print(f"          {describe(delivery)}")

    def run(self, duration: timedelta) -> None:
        step = timedelta(minutes=1)
        elapsed = timedelta(0)
        while elapsed < duration:
            self.cloud.clock.advance(step)
            elapsed += step
            self.flush()


def describe(delivery: Delivery) -> str:
    if delivery.error:
        return f"[red]{delivery.function} failed: {delivery.error}[/red]"
    outcome = delivery.outcome or {}
    actions = ", ".join(
        f"{a['action']} {a.get('role') or ''} {a.get('endpoint_id') or ''}".strip() for a in outcome.get("actions", [])
    )
    colour = {"provisioned": "green", "removed": "yellow"}.get(outcome.get("outcome", ""), "dim")
    summary = f"{delivery.function}: {outcome.get('outcome')} ({outcome.get('reason')})"
    return f"[{colour}]-> {summary}{': ' + actions if actions else ''}[/{colour}]"


def check(condition: bool, message: str, failures: list[str]) -> None:
    console.print(f"          {'[green]OK[/green]' if condition else '[red]FAIL[/red]'}  {message}")
    if not condition:
        failures.append(message)


def endpoints_table(cloud: LocalCloud, vpc_id: str, title: str) -> list[dict[str, Any]]:
    endpoints = [
        e
        for e in cloud.client("ec2").describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "VpcEndpoints"
        ]
        if e["State"] != "deleted"
    ]
    table = Table(title=title, title_justify="left")
    for column in ("endpoint", "service", "environment (tag)", "role"):
        table.add_column(column)
    for e in endpoints:
        tags = {t["Key"]: t["Value"] for t in e.get("Tags", [])}
        table.add_row(
            e["VpcEndpointId"],
            e["ServiceName"],
            tags.get("mwaa-control:environment-arn", "(not ours)"),
            tags.get("mwaa-control:endpoint-role", ""),
        )
    console.print(table)
    return endpoints


def missed_events_scenario(cloud: LocalCloud, timeline: Timeline, request: dict[str, Any], failures: list[str]) -> None:
    console.rule("[bold]missed events: the scheduled reconciler")
    cloud.emulator.event_mode = "drop"
    timeline.note("owner creates 'reporting'; every status-change event is lost")
    cloud.client("mwaa").create_environment(
        Name="reporting", **{**request, "ExecutionRoleArn": f"arn:aws:iam::{OWNER}:role/mwaa-execution"}
    )
    timeline.run(timedelta(minutes=10))
    status = cloud.client("mwaa").get_environment(Name="reporting")["Environment"]["Status"]
    timeline.note(f"reporting is {status}; no event arrived")
    result = cloud.run_schedule("EndpointReconcilerFunction")
    for item in result["results"]:
        timeline.note(f"reconciler: {item['environment_arn'].rsplit('/', 1)[1]} -> {item['outcome']}")
    timeline.run(timedelta(minutes=16))
    status = cloud.client("mwaa").get_environment(Name="reporting")["Environment"]["Status"]
    check(status == "AVAILABLE", "reporting is AVAILABLE thanks to the polling fallback", failures)
    cloud.emulator.event_mode = "deliver"
    timeline.note("status-change events are delivered again")


DEMO_DAG = """
from datetime import datetime
from airflow import DAG
try:
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:
    from airflow.operators.empty import EmptyOperator

with DAG("nightly_orders", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
    EmptyOperator(task_id="load")
"""


def run_dag_scenario(cloud: LocalCloud, timeline: Timeline, failures: list[str]) -> None:
    console.rule("[bold]run a DAG from Step Functions and wait for its callback")
    backend = cloud.emulator.airflow(cloud.account, cloud.region, "reporting")
    backend.ensure_ready()
    (backend.dags_folder / "nightly_orders.py").write_text(DEMO_DAG)
    timeline.note("DAG file nightly_orders.py synced to 'reporting'; Airflow parses it")
    backend.parse_dags()
    sfn = cloud.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=cloud.physical["RunDagStateMachine"],
        name="nightly-orders-demo",
        input=json.dumps({"environment": "reporting", "dag_id": "nightly_orders", "conf": {"day": "2026-11-21"}}),
    )["executionArn"]
    timeline.note("RunDagStateMachine started: 'Trigger DAG and wait for its callback'")
    client = airflow_client("reporting", mwaa=cloud.client("mwaa"))
    run = None
    deadline = time.monotonic() + 300
    while run is None and time.monotonic() < deadline:
        history = sfn.get_execution_history(executionArn=execution)["events"]
        if not any(e["type"] == "TaskSubmitted" for e in history):  # a DAG reports after its run starts
            time.sleep(1)
            continue
        runs = cloud.client("mwaa").invoke_rest_api(Name="reporting", Method="GET", Path="/dags/nightly_orders/dagRuns")
        found = [r["dag_run_id"] for r in runs["RestApiResponse"]["dag_runs"]]
        run = client.dag_run("nightly_orders", found[0]) if found else None
        if run is None:
            time.sleep(2)
    if run is None:
        check(False, "the workflow triggered the DAG", failures)
        return
    timeline.note(
        f"real Airflow {backend.major}.x has run [bold]{run.run_id}[/bold] ({run.state}), "
        f"conf day={(run.conf or {}).get('day')}"
    )
    reporter = callback.from_conf(run.conf)
    check(reporter is not None, "the run's conf carries the task-token callback", failures)
    if reporter:
        timeline.note("the DAG's last task reports success through the callback contract")
        reporter.success({"rows_loaded": 1234})
    while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    described = sfn.describe_execution(executionArn=execution)
    timeline.note(f"execution {described['status']}: {described.get('output', '')}")
    check(described["status"] == "SUCCEEDED", "the workflow finished with the DAG's output", failures)


def metadata_scenario(cloud: LocalCloud, failures: list[str]) -> None:
    console.rule("[bold]back up the environment's Airflow metadata, restore it into a new database")
    source = cloud.emulator.airflow(cloud.account, cloud.region, "reporting")
    secret = "demo-secret-do-not-leak"  # noqa: S105 - the planted value the check looks for
    assert source.cli(["variables", "set", "warehouse_password", secret]).returncode == 0
    s3, kms = cloud.client("s3"), cloud.client("kms")
    s3.create_bucket(Bucket="mwaa-metadata-backups")
    key = kms.create_key(Description="metadata backups")["KeyMetadata"]["Arn"]
    store = S3Store(s3, "mwaa-metadata-backups", "mwaa", kms_key_id=key)
    keys = KmsKeyService(kms, key)
    manifest = BackupEngine(open_database(f"sqlite:///{source.home / 'airflow.db'}"), store).backup(
        BackupRequest(environment="reporting", keys=keys, source_fernet_key=source.fernet_key, airflow_version="2.11.0")
    )
    rows = {name: entry.rows for name, entry in manifest.tables.items() if entry.rows}
    console.print(
        f"          backup [bold]{manifest.backup_id}[/bold] in s3://mwaa-metadata-backups/mwaa/backups/reporting/: "
        f"{sum(rows.values())} rows in {len(rows)} tables, {manifest.sealed_values} secrets sealed with KMS"
    )
    listed = s3.list_objects_v2(Bucket="mwaa-metadata-backups", Prefix="mwaa/")["Contents"]
    stored = b"".join(s3.get_object(Bucket="mwaa-metadata-backups", Key=o["Key"])["Body"].read() for o in listed)
    check(secret.encode() not in stored, "no secret in plaintext in the backup", failures)
    with tempfile.TemporaryDirectory(prefix="mwaa-demo-restore-") as home:
        target = AirflowBackend(Path(home), major=2)
        target.ensure_ready()
        # The new environment holds no secret yet that could prove its key; the key is read from its
        # own configuration, as the import DAG does, so it is accepted as unverifiable.
        report = RestoreEngine(open_database(f"sqlite:///{target.home / 'airflow.db'}"), store).restore(
            RestoreRequest(
                "reporting", manifest.backup_id, keys, target.fernet_key, accept_unverifiable_fernet_key=True
            )
        )
        check(
            report.authenticated is True,
            "the backup authenticated (KMS context + manifest MAC) before restore",
            failures,
        )
        table = Table(title="Restored into a new Airflow database (new Fernet key)", show_lines=False)
        for column in ("table", "in backup", "inserted", "matched", "id offset"):
            table.add_column(column)
        for result in report.tables:
            if result.in_backup:
                offset = "" if result.id_offset is None else f"+{result.id_offset}"
                table.add_row(result.table, str(result.in_backup), str(result.inserted), str(result.matched), offset)
        console.print(table)
        check(report.status == "restored", f"restore {report.restore_id}: one transaction, counts verified", failures)
        printed = target.cli(["variables", "get", "warehouse_password"]).stdout.strip()
        check(printed == secret, "Airflow reads the re-encrypted variable with the new environment's key", failures)
        again = RestoreEngine(open_database(f"sqlite:///{target.home / 'airflow.db'}"), store).restore(
            RestoreRequest(
                "reporting", manifest.backup_id, keys, target.fernet_key, accept_unverifiable_fernet_key=True
            )
        )
        check(again.status == "already-restored", "restoring the same backup again changes nothing", failures)
        verified = verify_restore(
            open_database(f"sqlite:///{target.home / 'airflow.db'}"), store, "reporting", manifest.backup_id,
            target.fernet_key,
        )  # fmt: skip
        check(verified.ok, "the restored database verifies against the backup's manifest", failures)


def pause_resume_scenario(cloud: LocalCloud, timeline: Timeline, vpc: SharedVpc, failures: list[str]) -> None:
    """Two opted-in environments of the owner account, a public one and one with customer-managed
    endpoints in the shared VPC, are paused (backed up, deleted) and resumed (recreated, restored)."""
    console.rule("[bold]pause and resume: back up, delete, recreate identically, restore")
    outcome = pause_resume_cycle(cloud, vpc, note=timeline.note, advance=timeline.run)
    for name in outcome.costs:
        check(outcome.succeeded[name], f"{name} paused and resumed", failures)
        for why in outcome.why[name][:3]:
            console.print(f"          [red]{why}[/red]")
        check(outcome.costs[name].within_budget, f"{name}: the cycle stayed within the budget", failures)
        missing = outcome.missing[name]
        check(
            not any(missing.values()),
            f"{name}: every run, task instance, variable, connection password, pool and pause state came back "
            f"under a new Fernet key ({', '.join(f'{k} {n}' for k, n in outcome.compared[name].items())})",
            failures,
        )
    check(outcome.deleted_while_paused, "both environments were deleted while paused (they cost nothing)", failures)
    console.print(cost_table(outcome))
    endpoints_table(cloud, vpc.vpc_id, "Endpoints after finance-shared is resumed")


def week_scenario(failures: list[str]) -> None:
    """A simulated week of three environments in three time zones, paused and resumed by the fleet
    scheduler alone (its schedules fire on the local cloud's clock), with a holiday and an override."""
    console.rule("[bold]a simulated week: office-hours schedules in Berlin, New York and Sydney")
    began = time.monotonic()
    with LocalCloud(
        clock=ManualClock(WEEK_START - timedelta(hours=1)),
        fire_template_schedules=True,
        environment_overrides={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"},
    ) as cloud:

        def note(text: str) -> None:
            console.print(f"[dim]{cloud.clock.now():%a %d %b %H:%M} UTC[/dim]  {text}")

        outcome = simulated_week(cloud, build_shared_vpc(cloud.client("ec2")), note)
    console.print(week_table(outcome))
    for name, (pauses, resumes) in EXPECTED.items():
        runs = outcome.of(name)
        check(
            all(r.status == "SUCCEEDED" for r in runs)
            and (len(outcome.of(name, "pause")), len(outcome.of(name, "resume"))) == (pauses, resumes),
            f"{name}: {pauses} pauses and {resumes} resumes as its schedule, calendar and overrides say, all succeeded",
            failures,
        )
        for run in runs:
            for why in run.why[:2]:
                console.print(f"          [red]{run.name}: {why}[/red]")
        resumed = outcome.of(name, "resume")
        sections = ", ".join(f"{k} {n}" for k, n in outcome.compared[name].items())
        check(
            all(r.missing is not None and not any(r.missing.values()) for r in resumed),
            f"{name}: after each of its {len(resumed)} resumes every run, task instance, variable, connection "
            f"password, pool and pause state was back ({sections})",
            failures,
        )
        check(outcome.paused_at_end[name], f"{name}: paused at the end of the week (Sunday)", failures)
    ready = outcome.ready_on_time["berlin-etl"]
    check(
        bool(ready) and all(ready),
        f"berlin-etl (ready-by 08:00): restored before 08:00 on {sum(ready)}/{len(ready)} mornings",
        failures,
    )
    total_hours = sum(outcome.hours_paused.values())
    console.print(
        f"          paused {total_hours:.1f} of {3 * 168} environment-hours, saving ${sum(outcome.saved_usd.values())} "
        f"at list price (mw1.small); {outcome.fleet_invocations} fleet scheduler runs; "
        f"{time.monotonic() - began:.0f} s of real time"
    )


def main() -> int:
    failures: list[str] = []
    with LocalCloud(
        parameters={"ParticipantRoleName": "mwaa-control-reader", "ParticipantAccountIds": PARTICIPANT},
        environment_overrides={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"},
    ) as cloud:
        logger.setLevel("ERROR")  # the timeline tells the story; handlers' JSON logs would drown it
        timeline = Timeline(cloud)
        console.rule("[bold]mwaa-control demo: customer-managed endpoints in a shared VPC")
        ec2 = cloud.client("ec2")
        # The owner opts its SQS endpoint in: tagged mwaa-control:amend-policy=<stack name>.
        vpc = build_shared_vpc(ec2, amend_policy_for=cloud.stack_name)
        vpc_id, subnets, sg, sqs_endpoint = vpc.vpc_id, vpc.subnet_ids, vpc.security_group_id, vpc.sqs_endpoint_id
        cloud.events.forwarding_accounts.add(PARTICIPANT)
        timeline.note(
            f"owner {OWNER} shares {vpc_id} ({subnets[0]}, {subnets[1]}); restrictive SQS endpoint {sqs_endpoint} "
            f"(opted in to policy amendments by {cloud.stack_name})"
        )
        request = {
            "ExecutionRoleArn": f"arn:aws:iam::{PARTICIPANT}:role/mwaa-execution",
            "SourceBucketArn": "arn:aws:s3:::participant-dags",
            "DagS3Path": "dags",
            "NetworkConfiguration": {"SubnetIds": subnets, "SecurityGroupIds": [sg]},
            "EndpointManagement": "CUSTOMER",
            "WebserverAccessMode": "PRIVATE_ONLY",
            "AirflowVersion": "2.10.3",
        }
        with cloud.participant(PARTICIPANT) as participant:
            mwaa = participant.client("mwaa")
            timeline.note(f"participant {PARTICIPANT} creates 'analytics' with EndpointManagement=CUSTOMER")
            mwaa.create_environment(Name="analytics", **request)
            timeline.flush()
            timeline.run(timedelta(minutes=25))
            env = mwaa.get_environment(Name="analytics")["Environment"]
            check(env["Status"] == "AVAILABLE", "analytics is AVAILABLE (not stuck in PENDING)", failures)
            endpoints = endpoints_table(cloud, vpc_id, "Endpoints in the shared VPC while analytics runs")
            ours = [e for e in endpoints if e["VpcEndpointId"] != sqs_endpoint]
            check(
                sorted(e["ServiceName"] for e in ours)
                == sorted([env["DatabaseVpcEndpointService"], env["WebserverVpcEndpointService"]]),
                "exactly one endpoint each for the database and the private webserver",
                failures,
            )
            policy = json.loads(
                ec2.describe_vpc_endpoints(VpcEndpointIds=[sqs_endpoint])["VpcEndpoints"][0]["PolicyDocument"]
            )
            check(
                any(s.get("Resource") == [env["CeleryExecutorQueue"]] for s in policy["Statement"]),
                "SQS endpoint policy now allows the environment's Celery queue",
                failures,
            )

            timeline.note("the same PENDING event is redelivered five times")
            pending = next(e for e in cloud.emulator.emitted if e["detail"]["status"] == "PENDING")
            for _ in range(5):
                cloud.events.publish(pending)
            timeline.flush()
            check(
                len(endpoints_table(cloud, vpc_id, "After redelivery")) == 3, "still one endpoint per service", failures
            )

            timeline.note("participant deletes 'analytics'")
            mwaa.delete_environment(Name="analytics")
            timeline.flush()
            timeline.run(timedelta(minutes=16))
            remaining = endpoints_table(cloud, vpc_id, "Endpoints after deletion")
            check(
                [e["VpcEndpointId"] for e in remaining] == [sqs_endpoint],
                "only the owner's SQS endpoint is left",
                failures,
            )
            policy = json.loads(
                ec2.describe_vpc_endpoints(VpcEndpointIds=[sqs_endpoint])["VpcEndpoints"][0]["PolicyDocument"]
            )
            check(policy == RESTRICTIVE_SQS_POLICY, "SQS endpoint policy is the owner's original again", failures)

        missed_events_scenario(cloud, timeline, request, failures)
        run_dag_scenario(cloud, timeline, failures)
        metadata_scenario(cloud, failures)
        pause_resume_scenario(cloud, timeline, vpc, failures)

    week_scenario(failures)

    console.rule()
    if failures:
        console.print(f"[red bold]demo failed: {len(failures)} check(s)[/red bold]")
        return 1
    console.print("[green bold]demo passed[/green bold]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
