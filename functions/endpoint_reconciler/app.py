"""Scheduled polling fallback: reconcile every environment's endpoints, since events can be missed."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from mwaa_control.errors import FleetReconcileIncomplete
from mwaa_control.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mwaa_control.endpoints.service import EndpointService

# The domain (pydantic models and settings, the adapters) loads on first use, not at import: cold
# start is what an idle function pays on every scale-out (bench/coldstart_bench.py).


@cache
def service() -> EndpointService:
    from mwaa_control.composition import endpoint_service  # noqa: PLC0415 - see the note above
    from mwaa_control.settings import EndpointSettings  # noqa: PLC0415

    return endpoint_service(EndpointSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from mwaa_control import clock  # noqa: PLC0415 - see the note above
    from mwaa_control.endpoints.service import left_alone_counts, stuck_environments  # noqa: PLC0415

    results = service().reconcile_fleet()
    changed = [r for r in results if r.outcome in ("provisioned", "removed")]
    # Endpoints tagged as ours that we did not create (someone tagging endpoints as ours may be
    # probing the automation), and SQS endpoints whose policy needed a change the VPC owner did not
    # opt in to: each worth its own alarm, never a failure.
    left_alone = left_alone_counts(results)
    metrics.add_metric(name="EnvironmentsReconciled", unit=MetricUnit.Count, value=len(results))
    stuck = stuck_environments(results, clock.now())
    metrics.add_metric(name="EnvironmentsStuck", unit=MetricUnit.Count, value=len(stuck))
    for result in stuck:
        logger.warning(
            "environment stuck",
            extra={
                "environment_arn": result.environment_arn,
                "status": result.status,
                "created_at": str(result.created_at),
            },
        )
    metrics.add_metric(name="EndpointsLeftAlone", unit=MetricUnit.Count, value=left_alone.endpoints)
    metrics.add_metric(
        name="SqsEndpointsNotOptedIn", unit=MetricUnit.Count, value=left_alone.sqs_endpoints_not_opted_in
    )
    logger.info(
        "fleet reconciled",
        extra={
            "environments": len(results),
            "changed": len(changed),
            "left_alone": left_alone.endpoints,
            "sqs_endpoints_not_opted_in": left_alone.sqs_endpoints_not_opted_in,
        },
    )
    failed = [r for r in results if r.outcome == "failed"]
    if failed:
        # Raising makes the function's Errors alarm page someone; the others were reconciled.
        raise FleetReconcileIncomplete(
            f"{len(failed)} of {len(results)} environments failed: "
            + "; ".join(f"{r.environment_arn}: {r.reason}" for r in failed)
        )
    return {"environments": len(results), "results": [r.summary() for r in results]}
