"""Event-driven waits: a workflow parks its task token per environment and target status; the
status-change handler (and the fallback check) completes it from what MWAA says now.

The event is only a trigger: the decision reads GetEnvironment, so a late, duplicated or forged
event can at most cause one extra read. A wait for DELETED never fails here (an environment still
AVAILABLE right after DeleteEnvironment was sent has not started deleting yet); the fallback check
sends the delete again instead."""

from __future__ import annotations

import json
from typing import Any, Protocol

from botocore.exceptions import ClientError

from mwaa_control.pause.state import PauseStateTable

GONE = "DELETED"
FAILED_CREATION = ("CREATE_FAILED",)


class TaskReports(Protocol):
    def send_task_success(self, *, taskToken: str, output: str) -> Any: ...

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> Any: ...


def outcome(target: str, status: str, reason: str = "") -> tuple[bool, str | None, str]:
    """(reached, error code or None while still waiting, cause) for a wait on `target`."""
    if target == GONE:
        return status == GONE, None, ""
    if status == target:
        return True, None, ""
    if status in FAILED_CREATION:
        return False, "EnvironmentCreateFailed", f"MWAA reports {status}" + (f": {reason}" if reason else "")
    if status == GONE:
        return False, "EnvironmentGone", "the environment was deleted while the workflow waited for it"
    return False, None, ""


def complete(state: PauseStateTable, tasks: TaskReports, environment: str, status: str, reason: str = "") -> str | None:
    """Completes the wait parked for `environment` if `status` decides it; returns what it did."""
    parked = state.parked(environment)
    if parked is None:
        return None
    target, token = parked
    reached, error, cause = outcome(target, status, reason)
    if not reached and error is None:
        return None
    try:
        if reached:
            tasks.send_task_success(taskToken=token, output=json.dumps({"status": status, "target": target}))
        else:
            tasks.send_task_failure(taskToken=token, error=str(error), cause=cause[:32000])
    except ClientError as failure:
        # A duplicated event, or the workflow's timeout fired first: the token is spent.
        if failure.response.get("Error", {}).get("Code") not in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
            raise
    state.unpark(environment, token)
    return "reached" if reached else str(error)
