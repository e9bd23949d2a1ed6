"""mwaactl endpoints: one-off operator tasks on the customer-managed VPC endpoints of a deployed stack.

mwaactl endpoints adopt [--dry-run] [--include-gone] [--stack NAME] [--region REGION]

Versions before the endpoint registry tagged the endpoints they created but recorded nothing; the
automation deletes only registered endpoints, so after the upgrade those are left alone (and
reported by EndpointsLeftAloneAlarm) until the operator adopts them here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from mwaa_control.errors import ControlPlaneError

if TYPE_CHECKING:
    from mwaa_control.endpoints.service import EndpointService
    from mwaa_control.models import AdoptionCandidate
    from mwaa_control.settings import EndpointSettings

# `mwaactl --help` and argument errors must answer at once: the engines (pyarrow, SQLAlchemy,
# psycopg, boto3) load inside the commands that use them (tests/unit/test_cold_imports.py).

endpoints = typer.Typer(help="Customer-managed VPC endpoints of a deployed stack.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

Region = Annotated[str | None, typer.Option(help="AWS region of the stack (default: the SDK's)")]
Stack = Annotated[str, typer.Option("--stack", help="CloudFormation stack name of the control plane")]


def _fail(error: Exception) -> None:
    errors.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
    raise typer.Exit(1)


def client(service: str, *, region: str | None = None) -> Any:
    from mwaa_control.adapters.clients import client as boto3_client  # noqa: PLC0415 - see the note above

    return boto3_client(service, region=region)


def endpoint_service(settings: EndpointSettings) -> EndpointService:
    from mwaa_control.composition import endpoint_service as compose  # noqa: PLC0415 - see the note above

    return compose(settings)


def build_service(stack: str, region: str | None) -> EndpointService:
    """The stack's endpoint service, configured as its functions are: the state table (stack
    output LockTableName), the participants (stack parameters) and the stack's account."""
    from mwaa_control.settings import EndpointSettings  # noqa: PLC0415 - see the note above

    cloudformation = client("cloudformation", region=region)
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    if len(stacks) != 1:
        raise ControlPlaneError(f"stack {stack} not found")
    described = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])}
    if "LockTableName" not in outputs:
        raise ControlPlaneError(f"stack {stack} has no LockTableName output: is it an mwaa-control stack?")
    # arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<id>
    _, partition, _, stack_region, account, _ = str(described["StackId"]).split(":", 5)
    settings = EndpointSettings(
        deployment_id=described["StackName"],
        lock_table_name=outputs["LockTableName"],
        region=stack_region,
        partition=partition,
        account_id=account,
        participant_role_name=parameters.get("ParticipantRoleName") or None,
        participant_account_ids=tuple(
            a.strip() for a in parameters.get("ParticipantAccountIds", "").split(",") if a.strip()
        ),
    )
    return endpoint_service(settings)


def _line(candidate: AdoptionCandidate, label: str) -> str:
    endpoint = candidate.endpoint
    return (
        f"{label:<22} {endpoint.endpoint_id}  {endpoint.environment_arn}  {endpoint.service_name} "
        f"({endpoint.vpc_id}): {candidate.reason}"
    )


@endpoints.command("adopt")
def adopt(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be registered; change nothing")] = False,
    include_gone: Annotated[
        bool,
        typer.Option(
            "--include-gone",
            help="also register endpoints of environments that no longer exist (the next sweep deletes them); "
            "only if you know this stack created them",
        ),
    ] = False,
    stack: Stack = "mwaa-control",
    region: Region = None,
) -> None:
    """Register the endpoints an older version of this stack created (once, after upgrading).

    Registers endpoints tagged as this stack's by a version without the
    endpoint registry: those of an MWAA PrivateLink service, of an environment
    this stack serves, whose service is that environment's current database or
    webserver endpoint service. Endpoints of environments that no longer exist
    need --include-gone. Run --dry-run first."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see the note above

    try:
        service = build_service(stack, region)
        candidates = service.adoption_candidates()
    except (ControlPlaneError, ClientError, BotoCoreError, ValueError) as error:
        _fail(error)
    if not candidates:
        console.print("no unregistered endpoints tagged as this stack's: nothing to adopt")
        return
    will = [c for c in candidates if c.verdict == "adopt" or (c.verdict == "gone" and include_gone)]
    prefix = "would register" if dry_run else "registering"
    for candidate in candidates:
        if candidate in will:
            label = prefix
        elif candidate.verdict == "gone":
            label = "needs --include-gone"
        else:
            label = "refused"
        console.print(escape(_line(candidate, label)), soft_wrap=True, highlight=False)
    gone_left = sum(1 for c in candidates if c.verdict == "gone" and not include_gone)
    if dry_run:
        console.print(f"dry run: would register {len(will)} endpoint(s); nothing was changed")
    else:
        try:
            adopted = service.adopt(candidates, include_gone=include_gone)
        except (ControlPlaneError, ClientError, BotoCoreError) as error:
            _fail(error)
        console.print(f"registered {len(adopted)} endpoint(s)")
    if gone_left:
        console.print(
            f"{gone_left} endpoint(s) of environments that no longer exist were left unregistered: check them, "
            "then run again with --include-gone to have the next sweep delete them"
        )
