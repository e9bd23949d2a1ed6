"""What one pause + resume cycle costs the control plane (issue 11): state transitions and Lambda
invocations per environment, counted from the real executions on the local cloud, with how each
figure is made up. Budget: at most 40 transitions and 12 invocations per environment, the endpoint
automation's status-change handlers not counted (they run on every status change anyway).

    uv run --locked python -m bench.lifecycle_bench

Runs the same cycle as `make demo` (a public environment and a shared-VPC one with customer-managed
endpoints, on real Airflow 2.11) without the timeline. Counts, not timings: they do not depend on
the machine."""

from __future__ import annotations

import sys

from rich.console import Console

from localcloud import LocalCloud
from localcloud.lifecycle import PauseResumeOutcome, cost_table, pause_resume_cycle
from localcloud.network import build_shared_vpc
from mwaa_control.observability import logger


def main() -> int:
    console = Console(highlight=False, width=160)
    with LocalCloud(
        environment_overrides={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}
    ) as cloud:
        logger.setLevel("ERROR")
        outcome: PauseResumeOutcome = pause_resume_cycle(
            cloud, build_shared_vpc(cloud.client("ec2")), note=lambda _: None
        )
    console.print(cost_table(outcome))
    over = [name for name, cost in outcome.costs.items() if not cost.within_budget]
    failed = [name for name, ok in outcome.succeeded.items() if not ok]
    if failed or over:
        console.print(f"[red]failed: {failed}; over budget: {over}[/red]")
        return 1
    console.print("[green]every cycle succeeded within the budget[/green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
