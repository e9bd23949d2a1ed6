"""MWAA status change -> complete the pause/resume wait parked for that environment, if the status
MWAA reports now (not the event's) decides it. Only final statuses reach this function (rule filter)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from mwaa_control.adapters.clients import client
from mwaa_control.errors import InvalidEnvironmentReference
from mwaa_control.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from mwaa_control.pause.state import PauseStateTable
    from mwaa_control.settings import LifecycleEnvironment

# The domain (pydantic models and settings, the adapters) loads on first use, not at import: cold
# start is what an idle function pays on every scale-out (bench/coldstart_bench.py).


@cache
def settings() -> LifecycleEnvironment:
    from mwaa_control.settings import LifecycleEnvironment  # noqa: PLC0415 - see the note above

    return LifecycleEnvironment.from_env()


@cache
def state() -> PauseStateTable:
    from mwaa_control.composition import pause_state  # noqa: PLC0415 - see the note above

    return pause_state(settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from mwaa_control.events import environment_of  # noqa: PLC0415 - see the note above
    from mwaa_control.models import ControlScope  # noqa: PLC0415
    from mwaa_control.pause.waits import GONE, complete  # noqa: PLC0415

    current = settings()
    scope = ControlScope(partition=current.partition, region=current.region, account_id=current.account_id)
    try:
        ref = environment_of(event, scope)
    except InvalidEnvironmentReference as error:
        logger.warning("ignored event", extra={"reason": str(error)})
        return {"outcome": "ignored", "reason": str(error)}
    if state().parked(ref.name) is None:
        return {"outcome": "nothing waits", "environment": ref.name}
    mwaa = client("mwaa", region=current.region)
    try:
        found = mwaa.get_environment(Name=ref.name)["Environment"]
        status = str(found["Status"])
        reason = str(((found.get("LastUpdate") or {}).get("Error") or {}).get("ErrorMessage") or "")
    except mwaa.exceptions.ResourceNotFoundException:
        status, reason = GONE, ""
    done = complete(state(), client("stepfunctions", region=current.region), ref.name, status, reason)
    logger.info("status change", extra={"environment": ref.name, "status": status, "wait": done})
    return {"outcome": done or "still waiting", "environment": ref.name, "status": status}
