"""MWAA status change -> create or remove the environment's customer-managed VPC endpoints."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from mwaa_control.errors import CrossAccountNotConfigured, InvalidEnvironmentReference
from mwaa_control.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mwaa_control.endpoints.service import EndpointService
    from mwaa_control.settings import EndpointSettings

# The domain (pydantic models and settings, the adapters) loads on first use, not at import: cold
# start is what an idle function pays on every scale-out (bench/coldstart_bench.py).


@cache
def settings() -> EndpointSettings:
    from mwaa_control.settings import EndpointSettings  # noqa: PLC0415 - see the note above

    return EndpointSettings.from_env()


@cache
def service() -> EndpointService:
    from mwaa_control.composition import endpoint_service  # noqa: PLC0415 - see the note above

    return endpoint_service(settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from mwaa_control.endpoints.service import left_alone_counts  # noqa: PLC0415 - see the note above
    from mwaa_control.events import environment_of  # noqa: PLC0415

    try:
        ref = environment_of(event, settings().scope)
    except InvalidEnvironmentReference as error:
        # Malformed, foreign or out-of-scope events are dropped with a reason; retrying would not help.
        logger.warning("ignored event", extra={"reason": str(error), "event_id": _event_id(event)})
        metrics.add_metric(name="IgnoredEvents", unit=MetricUnit.Count, value=1)
        return {"outcome": "ignored", "reason": str(error)}
    logger.append_keys(environment_arn=ref.arn)
    try:
        result = service().reconcile(ref)
    except (CrossAccountNotConfigured, InvalidEnvironmentReference) as error:
        logger.error("cannot read participant environment", extra={"reason": str(error)})
        metrics.add_metric(name="IgnoredEvents", unit=MetricUnit.Count, value=1)
        return {"outcome": "ignored", "environment_arn": ref.arn, "reason": str(error)}
    logger.info("reconciled endpoints", extra={"result": result.summary()})
    metrics.add_metric(name=f"Endpoints_{result.outcome}", unit=MetricUnit.Count, value=1)
    left_alone = left_alone_counts([result])
    if left_alone.endpoints:
        metrics.add_metric(name="EndpointsLeftAlone", unit=MetricUnit.Count, value=left_alone.endpoints)
    if left_alone.sqs_endpoints_not_opted_in:
        # Its own metric (and alarm): an SQS policy that needed a change the VPC owner did not allow.
        metrics.add_metric(
            name="SqsEndpointsNotOptedIn", unit=MetricUnit.Count, value=left_alone.sqs_endpoints_not_opted_in
        )
    return result.summary()


def _event_id(event: Any) -> str | None:
    return event.get("id") if isinstance(event, dict) and isinstance(event.get("id"), str) else None
