"""mwaactl status | pause | resume | follow | override | backups | savings: the on-call engineer's
view of a deployed control plane's fleet, and the hand on its pause/resume workflows.

Every command finds the stack's resources by itself (`--stack`, CloudFormation outputs) and reads
or writes what the stack's own functions do: the state table, the fleet document, the overrides,
the Pause/Resume state machines, the backup bucket.

Exit codes: 0 done (the workflow succeeded), 1 failed (the workflow failed, timed out or was
aborted, or the stack could not be read: the message says what to do next), 2 wrong arguments,
130 stopped following (Ctrl-C; the workflow itself goes on).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import typer
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.markup import escape

from mwaa_control.errors import ControlPlaneError

if TYPE_CHECKING:
    from mwaa_control.pause.models import EnvironmentRecord
    from mwaa_control.schedules.fleet import ObservedEnvironment
    from mwaa_control.schedules.model import Override
    from mwaa_control.schedules.pricing import EnvironmentSize

# `mwaactl --help` and argument errors must answer at once: the engines (pyarrow, SQLAlchemy,
# psycopg, boto3) load inside the commands that use them (tests/unit/test_cold_imports.py).

console = Console()
errors = Console(stderr=True)

# The stack outputs each command needs (template.yaml's Outputs section).
OUTPUTS = {
    "state_table": "LockTableName",
    "bucket": "MetadataBackupBucketName",
    "backup_key_arn": "MetadataBackupKeyArn",
    "pause_state_machine_arn": "PauseStateMachineArn",
    "resume_state_machine_arn": "ResumeStateMachineArn",
}
STOPPED_FOLLOWING = 130


class FleetStack(BaseModel):
    """The resources of one deployed control plane that the fleet commands use."""

    model_config = ConfigDict(frozen=True)

    name: str
    region: str
    state_table: str
    bucket: str
    backup_key_arn: str | None = None
    fleet_document_key: str = "fleet/schedules.json"
    pause_state_machine_arn: str
    resume_state_machine_arn: str


class Fleet:
    """A stack and the AWS clients to reach it with (`clients(service)`)."""

    def __init__(self, stack: FleetStack, clients: Callable[[str], Any]) -> None:
        self.stack = stack
        self._clients = clients
        self._made: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._made:
            self._made[service] = self._clients(service)
        return self._made[service]


def locate(stack: str, region: str | None, profile: str | None) -> Fleet:
    """The fleet of the deployed stack `stack`, read from its CloudFormation outputs and parameters.
    Tests replace this function to point the commands at a LocalCloud."""
    from mwaa_control.adapters.clients import client  # noqa: PLC0415 - see the note above

    if profile:
        # Every client of this process, the metadata commands' included, then uses the profile.
        os.environ["AWS_PROFILE"] = profile
    stacks = client("cloudformation", region=region).describe_stacks(StackName=stack)["Stacks"]
    if len(stacks) != 1:
        raise ControlPlaneError(f"stack {stack} not found: check --stack, --region and --profile")
    described = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])}
    missing = [key for field, key in OUTPUTS.items() if key not in outputs and field != "backup_key_arn"]
    if missing:
        raise ControlPlaneError(
            f"stack {stack} has no output {', '.join(missing)}: is it an mwaa-control stack, and of this "
            "version? Deploy the current template, then try again"
        )
    # arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<id>
    stack_region = str(described["StackId"]).split(":")[3]
    settings = FleetStack(
        name=described["StackName"],
        region=stack_region,
        fleet_document_key=parameters.get("FleetDocumentKey") or "fleet/schedules.json",
        **{field: outputs.get(key) for field, key in OUTPUTS.items()},
    )
    return Fleet(settings, lambda service: client(service, region=stack_region))


def _fail(error: Exception | str, code: int = 1) -> None:
    errors.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
    raise typer.Exit(code)


StackName = Annotated[str, typer.Option("--stack", help="CloudFormation stack name of the control plane")]
Region = Annotated[str | None, typer.Option(help="AWS region of the stack (default: the SDK's)")]
Profile = Annotated[str | None, typer.Option(help="AWS profile (default: the SDK's)")]


def _fleet(stack: str, region: str | None, profile: str | None) -> Fleet:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    try:
        return locate(stack, region, profile)
    except (ClientError, BotoCoreError, ControlPlaneError, ValueError) as error:
        _fail(f"{error} (reading stack {stack})")
        raise  # unreachable: _fail exits


# --- what pausing saved (status and savings) ---------------------------------------------------------

MEASURED = (
    "realised = measured: the paused intervals the state table recorded for each environment (from "
    "the moment a pause saw it deleted to the moment a resume asked MWAA to create it again), within "
    "the month up to now."
)
LEGACY = (
    "* measured from the current pause only, since its PAUSED record's updated_at: the record was "
    "written before the state table recorded paused intervals, so earlier pauses are not counted "
    "(a lower bound)."
)
PRICED = (
    "priced at list prices (USD) for the minimum capacity: environment class, MinWorkers, Schedulers, "
    "MinWebservers (a paused environment's from its snapshot); autoscaled workers are not counted."
)


class SavingsFigure(BaseModel):
    """Paused hours over [start, end) and what they saved."""

    start: dt.datetime
    end: dt.datetime
    hours_paused: Decimal
    """Rounded to 0.01 h for reading; `usd` is computed from the exact hours."""
    usd: Decimal
    """To the cent."""


class MeasuredFigure(SavingsFigure):
    """Realised savings: paused hours the state table recorded (see MEASURED)."""

    measured_from: Literal["paused_intervals", "updated_at"]
    """"paused_intervals": the recorded intervals. "updated_at": a PAUSED record written before
    intervals were recorded, so its current pause only, since the record's updated_at (see LEGACY)."""


class RecordedPauses(NamedTuple):
    intervals: list[tuple[dt.datetime, dt.datetime | None]]
    """(paused_at, resumed_at or None while paused), oldest first."""
    paused_since: dt.datetime | None
    """When the current pause began; None unless paused now."""
    measured_from: Literal["paused_intervals", "updated_at"]


def recorded_pauses(record: EnvironmentRecord | None, *, absent: bool) -> RecordedPauses:
    """The pauses the state table recorded for an environment (`absent`: MWAA does not list it).

    A PAUSED record of an absent environment without an open interval was written before intervals
    were recorded: its current pause counts from the record's updated_at (as before they were)."""
    from mwaa_control.pause.models import Phase  # noqa: PLC0415 - see the note above

    if record is None:
        return RecordedPauses([], None, "paused_intervals")
    intervals = [(i.paused_at, i.resumed_at) for i in record.paused_intervals]
    current = record.open_interval()
    if current is not None:
        return RecordedPauses(intervals, current.paused_at, "paused_intervals")
    if absent and record.phase is Phase.PAUSED:
        return RecordedPauses([*intervals, (record.updated_at, None)], record.updated_at, "updated_at")
    return RecordedPauses(intervals, None, "paused_intervals")


def _month(text: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[first instant, first instant of the next month) in UTC."""
    if text is None:
        now = now.astimezone(dt.UTC)
        year, month = now.year, now.month
    else:
        try:
            year, month = (int(part) for part in text.split("-"))
            dt.date(year, month, 1)
        except ValueError as error:
            raise typer.BadParameter(
                f"{text!r} is not a month: use YYYY-MM, e.g. 2026-11", param_hint="--month"
            ) from error
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def environment_size(
    fleet: Fleet, environment: ObservedEnvironment, record: EnvironmentRecord | None
) -> tuple[EnvironmentSize, Literal["environment", "snapshot"]]:
    """What the environment costs per hour is set by its live configuration, or, while it is
    paused, by the snapshot its resume recreates it from. Raises ValueError when neither exists."""
    from mwaa_control.pause.snapshot import (  # noqa: PLC0415 - see the note above
        MAX_SNAPSHOT_BYTES,
        SNAPSHOT_FILE,
        snapshot_prefix,
    )
    from mwaa_control.schedules.pricing import size_from_request  # noqa: PLC0415

    if environment.status is not None:
        live = fleet.client("mwaa").get_environment(Name=environment.name)["Environment"]
        return size_from_request(live), "environment"
    if record is None or not record.last_good_backup_id:
        raise ValueError("neither running nor paused with a snapshot: its size is unknown")
    key = f"{snapshot_prefix(environment.name, record.last_good_backup_id)}/{SNAPSHOT_FILE}"
    # Read without authenticating the snapshot (as the fleet scheduler reads its tags): only a
    # price depends on it, and its sealed configuration options are not needed.
    # Whoever can write the bucket controls these bytes: read at most what a real snapshot can be.
    body = fleet.client("s3").get_object(Bucket=fleet.stack.bucket, Key=key)["Body"].read(MAX_SNAPSHOT_BYTES + 1)
    if len(body) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"the snapshot is larger than {MAX_SNAPSHOT_BYTES} bytes: not a snapshot this stack wrote")
    request = json.loads(body).get("create_request")
    if not isinstance(request, dict):
        raise ValueError("the snapshot has no create_request object")
    return size_from_request(request), "snapshot"


class Priced(NamedTuple):
    size: EnvironmentSize
    size_from: Literal["environment", "snapshot"]
    hourly_price: Decimal
    region: str


def priced(fleet: Fleet, environment: ObservedEnvironment, record: EnvironmentRecord | None) -> Priced | str:
    """The environment's size and list price, or why they are unknown (savings are never guessed).
    Never raises."""
    from mwaa_control.schedules.pricing import UnknownPrice, hourly_price  # noqa: PLC0415 - see the note above

    try:
        size, size_from = environment_size(fleet, environment, record)
        return Priced(size, size_from, hourly_price(size, fleet.stack.region), fleet.stack.region)
    except UnknownPrice as unknown:
        return f"{unknown}: savings are not guessed"
    except Exception as error:  # one environment's failure never hides the others
        return f"size unknown ({type(error).__name__}: {str(error)[:200]})"


def _figure(
    paused: Sequence[tuple[dt.datetime, dt.datetime | None]],
    start: dt.datetime,
    end: dt.datetime,
    price: Priced,
) -> SavingsFigure:
    from mwaa_control.schedules.pricing import CENT, savings  # noqa: PLC0415 - see the note above

    saved = savings(paused, start, end, price.size, price.region)
    return SavingsFigure(start=start, end=end, hours_paused=saved.hours_paused.quantize(CENT), usd=saved.saved)


def realised(pauses: RecordedPauses, start: dt.datetime, end: dt.datetime, price: Priced) -> MeasuredFigure:
    """What the recorded pauses saved over [start, end) (see MEASURED)."""
    figure = _figure(pauses.intervals, start, end, price)
    return MeasuredFigure(**figure.model_dump(), measured_from=pauses.measured_from)


def _legacy(figure: SavingsFigure | None) -> bool:
    return isinstance(figure, MeasuredFigure) and figure.measured_from == "updated_at"


def _saved(figure: SavingsFigure | None) -> str:
    """USD and paused hours; '*' marks a figure measured from a legacy record (see LEGACY)."""
    if figure is None:
        return "-"
    return f"${figure.usd}{'*' if _legacy(figure) else ''} ({figure.hours_paused} h)"


# --- status ------------------------------------------------------------------------------------------


class NextAction(BaseModel):
    at: dt.datetime
    target: str
    reason: str


class ActiveOverride(BaseModel):
    kind: str
    until: dt.datetime
    reason: str = ""


class EnvironmentStatus(BaseModel):
    """One row of `mwaactl status` (and one object of its JSON output)."""

    environment: str
    status: str
    """MWAA's Status, "paused" (absent from MWAA, paused by us) or "absent"."""
    phase: str | None
    operation_running: bool
    schedule: str | None
    next_action: NextAction | None
    override: ActiveOverride | None
    last_verified_backup: str | None
    saved_this_month: MeasuredFigure | None = None
    """Realised this month (UTC) up to now, as `mwaactl savings` measures it; None when the
    environment's size or price is unknown (`savings_problem` says why)."""
    savings_problem: str | None = None
    problem: str | None = None


class FleetStatus(BaseModel):
    environments: list[EnvironmentStatus]
    document_problems: list[str] = []
    failures: dict[str, str] = {}


def _active(overrides: tuple[Override, ...], now: dt.datetime) -> Override | None:
    """The override in force: the most recent of the active ones (as the scheduler decides)."""
    active = [o for o in overrides if o.active_at(now)]
    return max(active, key=lambda o: o.created_at) if active else None


class _Readers(NamedTuple):
    """What `status` and `savings` read, built the way the fleet scheduler builds them."""

    document: Any
    problems: list[str]
    observer: Any
    overrides: Any
    records: Any


def _readers(fleet: Fleet, now: dt.datetime) -> _Readers:
    from mwaa_control.pause.state import PauseStateTable  # noqa: PLC0415 - see the note above
    from mwaa_control.schedules.config import ScheduleConfigError  # noqa: PLC0415
    from mwaa_control.schedules.fleet_adapters import EMPTY_DOCUMENT, FleetObserver, S3FleetDocument  # noqa: PLC0415
    from mwaa_control.schedules.overrides import OverrideStore  # noqa: PLC0415

    stack = fleet.stack
    loaded, _ = S3FleetDocument(fleet.client("s3"), stack.bucket, stack.fleet_document_key).load()
    observer = FleetObserver(
        mwaa=fleet.client("mwaa"),
        dynamodb=fleet.client("dynamodb"),
        s3=fleet.client("s3"),
        sfn=fleet.client("stepfunctions"),
        table=stack.state_table,
        bucket=stack.bucket,
    )
    refused = loaded if isinstance(loaded, ScheduleConfigError) else None
    return _Readers(
        document=EMPTY_DOCUMENT if refused is not None else loaded,
        problems=[str(p) for p in refused.problems] if refused is not None else [],
        observer=observer,
        overrides=OverrideStore(fleet.client("dynamodb"), stack.state_table, clock=lambda: now),
        records=PauseStateTable(fleet.client("dynamodb"), stack.state_table, execution_running=lambda _: True),
    )


def fleet_status(fleet: Fleet, now: dt.datetime) -> FleetStatus:
    from mwaa_control.schedules.config import ScheduleConfigError, managed_environment  # noqa: PLC0415
    from mwaa_control.schedules.evaluate import next_transition  # noqa: PLC0415

    month_start, _ = _month(None, now)
    document, problems, observer, overrides, records = _readers(fleet, now)
    seen = observer.observe(document.environments)
    rows: list[EnvironmentStatus] = []
    for environment in seen.environments:
        name = environment.name
        record = records.record(name)
        active = _active(overrides.overrides(name), now)
        schedule: str | None = None
        upcoming: NextAction | None = None
        problem: str | None = seen.failures.get(name)
        try:
            managed = managed_environment(document, name, environment.tags or {})
        except ScheduleConfigError as refused:
            managed, problem = None, "; ".join(str(p) for p in refused.problems)
        if managed is not None:
            schedule = next(k for k, v in document.schedules.items() if v == managed.schedule)
            durations = [dt.timedelta(seconds=s) for s in environment.creation_seconds]
            transition = next_transition(managed.schedule, managed.calendar, overrides.overrides(name), durations, now)
            if transition is not None:
                upcoming = NextAction(at=transition.at, target=transition.target.value, reason=transition.reason.value)
        if environment.status is not None:
            status = environment.status
        elif environment.phase is not None and environment.phase.value == "PAUSED":
            status = "paused"
        else:
            status = "absent"
        pauses = recorded_pauses(record, absent=environment.status is None)
        price = priced(fleet, environment, record)
        rows.append(
            EnvironmentStatus(
                environment=name,
                status=status,
                phase=None if environment.phase is None else environment.phase.value,
                operation_running=environment.operation_running,
                schedule=schedule,
                next_action=upcoming,
                override=None
                if active is None
                else ActiveOverride(kind=active.kind.value, until=active.until, reason=active.reason),
                last_verified_backup=None if record is None else record.last_good_backup_id,
                saved_this_month=None if isinstance(price, str) else realised(pauses, month_start, now, price),
                savings_problem=price if isinstance(price, str) else None,
                problem=problem,
            )
        )
    return FleetStatus(environments=rows, document_problems=problems, failures=dict(seen.failures))


def _when(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def show_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    total: Sequence[str] | None = None,
) -> None:
    """A table, when its words fit whole in the console's width; else, in a narrow terminal, one
    block per row: its first cell, then the others under their headers, so that no name, id or
    time is cut. `total`: a last row, set apart (in a block, only its filled cells)."""
    from rich.measure import Measurement  # noqa: PLC0415 - see the note above
    from rich.table import Table  # noqa: PLC0415

    table = Table(*headers, title=title)
    for row in rows:
        table.add_row(*row)
    if total is not None:
        table.add_section()
        table.add_row(*total)
    # Measured unbounded: its minimum is then the sum of each column's longest word (and the rules).
    if Measurement.get(console, console.options.update_width(10_000), table).minimum <= console.width:
        console.print(table)
        return
    if title is not None:
        console.print(title, style="italic", markup=False, soft_wrap=True)
    blocks = Table(box=None, show_header=False, show_edge=False, pad_edge=False)
    blocks.add_column(no_wrap=True)
    blocks.add_column(overflow="fold")
    for number, row in enumerate([*rows, *([total] if total is not None else [])]):
        if number:
            blocks.add_row("", "")
        blocks.add_row(f"[bold]{row[0]}[/bold]", "")
        for header, cell in zip(headers[1:], row[1:], strict=True):
            if cell or row is not total:
                blocks.add_row(f"  {header}", cell)
    console.print(blocks)


def print_status(report: FleetStatus) -> None:
    headers = (
        "environment",
        "status",
        "phase",
        "schedule",
        "next action",
        "override",
        "last verified backup",
        "saved this month",
    )
    rows: list[tuple[str, ...]] = []
    for row in report.environments:
        status = {"paused": "[cyan]paused[/cyan]", "AVAILABLE": "[green]AVAILABLE[/green]"}.get(row.status, row.status)
        phase = (row.phase or "-") + (" (operation running)" if row.operation_running else "")
        action = (
            "-"
            if row.next_action is None
            else f"{row.next_action.target} at {_when(row.next_action.at)} ({row.next_action.reason})"
        )
        override = "-" if row.override is None else f"{row.override.kind} until {_when(row.override.until)}"
        rows.append(
            (
                escape(row.environment),
                status,
                phase,
                escape(row.schedule or "-"),
                action,
                override,
                escape(row.last_verified_backup or "-"),
                _saved(row.saved_this_month),
            )
        )
    show_table(headers, rows)
    if any(_legacy(row.saved_this_month) for row in report.environments):
        console.print(f"[dim]{escape(LEGACY)}[/dim]", soft_wrap=True)
    for row in report.environments:
        if row.problem:
            errors.print(f"[yellow]{escape(row.environment)}:[/yellow] {escape(row.problem)}", soft_wrap=True)
    for problem in report.document_problems:
        errors.print(
            f"[red]fleet document refused:[/red] {escape(problem)} (fix the document; nothing is scheduled until then)",
            soft_wrap=True,
        )


def status(
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
    output: Annotated[Literal["table", "json"], typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """The managed fleet: each environment's state, schedule and savings.

    Each environment's MWAA status (or "paused"), pause/resume phase, schedule
    and next scheduled action, active override, the backup its resume would
    restore, and what pausing saved it this month (UTC, measured as `mwaactl
    savings` measures it; "-" when its size or price is unknown: `mwaactl
    savings` says why). A terminal too narrow for the table shows one block per
    environment.

    Exit codes: 0 shown, 1 the stack or the fleet could not be read."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    from mwaa_control import clock  # noqa: PLC0415

    fleet = _fleet(stack, region, profile)
    try:
        report = fleet_status(fleet, clock.now())
    except (ClientError, BotoCoreError, ControlPlaneError) as error:
        _fail(f"{error} (check that your role may read the stack's state table, bucket and MWAA)")
    if output == "json":
        print(report.model_dump_json(indent=2))
    else:
        print_status(report)


# --- pause / resume / follow -----------------------------------------------------------------------

FINISHED = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def _execution_name(environment: str, action: str, now: dt.datetime) -> str:
    # Step Functions names: at most 80 characters; MWAA names can be 80 themselves.
    suffix = f"-{action}-mwaactl-{now.strftime('%Y%m%dT%H%M%SZ')}"
    return environment[: 80 - len(suffix)] + suffix


def _history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    """The execution's events, oldest first (a pause waits on task tokens, not in polling loops:
    its history stays short)."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


def failure_cause(sfn: Any, arn: str, described: dict[str, Any]) -> str:
    """Why the execution failed, in the workflow's words: the outcome message its failure states
    carry (the workflows end in a Fail state whose own cause only points at it), else the last
    failed task's error, else the execution's error and cause."""
    events = _history(sfn, arn)
    for event in reversed(events):
        entered = event.get("stateEnteredEventDetails")
        if event["type"] == "FailStateEntered" and entered:
            try:
                message = json.loads(entered.get("input", "{}"))["outcome"]["result"]["message"]
            except (ValueError, KeyError, TypeError):
                break
            if message:
                return str(message)
            break
    for event in reversed(events):
        for details in ("taskFailedEventDetails", "lambdaFunctionFailedEventDetails"):
            if details in event:
                failed = event[details]
                return f"{failed.get('error', '')}: {_readable(failed.get('cause', ''))}"
    return f"{described.get('error') or 'no error recorded'}: {_readable(described.get('cause') or '')}"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def follow_execution(fleet: Fleet, arn: str, poll: float) -> dict[str, Any]:
    """Describe the execution until it ends, printing each state it enters. Ctrl-C raises
    KeyboardInterrupt to the caller; the execution is never stopped here."""
    sfn = fleet.client("stepfunctions")
    started = time.monotonic()
    seen = 0
    last = "starting"
    with console.status(last, spinner="dots") as progress:
        while True:
            described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
            for event in _history(sfn, arn):
                if event["id"] > seen and "stateEnteredEventDetails" in event:
                    last = str(event["stateEnteredEventDetails"]["name"])
                    elapsed = (event["timestamp"] - described["startDate"]).total_seconds()
                    console.print(f"[dim]{_elapsed(elapsed):>8}[/dim]  {escape(last)}", highlight=False)
                seen = max(seen, int(event["id"]))
            if described["status"] in FINISHED:
                return described
            elapsed_now = _elapsed(time.monotonic() - started)
            progress.update(f"{escape(last)} ({elapsed_now} following, Ctrl-C stops following)")
            time.sleep(poll)


def _follow_and_exit(fleet: Fleet, arn: str, poll: float) -> None:
    try:
        described = follow_execution(fleet, arn, poll)
    except KeyboardInterrupt:
        errors.print(
            f"stopped following; the workflow goes on. Follow it again with: mwaactl follow {arn}", soft_wrap=True
        )
        raise typer.Exit(STOPPED_FOLLOWING) from None
    outcome = str(described["status"])
    if outcome == "SUCCEEDED":
        console.print(f"[green]{outcome}[/green] {arn}", soft_wrap=True)
        return
    cause = failure_cause(fleet.client("stepfunctions"), arn, described)
    errors.print(f"[red]{outcome}[/red] {arn}", soft_wrap=True)
    errors.print(f"[red]cause:[/red] {escape(cause)}", soft_wrap=True)
    errors.print("see the execution history in the Step Functions console; `mwaactl status` shows the phase now")
    raise typer.Exit(1)


def _readable(cause: str) -> str:
    """Lambda failures carry their cause as a JSON object: its errorMessage says what happened."""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        return str(parsed["errorMessage"])
    return cause


def start_workflow(fleet: Fleet, action: Literal["pause", "resume"], execution_input: dict[str, Any]) -> str:
    machine = fleet.stack.pause_state_machine_arn if action == "pause" else fleet.stack.resume_state_machine_arn
    name = _execution_name(str(execution_input["environment"]), action, dt.datetime.now(dt.UTC))
    started = fleet.client("stepfunctions").start_execution(
        stateMachineArn=machine, name=name, input=json.dumps(execution_input)
    )
    return str(started["executionArn"])


NoWait = Annotated[bool, typer.Option("--no-wait", help="print the execution ARN and return at once")]
Poll = Annotated[float, typer.Option(help="seconds between looks at the execution", min=0.1)]


def _run(
    action: Literal["pause", "resume"],
    execution_input: dict[str, Any],
    stack: str,
    region: str | None,
    profile: str | None,
    no_wait: bool,
    poll: float,
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    fleet = _fleet(stack, region, profile)
    try:
        arn = start_workflow(fleet, action, execution_input)
    except (ClientError, BotoCoreError) as error:
        _fail(f"could not start the {action}: {error} (check your role may start the stack's state machines)")
    if no_wait:
        print(arn)
        return
    console.print(f"started {action} of [bold]{escape(execution_input['environment'])}[/bold]: {arn}", soft_wrap=True)
    console.print("Ctrl-C stops following; the workflow goes on.")
    try:
        _follow_and_exit(fleet, arn, poll)
    except (ClientError, BotoCoreError) as error:
        _fail(f"lost sight of {arn}: {error}; the workflow goes on: mwaactl follow {arn}")


def pause(
    environment: Annotated[str, typer.Argument(help="MWAA environment name")],
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
    no_wait: NoWait = False,
    poll: Poll = 5.0,
    accept_rest_path_losses: Annotated[
        bool,
        typer.Option(
            "--accept-rest-losses",
            help="Airflow 3 whose workers carry no database credentials: back up through "
            "the REST API and delete on that backup, although run history and redacted "
            "connection secrets will not come back on resume",
        ),
    ] = False,
) -> None:
    """Pause ENVIRONMENT now, following the Pause workflow until it ends.

    The workflow backs up and verifies its metadata, snapshots it and deletes
    it. The fleet scheduler resumes it at its schedule's next running period
    unless an override keeps it paused.

    Exit codes: 0 the workflow succeeded (or was started, with --no-wait), 1 it
    failed, timed out or was aborted (its cause is printed), 2 wrong arguments,
    130 stopped following with Ctrl-C (the workflow goes on)."""
    request: dict[str, Any] = {"environment": environment, "trigger": {"source": "mwaactl"}}
    if accept_rest_path_losses:
        request["accept_rest_path_losses"] = True
    _run("pause", request, stack, region, profile, no_wait, poll)


def resume(
    environment: Annotated[str, typer.Argument(help="MWAA environment name")],
    backup: Annotated[
        str | None,
        typer.Option("--backup", help="backup id to restore (default: the one its pause verified; see `backups`)"),
    ] = None,
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
    no_wait: NoWait = False,
    poll: Poll = 5.0,
) -> None:
    """Resume the paused ENVIRONMENT now, following the Resume workflow until it ends.

    The workflow creates it again from its snapshot and restores its metadata.
    The fleet scheduler pauses it at its schedule's next paused period unless an
    override keeps it awake.

    Exit codes: 0 the workflow succeeded (or was started, with --no-wait), 1 it
    failed, timed out or was aborted (its cause is printed), 2 wrong arguments,
    130 stopped following with Ctrl-C (the workflow goes on)."""
    execution_input: dict[str, Any] = {"environment": environment, "trigger": {"source": "mwaactl"}}
    if backup:
        execution_input["backup_id"] = backup
    _run("resume", execution_input, stack, region, profile, no_wait, poll)


def follow(
    execution_arn: Annotated[str, typer.Argument(help="a pause or resume execution ARN")],
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
    poll: Poll = 5.0,
) -> None:
    """Follow a running pause or resume (one started with --no-wait, or by the fleet scheduler).

    Exit codes: 0 the workflow succeeded (or was started, with --no-wait), 1 it
    failed, timed out or was aborted (its cause is printed), 2 wrong arguments,
    130 stopped following with Ctrl-C (the workflow goes on)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    fleet = _fleet(stack, region, profile)
    try:
        _follow_and_exit(fleet, execution_arn, poll)
    except (ClientError, BotoCoreError) as error:
        _fail(f"{error} (is {execution_arn} an execution of this stack's state machines?)")


# --- override ----------------------------------------------------------------------------------------


def _instant(text: str, option: str) -> dt.datetime:
    """ISO 8601; without a UTC offset, UTC (an on-call engineer's clock is not the stack's)."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-12-01T18:00Z", param_hint=option
        ) from error
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def override(
    environment: Annotated[str, typer.Argument(help="MWAA environment name")],
    keep_awake_until: Annotated[
        str | None, typer.Option(help="keep it running until this time (ISO 8601, UTC unless an offset is given)")
    ] = None,
    stay_paused_until: Annotated[str | None, typer.Option(help="keep it paused until this time (ISO 8601)")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="end its active overrides now: its schedule applies")] = False,
    reason: Annotated[str, typer.Option(help="why (kept with the override, at most 200 characters)")] = "",
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
) -> None:
    """Override ENVIRONMENT's schedule until a time, or clear its overrides.

    The fleet scheduler acts on it at its next run (an override it has not seen
    yet does nothing). Give exactly one of --keep-awake-until,
    --stay-paused-until, --clear.

    Exit codes: 0 done, 1 refused (a time in the past, no permission), 2 wrong
    arguments."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above
    from pydantic import ValidationError  # noqa: PLC0415

    from mwaa_control import clock  # noqa: PLC0415
    from mwaa_control.schedules.model import Override, OverrideKind  # noqa: PLC0415
    from mwaa_control.schedules.overrides import OverrideStore  # noqa: PLC0415

    chosen = [x for x in (keep_awake_until, stay_paused_until) if x is not None] + (["clear"] if clear else [])
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --keep-awake-until, --stay-paused-until, --clear")
    now = clock.now()
    kind = OverrideKind.KEEP_AWAKE if keep_awake_until else OverrideKind.STAY_PAUSED
    until = now if clear else _instant(keep_awake_until or stay_paused_until or "", f"--{kind.value}-until")
    if not clear and until <= now:
        _fail(f"{_when(until)} is in the past: give a time in the future (or --clear to end an override)")
    fleet = _fleet(stack, region, profile)
    store = OverrideStore(fleet.client("dynamodb"), fleet.stack.state_table)
    try:
        if clear:
            store.clear(environment)
            console.print(f"cleared the overrides of {escape(environment)}: its schedule applies again")
            return
        store.add(Override(environment=environment, kind=kind, created_at=now, until=until, reason=reason))
    except (ValidationError, ValueError) as error:
        _fail(f"{error} (check the environment name and --reason, at most 200 characters)")
    except (ClientError, BotoCoreError, ControlPlaneError) as error:
        _fail(f"{error} (your role must be under the stack's IAM path to write overrides)")
    console.print(
        f"{escape(environment)}: {kind.value} until {_when(until)}; the fleet scheduler applies it at its next run"
    )


# --- backups -----------------------------------------------------------------------------------------


def backups(
    environment: Annotated[str, typer.Argument(help="MWAA environment name")],
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
    verify: Annotated[
        bool, typer.Option(help="authenticate each backup with the stack's KMS key (one KMS call per backup)")
    ] = True,
) -> None:
    """ENVIRONMENT's backups, whether each verifies, and the one resume restores.

    The backups in the stack's bucket with their verification state (as `mwaactl
    metadata list` shows them), and the one its resume restores by default: the
    one its last pause verified.

    Exit codes: 0 listed, 1 the stack or the bucket could not be read."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    from mwaa_control.pause.state import PauseStateTable  # noqa: PLC0415
    from mwaactl.metadata import list_  # noqa: PLC0415

    fleet = _fleet(stack, region, profile)
    try:
        list_(
            from_=f"s3://{fleet.stack.bucket}",
            environment=environment,
            kms_key_id=fleet.stack.backup_key_arn if verify else None,
            region=fleet.stack.region,
        )
        record = PauseStateTable(
            fleet.client("dynamodb"), fleet.stack.state_table, execution_running=lambda _: True
        ).record(environment)
    except (ClientError, BotoCoreError) as error:
        _fail(f"{error} (your role must read the stack's bucket, KMS key and state table)")
    if record is not None and record.last_good_backup_id:
        console.print(f"resume restores {record.last_good_backup_id} (the backup its last pause verified)")
    else:
        console.print(f"no pause of {escape(environment)} has verified a backup: resume would be refused")


# --- savings -----------------------------------------------------------------------------------------

PROJECTED = (
    "projected = from the schedule: the paused hours its schedule, holidays and overrides plan for the "
    "rest of the month, as if the fleet scheduler follows them."
)


class EnvironmentSavings(BaseModel):
    """One row of `mwaactl savings` (and one object of its JSON output)."""

    environment: str
    status: str
    """As `mwaactl status` shows it: MWAA's Status, "paused" or "absent"."""
    schedule: str | None
    environment_class: str | None
    size_from: Literal["environment", "snapshot"] | None
    hourly_price: Decimal | None
    paused_since: dt.datetime | None
    """When the current pause began (its open interval, or a legacy record's updated_at); None
    unless paused now."""
    realised: MeasuredFigure | None
    """Measured, from month start to now (see MEASURED)."""
    projected: SavingsFigure | None
    """From the schedule, from now to month end (see PROJECTED); None without a schedule."""
    problem: str | None = None


class FleetSavings(BaseModel):
    month: str
    start: dt.datetime
    end: dt.datetime
    as_of: dt.datetime
    environments: list[EnvironmentSavings]
    realised_usd: Decimal
    projected_usd: Decimal
    notes: dict[str, str]
    """realised, projected, prices; legacy_records when a row is measured from a legacy record."""
    document_problems: list[str] = []


def fleet_savings(fleet: Fleet, month: str | None, now: dt.datetime) -> FleetSavings:
    from mwaa_control.pause.models import Phase  # noqa: PLC0415 - see the note above
    from mwaa_control.schedules.config import ScheduleConfigError, managed_environment  # noqa: PLC0415
    from mwaa_control.schedules.evaluate import paused_intervals, timeline  # noqa: PLC0415
    from mwaa_control.schedules.pricing import paused_duration  # noqa: PLC0415

    start, end = _month(month, now)
    # Measured up to now, projected after it; a past month has nothing left to project, a future
    # one nothing measured yet.
    cut = min(max(now, start), end)
    document, problems, observer, overrides, records = _readers(fleet, now)
    rows: list[EnvironmentSavings] = []
    for environment in observer.observe(document.environments).environments:
        name = environment.name
        paused_now = environment.status is None and environment.phase is Phase.PAUSED
        try:
            managed = managed_environment(document, name, environment.tags or {})
        except ScheduleConfigError:
            managed = None  # `mwaactl status` names the problem; nothing is scheduled for it
        record = records.record(name)
        pauses = recorded_pauses(record, absent=environment.status is None)
        paused_in_month = paused_duration(pauses.intervals, start, cut) > dt.timedelta(0)
        if managed is None and not paused_now and not paused_in_month:
            continue  # neither scheduled nor paused by us: nothing saved
        schedule = None if managed is None else next(k for k, v in document.schedules.items() if v == managed.schedule)
        row = EnvironmentSavings(
            environment=name,
            status="paused" if paused_now else (environment.status or "absent"),
            schedule=schedule,
            environment_class=None,
            size_from=None,
            hourly_price=None,
            paused_since=pauses.paused_since,
            realised=None,
            projected=None,
        )
        price = priced(fleet, environment, record)
        if isinstance(price, str):
            row.problem = price
            rows.append(row)
            continue
        row.environment_class, row.size_from, row.hourly_price = (
            price.size.environment_class,
            price.size_from,
            price.hourly_price,
        )
        row.realised = realised(pauses, start, cut, price)
        if managed is not None:
            planned = (
                []
                if cut >= end
                else timeline(
                    managed.schedule,
                    managed.calendar,
                    overrides.overrides(name),
                    [dt.timedelta(seconds=s) for s in environment.creation_seconds],
                    cut,
                    end,
                )
            )
            row.projected = _figure(paused_intervals(planned), cut, end, price)
        rows.append(row)
    notes = {"realised": MEASURED, "projected": PROJECTED, "prices": PRICED}
    legacy = [row.environment for row in rows if _legacy(row.realised)]
    if legacy:
        notes["legacy_records"] = f"{LEGACY[:-1]}: {', '.join(legacy)}."
    return FleetSavings(
        month=start.strftime("%Y-%m"),
        start=start,
        end=end,
        as_of=now,
        environments=rows,
        realised_usd=sum((r.realised.usd for r in rows if r.realised), Decimal("0.00")),
        projected_usd=sum((r.projected.usd for r in rows if r.projected), Decimal("0.00")),
        notes=notes,
        document_problems=problems,
    )


def print_savings(report: FleetSavings) -> None:
    headers = (
        "environment",
        "status",
        "schedule",
        "USD/hour",
        "paused since",
        "realised (measured)",
        "projected (schedule)",
    )
    rows = [
        (
            escape(row.environment),
            row.status,
            escape(row.schedule or "-"),
            "-" if row.hourly_price is None else f"{row.hourly_price} ({row.environment_class})",
            "-" if row.paused_since is None else _when(row.paused_since),
            _saved(row.realised),
            _saved(row.projected),
        )
        for row in report.environments
    ]
    total = ("total", "", "", "", "", f"${report.realised_usd}", f"${report.projected_usd}")
    show_table(headers, rows, title=f"savings in {report.month} (UTC), as of {_when(report.as_of)}", total=total)
    for note in report.notes.values():
        console.print(f"[dim]{escape(note)}[/dim]", soft_wrap=True)
    for row in report.environments:
        if row.problem:
            errors.print(f"[yellow]{escape(row.environment)}:[/yellow] {escape(row.problem)}", soft_wrap=True)
    for problem in report.document_problems:
        errors.print(f"[red]fleet document refused:[/red] {escape(problem)}", soft_wrap=True)


def savings(
    month: Annotated[
        str | None, typer.Option("--month", help="YYYY-MM, in UTC (default: this month)", show_default=False)
    ] = None,
    stack: StackName = "mwaa-control",
    region: Region = None,
    profile: Profile = None,
    output: Annotated[Literal["table", "json"], typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """What pausing saves each scheduled or paused environment in a month, in USD to the cent.

    Realised is MEASURED: the paused intervals the state table recorded in the
    month up to now. An environment whose record predates them counts its
    current pause only, a lower bound (marked *). Projected is FROM THE
    SCHEDULE: the paused hours its schedule, holidays and overrides plan from
    now to the month's end. Both at list prices for the minimum capacity (class,
    MinWorkers, Schedulers, MinWebservers).

    Exit codes: 0 shown, 1 the stack or the fleet could not be read, 2 wrong
    arguments."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    from mwaa_control import clock  # noqa: PLC0415

    now = clock.now()
    _month(month, now)  # a wrong --month is refused before the stack is looked for
    fleet = _fleet(stack, region, profile)
    try:
        report = fleet_savings(fleet, month, now)
    except (ClientError, BotoCoreError, ControlPlaneError) as error:
        _fail(f"{error} (check that your role may read the stack's state table, bucket and MWAA)")
    if output == "json":
        print(report.model_dump_json(indent=2))
    else:
        print_savings(report)


def register(app: typer.Typer) -> None:
    """Adds the fleet commands to `mwaactl`."""
    for command in (status, pause, resume, follow, override, backups, savings):
        app.command(command.__name__)(command)
