"""The fallback check of a wait (one GetEnvironment after the event-driven wait timed out): it loops
the workflow back while MWAA is still working, and ends it once the wait has lasted too long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from mwaa_control.pause.models import CheckStatus
from mwaa_control.pause.service import LifecycleService, LifecycleSettings, WaitTooLong

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:pause:p-1"


class StuckMwaa:
    """GetEnvironment of one environment that stays in one status (the rest is never called)."""

    def __init__(self, status: str) -> None:
        self.status = status

    def get_environment(self, Name: str) -> dict[str, Any]:
        return {"Environment": {"Name": Name, "Status": self.status}}


def service(status: str) -> LifecycleService:
    unused = cast(Any, None)
    return LifecycleService(
        mwaa=StuckMwaa(status),
        state=unused,
        store=unused,
        keys=unused,
        tasks=unused,
        settings=LifecycleSettings(bucket="b", kms_key_id="k"),
        managed_endpoints=unused,
        set_paused=unused,
        clock=lambda: NOW,
    )


def check(target: str, hours_ago: float) -> CheckStatus:
    return CheckStatus.model_validate(
        {
            "action": "check_status",
            "environment": "etl",
            "execution": EXECUTION,
            "target": target,
            "started_at": NOW - timedelta(hours=hours_ago),
        }
    )


def test_a_wait_that_is_still_within_its_limit_loops_back() -> None:
    assert not service("DELETING").check_status(check("DELETED", 5)).reached
    assert not service("PENDING").check_status(check("AVAILABLE", 79)).reached


def test_a_wait_past_its_limit_ends_in_the_failure_path() -> None:
    with pytest.raises(WaitTooLong, match="still UNAVAILABLE, not DELETED"):
        service("UNAVAILABLE").check_status(check("DELETED", 7))
    with pytest.raises(WaitTooLong, match="still PENDING, not AVAILABLE"):
        service("PENDING").check_status(check("AVAILABLE", 81))


def test_a_reached_status_is_reached_however_long_it_took() -> None:
    assert service("AVAILABLE").check_status(check("AVAILABLE", 200)).reached
