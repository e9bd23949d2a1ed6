"""The fleet scheduler: pause and resume every opted-in environment by its schedule.

Invoked by its one-time wake-up schedule at the next transition and by a periodic schedule (the
repair path for a missed or failed trigger). Each run is idempotent: it starts executions named
for the transition they carry out, so a second run starts none of them again."""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mwaa_control.errors import FleetReconcileIncomplete
from mwaa_control.observability import METRICS_NAMESPACE, SERVICE, logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mwaa_control.schedules.fleet_service import FleetScheduler

# The domain (pydantic models and settings, the adapters) loads on first use, not at import: cold
# start is what an idle function pays on every scale-out (bench/coldstart_bench.py).


@cache
def scheduler() -> FleetScheduler:
    from mwaa_control.schedules.fleet_service import (  # noqa: PLC0415 - see the note above
        FleetSchedulerSettings,
        fleet_scheduler,
    )

    return fleet_scheduler(FleetSchedulerSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The event only says who woke us (the wake-up schedule or the periodic one): every run
    # reconciles the whole fleet from what it observes.
    logger.append_keys(trigger=str(event.get("source", "unknown"))[:64] if isinstance(event, dict) else "unknown")
    run = scheduler().run(target_arn=context.invoked_function_arn)
    metrics.add_metric(name="ActionsStarted", unit=MetricUnit.Count, value=len(run.started))
    for reason, count in sorted(Counter(d.reason.value for d in run.deferred).items()):
        with single_metric(
            name="Deferred",
            unit=MetricUnit.Count,
            value=count,
            namespace=METRICS_NAMESPACE,
            default_dimensions={"service": SERVICE, "Reason": reason},
        ):
            pass
    metrics.add_metric(name="EnvironmentFailures", unit=MetricUnit.Count, value=len(run.failures))
    result = run.model_dump(mode="json")
    logger.info(
        "fleet scheduled",
        extra={
            "started": run.started,
            "already_started": run.already_started,
            "deferred": [d.model_dump(mode="json") for d in run.deferred],
            "problems": [str(p) for p in run.decision.problems],
            "wake_up": result["wake_up"],
            "document_version": run.document_version,
        },
    )
    if run.failures:
        # Raising makes the function's Errors alarm page someone; the others were scheduled.
        raise FleetReconcileIncomplete(
            f"{len(run.failures)} environment(s) failed: " + "; ".join(f"{k}: {v}" for k, v in run.failures.items())
        )
    return result
