"""Step Functions task: one step of pausing, resuming or exporting an environment (statemachines/pause,
statemachines/resume and statemachines/export). The event names the step; the result carries names and ids only."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mwaa_control.composition import lifecycle_service
from mwaa_control.observability import logger, metrics, tracer
from mwaa_control.pause.models import (
    Abandon,
    CheckStatus,
    CreateAndWait,
    DeleteAndWait,
    FinishExport,
    FinishPause,
    FinishResume,
    LifecycleEvent,
    PrepareExport,
    PreparePause,
    PrepareResume,
    VerifyBackup,
)
from mwaa_control.pause.service import LifecycleService, transient_errors_named
from mwaa_control.settings import LifecycleEnvironment


@cache
def service() -> LifecycleService:
    return lifecycle_service(LifecycleEnvironment.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The step is validated before anything is read; a task token in it never reaches a log line.
    step = LifecycleEvent.model_validate({"step": event}).step
    logger.append_keys(environment=step.environment, action=step.action, execution=step.execution)
    lifecycle = service()
    result: Any
    # A throttle or server error that outlasted botocore's retries gets the name the workflow retries.
    with transient_errors_named():
        match step:
            case PreparePause():
                result = lifecycle.prepare_pause(step)
            case VerifyBackup():
                result = lifecycle.verify_backup(step)
            case DeleteAndWait():
                result = lifecycle.delete_and_wait(step)
            case CheckStatus():
                result = lifecycle.check_status(step)
            case FinishPause():
                result = lifecycle.finish_pause(step)
            case PrepareExport():
                result = lifecycle.prepare_export(step)
            case FinishExport():
                result = lifecycle.finish_export(step)
            case PrepareResume():
                result = lifecycle.prepare_resume(step)
            case CreateAndWait():
                result = lifecycle.create_and_wait(step)
            case FinishResume():
                result = lifecycle.finish_resume(step)
            case Abandon():
                result = lifecycle.abandon(step)
    output: dict[str, Any] = result if isinstance(result, dict) else result.model_dump(mode="json")
    logger.info(
        "step done", extra={"outcome": {k: v for k, v in output.items() if k not in ("export_conf", "import_conf")}}
    )
    return output
