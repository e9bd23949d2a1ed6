"""Step Functions task: one step of pausing, resuming or exporting an environment (statemachines/pause,
statemachines/resume and statemachines/export). The event names the step; the result carries names and ids only."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mwaa_control.observability import METRICS_NAMESPACE, SERVICE, logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mwaa_control.pause.service import LifecycleService

# The domain (pydantic models and settings, the adapters) loads on first use, not at import: cold
# start is what an idle function pays on every scale-out (bench/coldstart_bench.py).


@cache
def service() -> LifecycleService:
    from mwaa_control.composition import lifecycle_service  # noqa: PLC0415 - see the note above
    from mwaa_control.settings import LifecycleEnvironment  # noqa: PLC0415

    return lifecycle_service(LifecycleEnvironment.from_env())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from mwaa_control.pause.models import (  # noqa: PLC0415 - see the note above
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
    from mwaa_control.pause.service import transient_errors_named  # noqa: PLC0415

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
    _emit_metrics(step.action, step, output)
    logger.info(
        "step done", extra={"outcome": {k: v for k, v in output.items() if k not in ("export_conf", "import_conf")}}
    )
    return output


def _emit_metrics(action: str, step: Any, output: dict[str, Any]) -> None:
    """What the dashboard shows and the alarms watch (template.yaml's OperationsDashboard); every
    name here must appear there (tests/test_observability.py)."""
    if action == "verify_backup":
        metrics.add_metric(name="BackupRows", unit=MetricUnit.Count, value=int(output.get("rows", 0)))
        metrics.add_metric(name="BackupBytes", unit=MetricUnit.Bytes, value=int(output.get("bytes", 0)))
        if output.get("seconds") is not None:
            metrics.add_metric(name="BackupSeconds", unit=MetricUnit.Seconds, value=float(output["seconds"]))
    elif action == "finish_pause" and output.get("phase") == "PAUSED":
        metrics.add_metric(name="EnvironmentsPaused", unit=MetricUnit.Count, value=1)
    elif action == "finish_resume" and output.get("phase") == "ACTIVE":
        metrics.add_metric(name="EnvironmentsResumed", unit=MetricUnit.Count, value=1)
        if output.get("creation_seconds") is not None:
            metrics.add_metric(name="CreationSeconds", unit=MetricUnit.Seconds, value=float(output["creation_seconds"]))
        if output.get("restore_seconds") is not None:
            metrics.add_metric(name="RestoreSeconds", unit=MetricUnit.Seconds, value=float(output["restore_seconds"]))
        if output.get("paused_hours") is not None:
            metrics.add_metric(name="PausedHours", unit=MetricUnit.Count, value=float(output["paused_hours"]))
        if output.get("saved_usd") is not None:
            # USD at the list price of the environment's size (schedules/pricing.py); no unit fits.
            metrics.add_metric(name="EstimatedSavingsUSD", unit=MetricUnit.NoUnit, value=float(output["saved_usd"]))
    elif action == "abandon":
        # By operation, the stage that failed and the error's name: bounded sets, never free text.
        dimensions = {"service": SERVICE, "Operation": str(step.operation), "Stage": str(step.stage)}
        with single_metric(
            name="WorkflowFailures",
            unit=MetricUnit.Count,
            value=1,
            namespace=METRICS_NAMESPACE,
            default_dimensions={**dimensions, "Reason": failure_reason(step.error)},
        ):
            pass


ERROR_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,47}$")


def failure_reason(error: dict[str, Any] | None) -> str:
    """The failure's error name (`PauseRefused`, `States.Timeout`, `NoWorkerDatabase`) as a metric
    dimension; anything that is not a plain name is "Other", so a message never becomes one."""
    name = (error or {}).get("Error") or (error or {}).get("error")
    return name if isinstance(name, str) and ERROR_NAME.match(name) else "Other"
