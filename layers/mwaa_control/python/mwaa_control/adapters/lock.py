"""A lease lock in DynamoDB, so concurrent or redelivered events for one environment cannot
create two endpoints for the same service (EC2's ClientToken guards this too on AWS, but it is
scoped to 24 hours and to identical parameters, and local emulators ignore it).

The scheme is the DynamoDB Lock Client's, which needs no agreement between callers' clocks: the
record carries its owner, a record version number (rvn) and the lease duration. The holder renews
the lease from a heartbeat thread (a new rvn every lease/5, conditional on still being the owner),
so work may take longer than the lease. A waiter remembers the rvn it finds and takes the record
over only after seeing that SAME rvn for a full lease on its OWN monotonic clock, with a put
conditional on that rvn: a live holder always changes it sooner. ``expires_at`` is only for the
table's TTL to collect records of crashed holders, a day after any lease could matter.

A holder that could not renew (someone took over, or DynamoDB did not answer for too long) learns
it from ``Lease.ensure()``, called before every destructive call, and from LeaseLost on exit.
``ensure()`` passes until ``lease - safety margin`` after the last renewal that got through: a
waiter cannot take over before one full lease after it, and the margin is sized (settings) to
outlast the longest destructive call. A failed renewal of any kind (throttling, a timeout, a lost
connection) is logged and retried at the next beat; the heartbeat only stops when told to or when
someone else holds the record.

Records of the previous lock format (owner and a wall-clock ``expires_at`` of a 120 s lease; no
rvn, no lease_seconds) are taken over on that format's terms: once their ``expires_at`` has passed,
or after watching them unchanged for the old 120 s.

Written by hand: Powertools Idempotency deduplicates identical events, not different events
(or the polling fallback) racing on the same environment.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.errors import LeaseLost, LockNotAcquired
from mwaa_control.observability import logger

# Records of crashed holders stay this long past their lease before TTL collects them.
TTL_MARGIN_SECONDS = 86_400
# The lease is renewed this many times per lease duration.
HEARTBEATS_PER_LEASE = 5
# Default safety margin (share of the lease) when the caller does not size one for its calls.
DEFAULT_MARGIN_SHARE = 1 / 4
# The previous lock format's fixed lease (records without lease_seconds).
PREVIOUS_FORMAT_LEASE_SECONDS = 120.0


def _conditional_check_failed(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class _HeldLease:
    """One hold of a key: the owner's current rvn, the heartbeat thread, and whether it was lost."""

    def __init__(self, key: str, owner: str, rvn: str, renewed_at: float, lock: DynamoDbLeaseLock) -> None:
        self.key = key
        self.owner = owner
        self.rvn = rvn
        self._renewed_at = renewed_at
        self._lock = lock
        self._lost: str | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def ensure(self) -> None:
        with self._guard:
            lost, renewed_at = self._lost, self._renewed_at
        if lost:
            raise LeaseLost(f"lease on {self.key} was lost ({lost}); stopped before changing anything")
        silent = self._lock.monotonic() - renewed_at
        if silent >= self._lock.lease_seconds - self._lock.safety_margin_seconds:
            raise LeaseLost(
                f"lease on {self.key} could not be renewed for {silent:.1f}s of a {self._lock.lease_seconds}s "
                f"lease (margin {self._lock.safety_margin_seconds:.1f}s); another invocation may hold it soon"
            )

    def renewed(self, rvn: str, sent_at: float) -> None:
        with self._guard:
            self.rvn, self._renewed_at = rvn, sent_at

    def lose(self, why: str) -> None:
        with self._guard:
            self._lost = why

    @property
    def lost(self) -> str | None:
        with self._guard:
            return self._lost

    def start_heartbeat(self, beat: Callable[[_HeldLease], None], every: float) -> None:
        def run() -> None:
            while not self._stop.wait(every):
                try:
                    beat(self)
                except Exception as error:
                    # A network error, a timeout or a bug in one beat must not end the heartbeat:
                    # nothing else renews the lease, and ensure() refuses once it is unsafe.
                    logger.warning(
                        "lease renewal failed", extra={"lock_key": self.key, "error": f"{type(error).__name__}"}
                    )
                if self.lost:
                    return

        # Copy the context so the renewals are made as (and logged for) the invocation that holds.
        context = contextvars.copy_context()
        self._heartbeat = threading.Thread(target=context.run, args=(run,), name=f"lease {self.key}", daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()


class DynamoDbLeaseLock:
    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        lease_seconds: float = 30,
        wait_seconds: float = 60.0,
        safety_margin_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``clock`` (wall time) stamps ``expires_at`` for TTL and judges records of the previous
        format; every other decision uses ``monotonic``. ``safety_margin_seconds``: ensure() refuses
        once less than this is left of the lease (the longest destructive call must fit in it)."""
        margin = lease_seconds * DEFAULT_MARGIN_SHARE if safety_margin_seconds is None else safety_margin_seconds
        if margin < 0 or lease_seconds - margin <= 2 * lease_seconds / HEARTBEATS_PER_LEASE:
            raise ValueError(
                f"a safety margin of {margin}s leaves too little of a {lease_seconds}s lease: ensure() would "
                "refuse after fewer than two missed renewals"
            )
        self._dynamodb = dynamodb
        self._table = table_name
        self.lease_seconds = lease_seconds
        self.safety_margin_seconds = margin
        self._wait = wait_seconds
        self._clock = clock
        self.monotonic = monotonic
        self._sleep = sleep

    # --- DynamoDB ---------------------------------------------------------------------------------
    def _key(self, key: str) -> dict[str, Any]:
        return {"pk": {"S": f"lock#{key}"}}

    def _ttl(self) -> str:
        return str(int(self._clock()) + math.ceil(self.lease_seconds) + TTL_MARGIN_SECONDS)

    def _read(self, key: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._dynamodb.get_item(
            TableName=self._table, Key=self._key(key), ConsistentRead=True
        ).get("Item")
        return item

    def _put(self, key: str, owner: str, condition: str, values: dict[str, Any] | None = None) -> str | None:
        """Write a fresh record of ours if the condition holds; its rvn, or None if it did not."""
        rvn = uuid.uuid4().hex
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    **self._key(key),
                    "owner": {"S": owner},
                    "rvn": {"S": rvn},
                    "lease_seconds": {"N": str(self.lease_seconds)},
                    "expires_at": {"N": self._ttl()},
                },
                ConditionExpression=condition,
                **({"ExpressionAttributeNames": {"#owner": "owner"}} if "#owner" in condition else {}),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as error:
            if _conditional_check_failed(error):
                return None
            raise
        return rvn

    def _take_over(self, key: str, owner: str, seen: dict[str, Any]) -> str | None:
        """Replace exactly the record version we watched for a full lease, if it is still there."""
        if "rvn" in seen:
            return self._put(key, owner, "rvn = :seen", {":seen": seen["rvn"]})
        # A record of the previous lock format (no rvn): its owner stands in for the version.
        return self._put(key, owner, "attribute_not_exists(rvn) AND #owner = :seen", {":seen": seen["owner"]})

    def _renew(self, lease: _HeldLease) -> None:
        rvn, sent_at = uuid.uuid4().hex, self.monotonic()
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key=self._key(lease.key),
                UpdateExpression="SET rvn = :rvn, expires_at = :ttl",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    ":rvn": {"S": rvn},
                    ":ttl": {"N": self._ttl()},
                    ":owner": {"S": lease.owner},
                },
            )
        except ClientError as error:
            if _conditional_check_failed(error):
                logger.warning("lease taken over by another invocation", extra={"lock_key": lease.key})
                lease.lose("another invocation took it over")
                return
            # Transient: try again at the next beat; ensure() refuses once the lease is unsafe.
            logger.warning("lease renewal failed", extra={"lock_key": lease.key, "error": str(error)})
            return
        # Any other exception (EndpointConnectionError, ReadTimeoutError, ...) propagates to the
        # heartbeat loop, which logs it and beats again.
        lease.renewed(rvn, sent_at)

    def _release(self, lease: _HeldLease) -> None:
        try:
            self._dynamodb.delete_item(
                TableName=self._table,
                Key=self._key(lease.key),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": lease.owner}},
            )
        except ClientError as error:
            if not _conditional_check_failed(error):
                raise
            # Someone else holds it now: theirs to release.
            lease.lose("another invocation took it over")

    # --- acquiring ------------------------------------------------------------------------------
    def _acquire(self, key: str) -> _HeldLease:
        owner = uuid.uuid4().hex
        deadline = self.monotonic() + self._wait
        watched: tuple[Any, Any] | None = None
        watched_since = 0.0
        delay = 0.05
        sent_at = self.monotonic()
        rvn = self._put(key, owner, "attribute_not_exists(pk)")
        while rvn is None:
            current = self._read(key)
            sent_at = self.monotonic()
            if current is None:
                rvn = self._put(key, owner, "attribute_not_exists(pk)")
                continue
            version = (current.get("rvn"), current.get("owner"))
            if version != watched:
                watched, watched_since = version, sent_at
            if self._previous_format_expired(current) or sent_at - watched_since >= self._lease_of(current):
                rvn = self._take_over(key, owner, current)
                if rvn is not None:
                    logger.warning("took over the lease of a holder that stopped renewing", extra={"lock_key": key})
                    break
                watched = None  # it changed under us: watch the new version from the start
            if self.monotonic() >= deadline:
                raise LockNotAcquired(f"another invocation is working on {key}; the event will be retried")
            self._sleep(min(delay, max(deadline - self.monotonic(), 0.0)))
            delay = min(delay * 2, 1.0)
        return _HeldLease(key, owner, rvn, sent_at, self)

    def _lease_of(self, record: dict[str, Any]) -> float:
        """How long to watch the record unchanged before taking it over: its own lease; for a record
        of the previous format (no lease_seconds), that format's 120 s (or ours, if longer)."""
        if "lease_seconds" in record:
            return float(record["lease_seconds"]["N"])
        return max(PREVIOUS_FORMAT_LEASE_SECONDS, float(self.lease_seconds))

    def _previous_format_expired(self, record: dict[str, Any]) -> bool:
        """A record of the previous format is free once its wall-clock expiry passed: that format's
        own rule (its holders stopped at expires_at without renewing)."""
        if "lease_seconds" in record or "rvn" in record or "expires_at" not in record:
            return False
        return float(record["expires_at"]["N"]) < self._clock()

    @contextmanager
    def hold(self, key: str) -> Iterator[_HeldLease]:
        lease = self._acquire(key)
        lease.start_heartbeat(self._renew, self.lease_seconds / HEARTBEATS_PER_LEASE)
        try:
            yield lease
        finally:
            lease.stop_heartbeat()
            if lease.lost is None:
                self._release(lease)
            if lease.lost is not None:
                logger.warning("lease was lost while held", extra={"lock_key": key, "reason": lease.lost})
        if lease.lost is not None:
            raise LeaseLost(f"lease on {key} was lost while held ({lease.lost}); the work may be incomplete")
