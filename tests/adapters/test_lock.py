"""The state table against moto: the lease lock (mutual exclusion, heartbeats, takeover of a crashed
holder measured on the waiter's own clock) and the registry of the endpoints this deployment created."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from localcloud import LocalCloud
from mwaa_control.adapters.lock import DynamoDbLeaseLock
from mwaa_control.endpoints.registry import DynamoDbEndpointRegistry
from mwaa_control.errors import LeaseLost, LockNotAcquired
from mwaa_control.models import EndpointRecord


class FakeMonotonic:
    """A waiter's own clock: sleeping advances it, so a lease of minutes costs nothing."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def lock(cloud: LocalCloud, **kwargs: Any) -> DynamoDbLeaseLock:
    return DynamoDbLeaseLock(cloud.client("dynamodb"), cloud.physical["LockTable"], **kwargs)


def record(cloud: LocalCloud, key: str = "env") -> dict[str, Any] | None:
    item = cloud.client("dynamodb").get_item(
        TableName=cloud.physical["LockTable"], Key={"pk": {"S": f"lock#{key}"}}, ConsistentRead=True
    )
    found: dict[str, Any] | None = item.get("Item")
    return found


def crashed_holder(cloud: LocalCloud, *, lease_seconds: int, rvn: str | None = "rvn-of-the-crashed") -> None:
    """The record a holder leaves behind when its process dies: nobody renews it any more."""
    item = {
        "pk": {"S": "lock#env"},
        "owner": {"S": "crashed-owner"},
        "lease_seconds": {"N": str(lease_seconds)},
        # A wall-clock TTL far ahead, as a holder with a fast clock would write: never a reason to wait.
        "expires_at": {"N": str(int(time.time()) + 86_400 * 365)},
    }
    if rvn is not None:
        item["rvn"] = {"S": rvn}
    cloud.client("dynamodb").put_item(TableName=cloud.physical["LockTable"], Item=item)


def test_only_one_holder_at_a_time(cloud: LocalCloud) -> None:
    inside, overlaps, entered = [0], [0], [0]
    failures: list[BaseException] = []
    guard = threading.Lock()

    def work() -> None:
        # A lease far longer than any stall of this shared machine: a takeover here could only be a
        # bug (CI once saw a 30 s lease taken over while six threads contended under heavy load).
        try:
            with lock(cloud, wait_seconds=120, lease_seconds=600).hold("env"):
                with guard:
                    inside[0] += 1
                    entered[0] += 1
                    overlaps[0] = max(overlaps[0], inside[0])
                time.sleep(0.02)
                with guard:
                    inside[0] -= 1
        except BaseException as error:  # a thread's exception would otherwise never fail the test
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert entered[0] == 6 and overlaps[0] == 1


def test_busy_lock_gives_up_after_the_wait(cloud: LocalCloud) -> None:
    with (
        lock(cloud).hold("env"),
        pytest.raises(LockNotAcquired, match="retried"),
        lock(cloud, wait_seconds=0.2).hold("env"),
    ):
        pass


def test_a_caller_whose_clock_runs_130_s_ahead_cannot_take_a_live_lease(cloud: LocalCloud) -> None:
    # Given a live lease of 120 s
    with lock(cloud, lease_seconds=120).hold("env"):
        # When a caller whose wall clock runs 130 s ahead tries to take it
        fast = lock(cloud, lease_seconds=120, wait_seconds=0.3, clock=lambda: time.time() + 130)
        # Then it waits and gives up: wall clocks decide nothing
        with pytest.raises(LockNotAcquired), fast.hold("env"):
            pass


def test_a_holder_working_longer_than_the_lease_keeps_it_and_a_second_invocation_waits(cloud: LocalCloud) -> None:
    # Given a holder with a 4 s lease (its heartbeat renews every 0.8 s; a loaded machine's stalls
    # stay well below a lease) that works for 9 s
    with lock(cloud, lease_seconds=4).hold("env") as lease:
        # When a second invocation waits for 9 s (more than two leases)
        with pytest.raises(LockNotAcquired), lock(cloud, lease_seconds=4, wait_seconds=9).hold("env"):
            pass
        # Then it never got in, and the holder still holds its lease
        lease.ensure()
    assert record(cloud) is None


def test_a_crashed_holder_is_taken_over_after_one_lease_on_the_waiters_own_clock(cloud: LocalCloud) -> None:
    crashed_holder(cloud, lease_seconds=60)
    clock = FakeMonotonic()
    # Not before a full lease has been observed...
    impatient = lock(cloud, lease_seconds=60, wait_seconds=55, monotonic=clock.monotonic, sleep=clock.sleep)
    with pytest.raises(LockNotAcquired), impatient.hold("env"):
        pass
    # ...and right after it (each waiter starts observing afresh)
    clock.now = 5000.0
    waiter = lock(cloud, lease_seconds=60, wait_seconds=90, monotonic=clock.monotonic, sleep=clock.sleep)
    with waiter.hold("env"):
        assert 60 <= clock.now - 5000.0 < 65
        held = record(cloud)
        assert held is not None and held["owner"]["S"] != "crashed-owner"


def test_a_record_of_the_previous_lock_format_is_taken_over_after_one_lease(cloud: LocalCloud) -> None:
    # Records written before the upgrade carry no record version number: the owner stands in for it.
    crashed_holder(cloud, lease_seconds=120, rvn=None)
    clock = FakeMonotonic()
    with lock(cloud, lease_seconds=120, wait_seconds=200, monotonic=clock.monotonic, sleep=clock.sleep).hold("env"):
        assert clock.now - 1000.0 >= 120


def test_a_holder_whose_lease_was_taken_over_knows_it_and_does_not_release_the_new_holders(
    cloud: LocalCloud,
) -> None:
    # Given a holder with a short lease, paused long enough for someone else to take the record
    with pytest.raises(LeaseLost), lock(cloud, lease_seconds=0.6).hold("env") as lease:
        crashed_holder(cloud, lease_seconds=60, rvn="someone-else")
        time.sleep(0.5)  # its heartbeat (every 0.2 s) finds the record changed
        # Then ensure() refuses before any destructive call, and leaving the block raises LeaseLost
        with pytest.raises(LeaseLost):
            lease.ensure()
    taken = record(cloud)
    assert taken is not None and taken["rvn"]["S"] == "someone-else"


def test_lease_records_carry_a_generous_ttl_and_a_version_number(cloud: LocalCloud) -> None:
    with lock(cloud, lease_seconds=120).hold("env"):
        held = record(cloud)
    assert held is not None and held["rvn"]["S"] and held["lease_seconds"]["N"] == "120"
    assert int(held["expires_at"]["N"]) >= time.time() + 120 + 86_400 - 5


# --- the endpoint registry (same table) -----------------------------------------------------------


def registry(cloud: LocalCloud) -> DynamoDbEndpointRegistry:
    return DynamoDbEndpointRegistry(cloud.client("dynamodb"), cloud.physical["LockTable"])


ENDPOINT = EndpointRecord(
    endpoint_id="vpce-0123456789abcdef0",
    environment_arn="arn:aws:airflow:us-east-1:123456789012:environment/etl",
    service_name="com.amazonaws.vpce.us-east-1.vpce-svc-0a1b2c3d4e5f60718",
    vpc_id="vpc-1",
    role="database",
    created_at=datetime(2026, 11, 21, 9, 5, tzinfo=UTC),
)


def test_registered_endpoints_are_found_and_never_expire(cloud: LocalCloud) -> None:
    registry(cloud).register(ENDPOINT)
    registry(cloud).register(ENDPOINT)  # an idempotent re-create registers the same endpoint again
    assert registry(cloud).lookup([ENDPOINT.endpoint_id, "vpce-unknown"]) == {ENDPOINT.endpoint_id: ENDPOINT}
    raw = cloud.client("dynamodb").get_item(
        TableName=cloud.physical["LockTable"], Key={"pk": {"S": f"endpoint#{ENDPOINT.endpoint_id}"}}
    )["Item"]
    assert "expires_at" not in raw  # TTL never removes what we created


def test_forgotten_endpoints_are_no_longer_registered(cloud: LocalCloud) -> None:
    registry(cloud).register(ENDPOINT)
    registry(cloud).forget([ENDPOINT.endpoint_id, "vpce-unknown"])
    assert registry(cloud).lookup([ENDPOINT.endpoint_id]) == {}


# --- review findings: the heartbeat survives transport errors, ensure() refuses only when unsafe ---


class FlakyDynamoDb:
    """The real client, except that the next ``failures`` renewals raise ``error``."""

    def __init__(self, real: Any, error: Exception, failures: int = 1) -> None:
        self.real, self.error, self.failures = real, error, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def update_item(self, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise self.error
        return self.real.update_item(**kwargs)


def test_the_heartbeat_survives_a_transport_error_and_keeps_the_lease(cloud: LocalCloud) -> None:
    from botocore.exceptions import EndpointConnectionError

    flaky = FlakyDynamoDb(cloud.client("dynamodb"), EndpointConnectionError(endpoint_url="https://dynamodb"))
    # A lease long enough that a loaded machine's stalls do not end it (beats every 2 s)
    held = DynamoDbLeaseLock(flaky, cloud.physical["LockTable"], lease_seconds=10, wait_seconds=5)
    with held.hold("env") as lease:
        # The first beat fails on the network; DynamoDB answers the next one
        acquired = lease._renewed_at
        deadline = time.monotonic() + 60
        while (flaky.failures or lease._renewed_at == acquired) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease._renewed_at != acquired, "no beat renewed the lease after the transport error"
        lease.ensure()
        assert flaky.failures == 0 and lease._heartbeat is not None and lease._heartbeat.is_alive()
    assert record(cloud) is None


def test_a_lease_not_renewed_for_most_of_its_duration_is_still_ours_until_lease_minus_margin(
    cloud: LocalCloud,
) -> None:
    # Given a 60 s lease whose renewals do not get through (its heartbeat has nothing to say in time)
    clock = FakeMonotonic()
    held = lock(cloud, lease_seconds=60, wait_seconds=90, monotonic=clock.monotonic, sleep=clock.sleep)
    with held.hold("env") as lease:
        # When 42 s pass without a renewal (more than two missed beats of the old lease/3 schedule)
        clock.now += 42
        # Then it is still certainly ours: no waiter can take it over before 60 s, and the default
        # margin (a quarter of the lease) covers the longest destructive call
        lease.ensure()
        # But not once the silence reaches the lease minus the margin
        clock.now += 4
        with pytest.raises(LeaseLost, match="could not be renewed"):
            lease.ensure()


def test_a_margin_that_leaves_no_room_for_a_missed_beat_is_refused(cloud: LocalCloud) -> None:
    with pytest.raises(ValueError, match="margin"):
        lock(cloud, lease_seconds=30, safety_margin_seconds=25)


# --- review findings: records of the previous lock format ----------------------------------------


def previous_format_holder(cloud: LocalCloud, *, expires_at: float) -> None:
    """A record the previous code wrote: owner and a wall-clock expiry (its 120 s lease), nothing else."""
    cloud.client("dynamodb").put_item(
        TableName=cloud.physical["LockTable"],
        Item={"pk": {"S": "lock#env"}, "owner": {"S": "old-owner"}, "expires_at": {"N": str(int(expires_at))}},
    )


def test_a_previous_format_record_is_not_taken_over_before_its_old_120_s_lease(cloud: LocalCloud) -> None:
    # Given a live holder of the previous code (its lease ends in 120 s on its terms)
    previous_format_holder(cloud, expires_at=time.time() + 120)
    clock = FakeMonotonic()
    # When a new invocation with a 30 s lease waits 100 s, it does not take it over
    waiter = lock(cloud, lease_seconds=30, wait_seconds=100, monotonic=clock.monotonic, sleep=clock.sleep)
    with pytest.raises(LockNotAcquired), waiter.hold("env"):
        pass
    still = record(cloud)
    assert still is not None and still["owner"]["S"] == "old-owner"


def test_a_previous_format_record_past_its_own_expiry_is_taken_over_at_once(cloud: LocalCloud) -> None:
    previous_format_holder(cloud, expires_at=time.time() - 5)
    clock = FakeMonotonic()
    waiter = lock(cloud, lease_seconds=30, wait_seconds=5, monotonic=clock.monotonic, sleep=clock.sleep)
    with waiter.hold("env"):
        held = record(cloud)
        assert held is not None and held["owner"]["S"] != "old-owner"


# --- review findings: intents written before CreateVpcEndpoint ------------------------------------


def test_intents_are_recorded_under_the_endpoint_prefix_and_forgotten(cloud: LocalCloud) -> None:
    from mwaa_control.models import EndpointIntent

    intent = EndpointIntent(
        client_token="f" * 64,
        environment_arn=ENDPOINT.environment_arn,
        service_name=ENDPOINT.service_name,
        vpc_id="vpc-1",
        role="database",
        created_at=datetime(2026, 11, 21, 9, 4, tzinfo=UTC),
    )
    registry(cloud).record_intent(intent)
    # A retry writes it again later: the first intent stays, or it would no longer vouch for the
    # endpoint the first attempt created
    registry(cloud).record_intent(intent.model_copy(update={"created_at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC)}))
    assert registry(cloud).lookup_intents([intent.client_token, "unknown"]) == {intent.client_token: intent}
    # Under endpoint#: the functions' IAM (dynamodb:LeadingKeys) needs no new prefix; never expires
    raw = cloud.client("dynamodb").get_item(
        TableName=cloud.physical["LockTable"], Key={"pk": {"S": f"endpoint#intent#{intent.client_token}"}}
    )["Item"]
    assert "expires_at" not in raw
    assert registry(cloud).lookup([f"intent#{intent.client_token}"]) == {}
    registry(cloud).forget_intents([intent.client_token])
    assert registry(cloud).lookup_intents([intent.client_token]) == {}
