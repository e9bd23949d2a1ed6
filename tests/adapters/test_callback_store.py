"""The callback-store and Step Functions adapters against moto: the record's shape (the key IAM's
dynamodb:LeadingKeys condition matches, the numeric TTL attribute), strongly consistent reads, and
errors that name the operation and code but never the task token."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import pytest

from localcloud import LocalCloud
from mwaa_control.airflow import callback
from mwaa_control.airflow.callback_store import (
    DynamoDbCallbackStore,
    StepFunctionsTaskReporter,
    callback_store,
    step_functions_reporter,
)

TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAT0k3n-" + "s" * 300


def store(cloud: LocalCloud) -> DynamoDbCallbackStore:
    return callback_store(cloud.physical["LockTable"], region=cloud.region)


def test_records_round_trip_under_the_callback_key_with_a_numeric_ttl(cloud: LocalCloud) -> None:
    # Given a reference registered by the trigger
    callbacks = store(cloud)
    reference = callback.reference_for(TOKEN, environment="etl", table=callbacks.table, region=cloud.region)
    callback.register(callbacks, TOKEN, reference, now=time.time())
    # Then the item is keyed callback#<environment>#<id> and expires through the table's TTL attribute
    item = cloud.client("dynamodb").get_item(
        TableName=callbacks.table, Key={"pk": {"S": f"callback#etl#{reference.callback_id}"}}
    )["Item"]
    assert item["task_token"] == {"S": TOKEN}
    assert int(item["expires_at"]["N"]) > time.time() + 12 * 3600
    # And the DAG side reads it back and deletes it
    record = callbacks.get(reference.key)
    assert record is not None and record.task_token == TOKEN
    callbacks.delete(reference.key)
    assert callbacks.get(reference.key) is None
    callbacks.delete(reference.key)  # deleting twice is harmless (a retried report)


def test_a_retried_registration_is_idempotent_a_different_token_under_the_same_key_is_refused(
    cloud: LocalCloud,
) -> None:
    callbacks = store(cloud)
    reference = callback.reference_for(TOKEN, environment="etl", table=callbacks.table, region=cloud.region)
    callback.register(callbacks, TOKEN, reference, now=time.time())
    callback.register(callbacks, TOKEN, reference, now=time.time())
    with pytest.raises(callback.CallbackStoreFailed, match="different task token") as raised:
        callbacks.put(reference.key, callback.CallbackRecord(task_token="other-token", expires_at=1))
    assert TOKEN[:40] not in "".join(traceback.format_exception(raised.value))
    assert callbacks.get(reference.key).task_token == TOKEN  # type: ignore[union-attr]


def test_store_failures_are_typed_and_never_carry_the_token(cloud: LocalCloud) -> None:
    missing = DynamoDbCallbackStore(cloud.client("dynamodb"), "no-such-table")
    with pytest.raises(callback.CallbackStoreFailed, match="PutItem on no-such-table failed") as raised:
        missing.put("callback#etl#" + "a" * 32, callback.CallbackRecord(task_token=TOKEN, expires_at=1))
    assert TOKEN[:40] not in "".join(traceback.format_exception(raised.value))
    with pytest.raises(callback.CallbackStoreFailed, match="GetItem"):
        missing.get("callback#etl#" + "a" * 32)


def test_step_functions_refusals_are_typed_and_never_carry_the_token(cloud: LocalCloud) -> None:
    reporter = step_functions_reporter(region=cloud.region)
    assert isinstance(reporter, StepFunctionsTaskReporter)
    sends: list[Callable[[], None]] = [
        lambda: reporter.send_success(TOKEN, "{}"),
        lambda: reporter.send_failure(TOKEN, "E", "cause"),
        lambda: reporter.send_heartbeat(TOKEN),
    ]
    for send in sends:
        with pytest.raises(callback.CallbackRejected, match="Step Functions refused SendTask") as raised:
            send()
        assert TOKEN[:40] not in "".join(traceback.format_exception(raised.value))


def test_a_dag_resolves_its_reference_from_dynamodb_with_the_default_adapters(cloud: LocalCloud) -> None:
    # Given the trigger registered a token (the task itself is not waiting: Step Functions refuses)
    callbacks = store(cloud)
    reference = callback.reference_for(TOKEN, environment="etl", table=callbacks.table, region=cloud.region)
    callback.register(callbacks, TOKEN, reference, now=time.time())
    reporter = callback.from_conf(callback.attach({}, reference))
    assert reporter is not None
    # When the DAG reports, the token was resolved (Step Functions saw it and refused it), and the
    # record is kept because the report was not accepted
    with pytest.raises(callback.CallbackRejected):
        reporter.success({"rows": 1})
    assert callbacks.get(reference.key) is not None
