"""Pause/resume cycles on the local cloud, and what they cost: shared by `make demo`, `make bench`
and the workflow tests.

The cost of a workflow on AWS is its state transitions (each state entered; a retry re-enters) and
its Lambda invocations; both are counted here from the real executions, not estimated."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from localcloud.cloud import LocalCloud

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags" / "mwaa_control_metadata.py"
# The status-change handlers of the endpoint automation: they run on every MWAA status change
# whether or not anything is paused, so the budget does not count them.
ENDPOINT_AUTOMATION = frozenset({"EndpointManagerFunction", "EndpointReconcilerFunction"})
BUDGET_TRANSITIONS = 40
BUDGET_INVOCATIONS = 12


def plugins_zip() -> bytes:
    """What `make plugins` builds: the mwaa_control package, importable by the DAGs."""
    buffer = io.BytesIO()
    package = ROOT / "layers" / "mwaa_control" / "python"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((package / "mwaa_control").rglob("*.py")):
            archive.write(path, path.relative_to(package).as_posix())
    return buffer.getvalue()


def upload_environment_files(cloud: LocalCloud, bucket: str, extra_dags: dict[str, str] | None = None) -> str:
    """The DAG folder (the export/import DAGs and any others) and a versioned plugins.zip in `bucket`;
    returns the plugins object version to pin."""
    s3 = cloud.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key=f"dags/{DAGS.name}", Body=DAGS.read_bytes())
    for name, source in (extra_dags or {}).items():
        s3.put_object(Bucket=bucket, Key=f"dags/{name}.py", Body=source.encode())
    return str(s3.put_object(Bucket=bucket, Key="plugins.zip", Body=plugins_zip())["VersionId"])


def start(cloud: LocalCloud, machine: str, name: str, payload: dict[str, Any]) -> str:
    return str(
        cloud.client("stepfunctions").start_execution(
            stateMachineArn=cloud.physical[machine], name=name, input=json.dumps(payload)
        )["executionArn"]
    )


def history(cloud: LocalCloud, execution: str) -> list[dict[str, Any]]:
    sfn = cloud.client("stepfunctions")
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def failures(cloud: LocalCloud, execution: str) -> list[str]:
    """Why steps of an execution failed (error and the start of the cause)."""
    found = []
    for event in history(cloud, execution):
        for key in ("taskFailedEventDetails", "lambdaFunctionFailedEventDetails", "executionFailedEventDetails"):
            if key in event:
                found.append(f"{event[key].get('error')}: {str(event[key].get('cause'))[:600]}")
    return found


def run_until_done(
    cloud: LocalCloud,
    execution: str,
    *,
    timeout: float = 900,
    step: timedelta = timedelta(minutes=2),
    advance: Callable[[timedelta], None] | None = None,
) -> dict[str, Any]:
    """Advances the local cloud's clock (MWAA lifecycles, status-change events) while it runs."""
    sfn = cloud.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        (advance or cloud.run_for)(step)
        time.sleep(0.3)
    raise TimeoutError(f"{execution} still running after {timeout:.0f}s")


@dataclass
class Cost:
    """What one workflow execution (or several) cost, and how it is made up."""

    transitions: Counter[str] = field(default_factory=Counter)
    """State entered -> how many times (a retry or a loop enters again)."""
    invocations: Counter[str] = field(default_factory=Counter)
    """Function (and step, for the pause/resume function) -> invocations."""
    endpoint_automation: Counter[str] = field(default_factory=Counter)
    """Invocations of the endpoint automation's status-change handlers (not counted)."""

    @property
    def total_transitions(self) -> int:
        return sum(self.transitions.values())

    @property
    def total_invocations(self) -> int:
        return sum(self.invocations.values())

    @property
    def within_budget(self) -> bool:
        return self.total_transitions <= BUDGET_TRANSITIONS and self.total_invocations <= BUDGET_INVOCATIONS

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.transitions + other.transitions,
            self.invocations + other.invocations,
            self.endpoint_automation + other.endpoint_automation,
        )


def _step_of(event: Any) -> str:
    if isinstance(event, dict) and isinstance(event.get("action"), str):
        return f" ({event['action']})"
    if isinstance(event, dict) and isinstance(event.get("dag_id"), str):
        return f" ({event['dag_id']})"
    return ""


def cost_of(cloud: LocalCloud, executions: list[str], invocations_from: int) -> Cost:
    """The state transitions of `executions` and the Lambda invocations since `invocations_from`."""
    cost = Cost()
    for execution in executions:
        for event in history(cloud, execution):
            if event["type"].endswith("StateEntered"):
                cost.transitions[event["stateEnteredEventDetails"]["name"]] += 1
    for invocation in cloud.lambdas.invocations[invocations_from:]:
        if invocation.function in ENDPOINT_AUTOMATION:
            cost.endpoint_automation[invocation.function] += 1
        else:
            cost.invocations[invocation.function + _step_of(invocation.event)] += 1
    return cost


# --- what came back --------------------------------------------------------------------------------
OWN_DAGS = "mwaa_control_"


def metadata_fingerprint(backend: Any) -> dict[str, Any]:
    """What a user would check after a resume, read from the environment's Airflow database: run
    history, task instances, variables and connection passwords (decrypted with that environment's
    own Fernet key), pools and DAG pause states. The control plane's own DAGs are left out."""
    import sqlalchemy as sa  # noqa: PLC0415 - only the demo, bench and tests need it
    from cryptography.fernet import Fernet  # noqa: PLC0415

    fernet = Fernet(backend.fernet_key.encode())
    engine = sa.create_engine(backend.host_database_url())

    def plain(value: str | None, encrypted: bool) -> str | None:
        return fernet.decrypt(value.encode()).decode() if encrypted and value is not None else value

    try:
        with engine.connect() as db:
            runs = db.execute(sa.text("SELECT dag_id, run_id, state FROM dag_run")).all()
            tis = db.execute(sa.text("SELECT dag_id, run_id, task_id, map_index, state FROM task_instance")).all()
            variables = db.execute(sa.text("SELECT key, val, is_encrypted FROM variable")).all()
            connections = db.execute(sa.text("SELECT conn_id, password, is_encrypted FROM connection")).all()
            pools = db.execute(sa.text("SELECT pool, slots FROM slot_pool")).all()
            dags = db.execute(sa.text("SELECT dag_id, is_paused FROM dag")).all()
    finally:
        engine.dispose()
    return {
        "dag_run": sorted((r[0], r[1], r[2]) for r in runs if not str(r[0]).startswith(OWN_DAGS)),
        "task_instance": sorted((*t[:3], int(t[3]), t[4]) for t in tis if not str(t[0]).startswith(OWN_DAGS)),
        "variable": sorted((v[0], plain(v[1], bool(v[2]))) for v in variables),
        "connection": sorted((c[0], plain(c[1], bool(c[2]))) for c in connections),
        "slot_pool": sorted((p[0], int(p[1])) for p in pools),
        "paused": sorted((d[0], bool(d[1])) for d in dags if not str(d[0]).startswith(OWN_DAGS)),
    }


def missing_after(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Per section, how many of the rows before are not there after (0 everywhere: all came back)."""
    return {
        section: len(set(map(tuple, rows)) - set(map(tuple, after.get(section, []))))
        for section, rows in before.items()
    }


# --- a cycle of two environments (`make demo`, `make bench`) -----------------------------------------
@dataclass
class PauseResumeOutcome:
    succeeded: dict[str, bool] = field(default_factory=dict)
    costs: dict[str, Cost] = field(default_factory=dict)
    missing: dict[str, dict[str, int]] = field(default_factory=dict)
    compared: dict[str, dict[str, int]] = field(default_factory=dict)
    deleted_while_paused: bool = False
    why: dict[str, list[str]] = field(default_factory=dict)
    """Per environment, why steps failed (empty when the cycle succeeded)."""


def _environment_of(event: Any) -> str | None:
    if isinstance(event, dict) and isinstance(event.get("environment"), str):
        return str(event["environment"])
    detail = event.get("detail") if isinstance(event, dict) else None
    return str(detail["name"]) if isinstance(detail, dict) and isinstance(detail.get("name"), str) else None


def opted_in_request(cloud: LocalCloud, vpc: Any, dag_bucket: str, airflow_version: str = "2.11.0") -> dict[str, Any]:
    """The CreateEnvironment fields of an Airflow environment opted in to pause/resume, whose DAG
    folder and plugins (the export/import DAGs) `dag_bucket` holds (created here if missing)."""
    from mwaa_control.pause.models import OPT_IN_TAG, OPT_IN_VALUE  # noqa: PLC0415

    s3 = cloud.client("s3")
    if dag_bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=dag_bucket)
    version = upload_environment_files(cloud, dag_bucket)
    return {
        "ExecutionRoleArn": f"arn:aws:iam::{cloud.account}:role/mwaa-execution",
        "SourceBucketArn": f"arn:aws:s3:::{dag_bucket}",
        "DagS3Path": "dags",
        "PluginsS3Path": "plugins.zip",
        "PluginsS3ObjectVersion": version,
        "AirflowVersion": airflow_version,
        "Tags": {OPT_IN_TAG: OPT_IN_VALUE, "team": "data"},
        "NetworkConfiguration": {"SubnetIds": vpc.subnet_ids, "SecurityGroupIds": [vpc.security_group_id]},
    }


def pause_resume_cycle(
    cloud: LocalCloud,
    vpc: Any,
    *,
    note: Callable[[str], None],
    advance: Callable[[timedelta], None] | None = None,
    dag_bucket: str = "owner-dags",
) -> PauseResumeOutcome:
    """Creates two opted-in Airflow 2.11 environments (public with MWAA-managed endpoints; private
    with customer-managed endpoints in `vpc`), fills them with hostile metadata, pauses both, resumes
    both, and returns what came back and what it cost."""
    advance = advance or cloud.run_for
    base = opted_in_request(cloud, vpc, dag_bucket)
    environments = {
        "sales-public": {**base, "EndpointManagement": "SERVICE", "WebserverAccessMode": "PUBLIC_ONLY"},
        "finance-shared": {
            **base,
            "EndpointManagement": "CUSTOMER",
            "WebserverAccessMode": "PRIVATE_ONLY",
            "AirflowConfigurationOptions": {"secrets.backend_kwargs": '{"token": "demo-secret-option"}'},
        },
    }
    mwaa = cloud.client("mwaa")
    for name, request in environments.items():
        note(f"owner creates {name!r} ({request['EndpointManagement']} endpoints), opted in to pause/resume")
        mwaa.create_environment(Name=name, **request)
    advance(timedelta(minutes=40))
    before: dict[str, dict[str, Any]] = {}
    for name in environments:
        backend = cloud.emulator.airflow(cloud.account, cloud.region, name)
        backend.ensure_ready()
        seeded = backend.seed_metadata()
        backend.parse_dags()
        before[name] = metadata_fingerprint(backend)
        note(
            f"{name}: Airflow {backend.release} holds {len(before[name]['dag_run'])} runs, "
            f"{len(before[name]['task_instance'])} task instances, {len(before[name]['variable'])} variables, "
            f"{len(seeded['secret_markers'])} planted secrets"
        )
    mark = len(cloud.lambdas.invocations)
    # The seed leaves task instances "running" that no worker will finish: the drain proceeds after
    # 10 s and the backup records them as in flight (the default aborts the pause instead).
    drain = {"timeout": 10, "poll": 2, "on_timeout": "proceed"}
    outcome = PauseResumeOutcome()
    pauses = {
        n: start(cloud, "PauseStateMachine", f"pause-{n}", {"environment": n, "drain": drain}) for n in environments
    }
    note("pause workflows started for both")
    paused = {n: run_until_done(cloud, e, advance=advance)["status"] == "SUCCEEDED" for n, e in pauses.items()}
    outcome.deleted_while_paused = not set(environments) & set(mwaa.list_environments()["Environments"])
    note("both paused; a day later the resume workflows start")
    advance(timedelta(hours=1))
    resumes = {n: start(cloud, "ResumeStateMachine", f"resume-{n}", {"environment": n}) for n in environments}
    resumed = {n: run_until_done(cloud, e, advance=advance)["status"] == "SUCCEEDED" for n, e in resumes.items()}
    invocations = cloud.lambdas.invocations[mark:]
    for name in environments:
        outcome.succeeded[name] = paused[name] and resumed[name]
        outcome.why[name] = failures(cloud, pauses[name]) + failures(cloud, resumes[name])
        cost = cost_of(cloud, [pauses[name], resumes[name]], len(cloud.lambdas.invocations))
        for invocation in invocations:
            if _environment_of(invocation.event) != name:
                continue
            if invocation.function in ENDPOINT_AUTOMATION:
                cost.endpoint_automation[invocation.function] += 1
            else:
                cost.invocations[invocation.function + _step_of(invocation.event)] += 1
        outcome.costs[name] = cost
        if outcome.succeeded[name]:
            after = metadata_fingerprint(cloud.emulator.airflow(cloud.account, cloud.region, name))
            outcome.missing[name] = missing_after(before[name], after)
        else:
            outcome.missing[name] = {k: len(v) for k, v in before[name].items()}
        outcome.compared[name] = {k: len(v) for k, v in before[name].items()}
    return outcome


def cost_table(outcome: PauseResumeOutcome) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="One pause + resume cycle per environment (the endpoint automation's handlers not counted)")
    for column in (
        "environment",
        "state transitions",
        "Lambda invocations",
        "invocations made up of",
        "endpoint automation",
    ):
        table.add_column(column)
    for name, cost in outcome.costs.items():
        table.add_row(
            name,
            f"{cost.total_transitions} (budget {BUDGET_TRANSITIONS})",
            f"{cost.total_invocations} (budget {BUDGET_INVOCATIONS})",
            "\n".join(f"{k} x{v}" for k, v in sorted(cost.invocations.items())),
            "\n".join(f"{k} x{v}" for k, v in sorted(cost.endpoint_automation.items())) or "-",
        )
        table.add_row("", "\n".join(f"{k} x{v}" for k, v in sorted(cost.transitions.items())), "", "", "")
    return table
