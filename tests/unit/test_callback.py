"""The callback contract without AWS: the trigger stores the task token in the callback store before
it triggers, the run's conf carries only a reference, and the DAG side resolves the reference,
reports to Step Functions and forgets the record. Legacy conf blocks with a raw token still work."""

from __future__ import annotations

import json
import logging
import time
import traceback
from types import SimpleNamespace
from typing import Any

import pytest

from mwaa_control.airflow import callback
from mwaa_control.airflow.dag_runs import TriggerDagRequest, run_id_for, trigger_for_task
from mwaa_control.airflow.errors import AirflowError
from tests.unit.airflow_fakes import FakeCallbackStore, FakeEnvironment, FakeStepFunctions, airflow_client

TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAT0k3n-" + "x" * 600  # Step Functions tokens are long opaque strings
NOW = float(int(time.time()))
REGION = "eu-west-1"


def request(**overrides: Any) -> TriggerDagRequest:
    fields: dict[str, Any] = {"environment": "etl", "dag_id": "hello", "conf": {"day": "2026-11-21"}}
    fields["task_token"] = TOKEN
    fields.update(overrides)
    return TriggerDagRequest.model_validate(fields)


def trigger(
    env: FakeEnvironment, store: FakeCallbackStore, req: TriggerDagRequest | None = None
) -> tuple[str, dict[str, Any]]:
    result = trigger_for_task(airflow_client(env), req or request(), callbacks=store, region=REGION, clock=lambda: NOW)
    [conf] = [e[1]["conf"] for e in env.events if e[0] == "trigger"][-1:]
    return result.run_id, conf


def test_trigger_stores_the_token_before_triggering_and_the_conf_carries_only_a_reference() -> None:
    # Given an environment and an empty callback store
    events: list[tuple[str, Any]] = []
    env, store = FakeEnvironment(events), FakeCallbackStore(events)
    # When a waiting task triggers its DAG
    run_id, conf = trigger(env, store)
    # Then the conf holds the caller's values and a reference, and no trace of the token
    block = conf[callback.CONF_KEY]
    assert set(block) == {"callback_id", "environment", "table", "region"}
    assert block["environment"] == "etl" and block["table"] == store.table and block["region"] == REGION
    assert {k: v for k, v in conf.items() if k != callback.CONF_KEY} == {"day": "2026-11-21"}
    assert TOKEN not in json.dumps(conf) and TOKEN[:40] not in json.dumps(conf)
    # And the token was stored under callback#<environment>#<id>, with an expiry, before the trigger
    key = f"callback#etl#{block['callback_id']}"
    assert store.records[key].task_token == TOKEN
    assert store.records[key].expires_at == int(NOW) + callback.RECORD_LIFETIME_SECONDS
    assert callback.RECORD_LIFETIME_SECONDS >= 12 * 3600  # outlives the task's 12 h timeout
    order = [e[0] for e in events if e[0] in ("put", "trigger")]
    assert order == ["put", "trigger"]
    assert run_id == run_id_for(TOKEN)


def test_callback_id_is_deterministic_per_token_hides_it_and_differs_from_the_run_id() -> None:
    first, again, other = (callback.callback_id_for(t) for t in (TOKEN, TOKEN, TOKEN + "y"))
    assert first == again != other
    assert TOKEN[:16] not in first and len(first) >= 32
    assert first[:24] != run_id_for(TOKEN).removeprefix("mwaactl__")  # its own hash domain


def test_retried_trigger_finds_the_same_run_and_the_same_record() -> None:
    # Given a first attempt that triggered the run (its answer was lost)
    events: list[tuple[str, Any]] = []
    env, store = FakeEnvironment(events), FakeCallbackStore(events)
    run_id, conf = trigger(env, store)
    # When the task retries with the same token
    retried_run_id, retried_conf = trigger(env, store)
    # Then it lands on the same run and the same record, and Airflow has one run
    assert retried_run_id == run_id and retried_conf == conf
    assert len(store.records) == 1 and len(env.runs) == 1


def test_a_conf_using_the_reserved_key_is_refused_and_nothing_is_stored_or_triggered() -> None:
    events: list[tuple[str, Any]] = []
    env, store = FakeEnvironment(events), FakeCallbackStore(events)
    with pytest.raises(ValueError, match="reserved"):
        trigger(env, store, request(conf={callback.CONF_KEY: {"callback_id": "forged"}}))
    assert store.records == {} and env.runs == {}


def test_an_unsendable_conf_is_refused_before_the_token_is_stored() -> None:
    events: list[tuple[str, Any]] = []
    env, store = FakeEnvironment(events), FakeCallbackStore(events)
    with pytest.raises(AirflowError, match="limit"):
        trigger(env, store, request(conf={"blob": "x" * 300_000}))
    assert store.records == {} and env.runs == {}


def test_the_token_never_appears_in_a_trigger_error() -> None:
    # Given Airflow refuses the trigger and echoes the conf it was given in its error (as a DAG's
    # params validation does), and no run exists to fall back on
    events: list[tuple[str, Any]] = []
    env, store = FakeEnvironment(events), FakeCallbackStore(events)
    env.refuse_triggers = True
    original_post = env.post

    def echoing_post(url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> Any:
        env.trigger_stderr = f"Error: ParamValidationError: invalid conf {body.decode()}"
        return original_post(url, headers=headers, body=body, timeout=timeout)

    env.post = echoing_post  # type: ignore[method-assign]
    # When the trigger fails
    with pytest.raises(AirflowError) as raised:
        trigger(env, store)
    # Then neither the error nor anything chained to it carries the token
    text = "".join(traceback.format_exception(raised.value))
    assert "ParamValidationError" in text  # Airflow's reason reaches the operator
    assert TOKEN[:40] not in text


def registered(store: FakeCallbackStore, token: str = TOKEN) -> dict[str, Any]:
    reference = callback.reference_for(token, environment="etl", table=store.table, region=REGION)
    callback.register(store, token, reference, now=time.time())
    return callback.attach({"day": "2026-11-21"}, reference)


def test_the_dag_resolves_the_reference_reports_success_and_forgets_the_record() -> None:
    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    conf = registered(store)
    reporter = callback.from_conf(conf, store=store, reporter=sfn)
    assert reporter is not None and reporter.region == REGION
    reporter.success({"rows": 42})
    sent = [e for e in events if e[0] == "send_success"]
    assert sent == [("send_success", (TOKEN, '{"rows": 42}'))]
    assert store.records == {}
    # The record is deleted only after Step Functions accepted the report
    assert [e[0] for e in events if e[0] in ("send_success", "delete")] == ["send_success", "delete"]


def test_failure_is_reported_and_forgets_the_record_heartbeats_keep_it() -> None:
    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    reporter = callback.from_conf(registered(store), store=store, reporter=sfn)
    assert reporter is not None
    reporter.heartbeat()
    reporter.heartbeat()
    assert len(store.records) == 1
    reporter.failure("DagRunFailed", "x" * 40_000)
    [(_, (token, error, cause))] = [e for e in events if e[0] == "send_failure"]
    assert (token, error, len(cause)) == (TOKEN, "DagRunFailed", 32_768)
    assert store.records == {}


def test_the_record_stays_when_step_functions_refuses_the_report() -> None:
    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    reporter = callback.from_conf(registered(store), store=store, reporter=sfn)
    assert reporter is not None
    sfn.refuse = callback.CallbackRejected("Step Functions refused SendTaskSuccess: ThrottlingException")
    with pytest.raises(callback.CallbackRejected):
        reporter.success({})
    assert len(store.records) == 1  # a retry of the Airflow task can still report
    sfn.refuse = None
    reporter.success({})
    assert store.records == {}


def test_a_failed_delete_after_an_accepted_report_does_not_fail_the_dag(caplog: pytest.LogCaptureFixture) -> None:
    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    reporter = callback.from_conf(registered(store), store=store, reporter=sfn)
    assert reporter is not None
    store.fail_delete = True
    caplog.set_level(logging.DEBUG)
    reporter.success({})  # the workflow has moved on: the record's TTL removes it
    assert "not deleted" in caplog.text and TOKEN[:40] not in caplog.text


def test_a_missing_or_expired_record_is_a_typed_error() -> None:
    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    conf = registered(store)
    [key] = store.records
    store.records[key] = callback.CallbackRecord(task_token=TOKEN, expires_at=int(time.time()) - 1)
    reporter = callback.from_conf(conf, store=store, reporter=sfn)
    assert reporter is not None
    with pytest.raises(callback.CallbackNotFound, match="expired"):
        reporter.success({})
    store.records.clear()
    with pytest.raises(callback.CallbackNotFound, match="no callback record"):
        reporter.heartbeat()
    assert not [e for e in events if e[0].startswith("send_")]


def test_a_legacy_block_with_a_raw_token_still_reports_without_the_store() -> None:
    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    legacy = {"x": 1, callback.CONF_KEY: {"task_token": TOKEN, "region": REGION}}
    reporter = callback.from_conf(legacy, store=store, reporter=sfn)
    assert reporter is not None and reporter.region == REGION
    reporter.success({"ok": True})
    reporter.failure("E", "c")
    assert [e[0] for e in events] == ["send_success", "send_failure"]
    assert events[0][1][0] == TOKEN


@pytest.mark.parametrize(
    "block",
    [
        {"task_token": TOKEN + "z" * 3000, "region": REGION},
        {"callback_id": "not-hex", "environment": "etl", "table": "t" * 3, "region": REGION},
        {"callback_id": "a" * 32, "environment": "etl#other", "table": "tab", "region": REGION},
        {"callback_id": "a" * 32, "environment": "etl", "table": "tab", "region": REGION, "task_token": TOKEN},
    ],
)
def test_a_malformed_block_is_a_typed_error_that_never_echoes_the_token(block: dict[str, Any]) -> None:
    with pytest.raises(callback.InvalidCallbackBlock) as raised:
        callback.from_conf({callback.CONF_KEY: block})
    assert TOKEN[:40] not in "".join(traceback.format_exception(raised.value))


def test_runs_not_triggered_by_the_control_plane_have_no_callback() -> None:
    assert callback.from_conf(None) is None
    assert callback.from_conf({"day": 1}) is None


def test_airflow_callbacks_report_through_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the adapters a worker would build, replaced by fakes
    from mwaa_control.airflow import callback_store as adapters

    events: list[tuple[str, Any]] = []
    store, sfn = FakeCallbackStore(events), FakeStepFunctions(events)
    built: list[tuple[str, str]] = []

    def store_for(table: str, *, region: str) -> FakeCallbackStore:
        built.append((table, region))
        return store

    monkeypatch.setattr(adapters, "callback_store", store_for)
    monkeypatch.setattr(adapters, "step_functions_reporter", lambda *, region: sfn)
    conf = registered(store)
    run = SimpleNamespace(dag_id="hello", run_id="mwaactl__1", conf=conf)
    # When Airflow calls the success and failure callbacks
    callback.report_success({"dag_run": run})
    registered(store)
    callback.report_failure({"dag_run": run, "reason": "task failed"})
    # Then both reached Step Functions with the stored token, through the table the conf names
    assert built == [(store.table, REGION)] * 2
    [(_, (token, output))] = [e for e in events if e[0] == "send_success"]
    assert token == TOKEN and json.loads(output)["state"] == "success"
    [(_, (token, error, cause))] = [e for e in events if e[0] == "send_failure"]
    assert (token, error) == (TOKEN, "DagRunFailed") and "task failed" in cause


def test_the_token_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[tuple[str, Any]] = []
    env, store, sfn = FakeEnvironment(events), FakeCallbackStore(events), FakeStepFunctions(events)
    _, conf = trigger(env, store)
    reporter = callback.from_conf(conf, store=store, reporter=sfn)
    assert reporter is not None
    reporter.heartbeat()
    reporter.success({})
    assert TOKEN[:40] not in caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert TOKEN[:40] not in repr(reporter)
