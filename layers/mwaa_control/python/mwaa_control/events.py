"""MWAA status-change events: recognise them and identify the environment they are about.

The detail body of "MWAA Environment Status Change" is not published and delivery is best-effort,
so an event is only a trigger: it names an environment, and GetEnvironment says what is true.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

from mwaa_control.errors import EnvironmentOutOfScope, InvalidEnvironmentReference
from mwaa_control.models import ControlScope, EnvironmentRef

MWAA_SOURCE = "aws.airflow"
STATUS_CHANGE = "MWAA Environment Status Change"
_NAME_KEYS = ("name", "Name", "environmentName", "EnvironmentName")


def environment_of(raw_event: Any, scope: ControlScope) -> EnvironmentRef:
    """The environment an MWAA status-change event is about, if this deployment serves it.

    Raises InvalidEnvironmentReference for anything that is not such an event, or that does not
    name an environment unambiguously (the ARN in resources wins over a name in detail; when both
    are present they must agree). Raises EnvironmentOutOfScope (a subclass) when the event's account
    or region is not the ARN's (MWAA emits an environment's events in its own account and region),
    or when the environment is not in an account and region this deployment serves.
    """
    try:
        event = parse(event=raw_event, model=EventBridgeModel)
    except (ValidationError, TypeError, ValueError) as error:
        raise InvalidEnvironmentReference(f"not an EventBridge event: {_first_line(error)}") from None
    if event.source != MWAA_SOURCE or event.detail_type != STATUS_CHANGE:
        raise InvalidEnvironmentReference(f"foreign event: source={event.source!r} detail-type={event.detail_type!r}")
    # Anything that looks like an environment ARN must be a valid one: a malformed ARN is refused,
    # never skipped in favour of a name elsewhere in the event.
    arns = [r for r in event.resources if ":airflow:" in r and ":environment/" in r]
    detail = event.detail if isinstance(event.detail, dict) else {}
    names = {str(detail[k]) for k in _NAME_KEYS if isinstance(detail.get(k), str)}
    if len(arns) > 1 or len(names) > 1:
        raise InvalidEnvironmentReference("event names more than one environment")
    if arns:
        ref = EnvironmentRef.from_arn(arns[0])
        if names and names != {ref.name}:
            raise InvalidEnvironmentReference(f"event resources name {ref.name!r} but detail names {names.pop()!r}")
        if (event.account, event.region) != (ref.account, ref.region):
            raise EnvironmentOutOfScope(
                f"event from account {event.account} in {event.region} names {ref.arn}; "
                "MWAA emits an environment's events in the environment's own account and region"
            )
    elif not names:
        raise InvalidEnvironmentReference("event names no environment (no ARN in resources, no detail.name)")
    else:
        try:
            ref = EnvironmentRef(
                account=event.account, region=event.region, name=names.pop(), partition=scope.partition
            )
        except ValueError as error:
            raise InvalidEnvironmentReference(_first_line(error)) from None
    refusal = scope.refusal(ref)
    if refusal:
        raise EnvironmentOutOfScope(refusal)
    return ref


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
