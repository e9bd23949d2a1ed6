"""Step Functions task (.waitForTaskToken): trigger a DAG whose run reports back through the token,
which waits in the control plane's table (the run's conf carries only a reference to it)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mwaa_control.adapters.clients import client
from mwaa_control.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# The domain (pydantic models, the Airflow adapters) loads on the first invocation, not at import:
# cold start is what an idle function pays on every scale-out (bench/coldstart_bench.py).


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from mwaa_control.airflow.callback_store import callback_store  # noqa: PLC0415 - see the note above
    from mwaa_control.airflow.dag_runs import parse_trigger_request, trigger_for_task  # noqa: PLC0415
    from mwaa_control.composition import airflow_client  # noqa: PLC0415

    request = parse_trigger_request(event)
    region = os.environ["AWS_REGION"]
    result = trigger_for_task(
        airflow_client(request.environment, region=region, mwaa=client("mwaa", region=region)),
        request,
        callbacks=callback_store(os.environ["LOCK_TABLE_NAME"], region=region),
        region=region,
    )
    logger.info(
        "triggered DAG run", extra={"environment": result.environment, "dag_id": result.dag_id, "run_id": result.run_id}
    )
    return result.model_dump()
