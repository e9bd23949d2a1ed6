"""Step Functions task: the pause's REST-path fallback for an Airflow 3 environment whose workers
carry no metadata database credentials (statemachines/pause, statemachines/resume): drain and back
up through the REST API, or restore such a backup. Only after the operator accepted what the REST
path does not restore (pause/rest_fallback.py). The result carries names, ids and counts only."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from mwaa_control.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mwaa_control.pause.rest_fallback import RestPathService

# The domain, pydantic and pyarrow load on first use, not at import (bench/coldstart_bench.py).


@cache
def service() -> RestPathService:
    from mwaa_control.composition import rest_path_service  # noqa: PLC0415 - see the note above
    from mwaa_control.settings import LifecycleEnvironment  # noqa: PLC0415

    return rest_path_service(LifecycleEnvironment.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from mwaa_control.pause.models import RestBackup, RestPathEvent, RestRestore  # noqa: PLC0415
    from mwaa_control.pause.service import transient_errors_named  # noqa: PLC0415

    step = RestPathEvent.model_validate({"step": event}).step
    logger.append_keys(environment=step.environment, action=step.action, execution=step.execution)
    rest = service()
    with transient_errors_named():
        match step:
            case RestBackup():
                output = rest.back_up(
                    step.environment,
                    step.execution,
                    step.backup_id,
                    step.drain,
                    accepted=step.accept_rest_path_losses,
                )
            case RestRestore():
                output = rest.restore(step.environment, step.execution, step.backup_id)
    logger.info("step done", extra={"outcome": {k: v for k, v in output.items() if k != "tables"}})
    return output
