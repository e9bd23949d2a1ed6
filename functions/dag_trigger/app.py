"""Step Functions task (.waitForTaskToken): trigger a DAG whose run reports back through the token,
which waits in the control plane's table (the run's conf carries only a reference to it)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mwaa_control.airflow.callback_store import callback_store
from mwaa_control.airflow.dag_runs import parse_trigger_request, trigger_for_task
from mwaa_control.composition import airflow_client
from mwaa_control.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_trigger_request(event)
    region = os.environ["AWS_REGION"]
    result = trigger_for_task(
        airflow_client(request.environment, region=region),
        request,
        callbacks=callback_store(os.environ["LOCK_TABLE_NAME"], region=region),
        region=region,
    )
    logger.info(
        "triggered DAG run", extra={"environment": result.environment, "dag_id": result.dag_id, "run_id": result.run_id}
    )
    return result.model_dump()
