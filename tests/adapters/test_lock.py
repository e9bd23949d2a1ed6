"""The DynamoDB lease lock against moto: mutual exclusion, expiry, and bounded waiting."""

from __future__ import annotations

import threading
import time

import pytest

from localcloud import LocalCloud
from mwaa_control.adapters.lock import DynamoDbLeaseLock
from mwaa_control.errors import LockNotAcquired


def lock(cloud: LocalCloud, **kwargs: float) -> DynamoDbLeaseLock:
    return DynamoDbLeaseLock(cloud.client("dynamodb"), cloud.physical["LockTable"], **kwargs)  # type: ignore[arg-type]


def test_only_one_holder_at_a_time(cloud: LocalCloud) -> None:
    inside, overlaps = [0], [0]
    guard = threading.Lock()

    def work() -> None:
        with lock(cloud, wait_seconds=30).hold("env"):
            with guard:
                inside[0] += 1
                overlaps[0] = max(overlaps[0], inside[0])
            time.sleep(0.02)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1


def test_busy_lock_gives_up_after_the_wait(cloud: LocalCloud) -> None:
    with (
        lock(cloud).hold("env"),
        pytest.raises(LockNotAcquired, match="retried"),
        lock(cloud, wait_seconds=0.2).hold("env"),
    ):
        pass


def test_expired_lease_of_a_crashed_holder_is_taken_over(cloud: LocalCloud) -> None:
    now = [1000.0]
    crashed = lock(cloud, lease_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    crashed._try_acquire("env", "crashed-owner")
    now[0] += 11
    with lock(cloud, lease_seconds=10, wait_seconds=0, clock=lambda: now[0]).hold("env"):  # type: ignore[arg-type]
        pass


def test_release_is_by_owner_only(cloud: LocalCloud) -> None:
    first = lock(cloud)
    assert first._try_acquire("env", "a")
    first._release("env", "b")
    assert not first._try_acquire("env", "c")
