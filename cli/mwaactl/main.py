"""mwaactl: the on-call engineer's entry point to the control plane.

mwaactl dags trigger ENV DAG [--conf JSON] [--run-id ID] [--wait] [--timeout SECONDS]
mwaactl airflow ENV -- <airflow cli args>
mwaactl metadata backup|restore|verify|list ...
mwaactl endpoints adopt [--dry-run] [--include-gone] [--stack NAME] [--region REGION]
mwaactl status | pause ENV | resume ENV | follow ARN | override ENV | backups ENV [--stack NAME]
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from mwaactl.endpoints import endpoints
from mwaactl.fleet import register as register_fleet_commands
from mwaactl.metadata import metadata

app = typer.Typer(help="Operate MWAA environments: trigger DAGs, run Airflow commands.", no_args_is_help=True)
dags = typer.Typer(help="DAG runs.", no_args_is_help=True)
app.add_typer(dags, name="dags")
app.add_typer(metadata, name="metadata")
app.add_typer(endpoints, name="endpoints")
register_fleet_commands(app)
console = Console()
errors = Console(stderr=True)

Region = Annotated[str | None, typer.Option(help="AWS region (default: the SDK's)")]

# `mwaactl --help` and argument errors must answer at once: the engines (pyarrow, SQLAlchemy,
# psycopg, boto3) load inside the commands that use them (tests/unit/test_cold_imports.py).


def _fail(error: Exception, code: int = 1) -> None:
    errors.print(f"[red]error:[/red] {error}", soft_wrap=True)
    raise typer.Exit(code)


@dags.command("trigger")
def trigger(
    environment: str,
    dag_id: str,
    conf: Annotated[str, typer.Option(help="run conf as a JSON object")] = "{}",
    run_id: Annotated[str | None, typer.Option(help="run id (default: generated)")] = None,
    wait: Annotated[bool, typer.Option(help="wait until the run finishes")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 3600,
    poll: Annotated[float, typer.Option(help="seconds between state checks")] = 15,
    region: Region = None,
) -> None:
    """Trigger DAG_ID on ENVIRONMENT.

    Exit codes: 0 triggered (or, with --wait, succeeded), 1 failed, 2 --wait ran
    out of time while the run was still going."""
    from mwaa_control.airflow.errors import AirflowError  # noqa: PLC0415 - see the note above
    from mwaa_control.composition import airflow_client  # noqa: PLC0415

    try:
        parsed: Any = json.loads(conf)
    except ValueError as error:
        _fail(ValueError(f"--conf is not JSON: {error}"))
    try:
        client = airflow_client(environment, region=region)
        run = client.trigger_dag(dag_id, conf=parsed, run_id=run_id)
        console.print(f"triggered {run.dag_id} run [bold]{run.run_id}[/bold] ({run.state})")
        if wait:
            run = client.wait_for_run(dag_id, run.run_id, timeout=timeout, poll=poll)
            console.print(f"run {run.run_id} is [bold]{run.state}[/bold]")
            if not run.finished:
                raise typer.Exit(2)
            if run.state != "success":
                raise typer.Exit(1)
    except (AirflowError, ValueError) as error:
        _fail(error)


@app.command("airflow", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow_command(
    ctx: typer.Context,
    environment: str,
    region: Region = None,
) -> None:
    """Run an Airflow CLI command on ENVIRONMENT: mwaactl airflow ENV -- dags list -o json"""
    from mwaa_control.airflow.errors import AirflowError  # noqa: PLC0415 - see the note above
    from mwaa_control.composition import airflow_client  # noqa: PLC0415

    argv = list(ctx.args)
    if not argv:
        _fail(ValueError("give the Airflow command after --, e.g. mwaactl airflow ENV -- dags list"))
    try:
        result = airflow_client(environment, region=region).run_cli(argv)
    except AirflowError as error:
        _fail(error)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)


if __name__ == "__main__":
    app()
