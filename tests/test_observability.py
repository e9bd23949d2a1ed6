"""Every metric the functions emit is on the operations dashboard or behind an alarm, and every
alarm and dashboard metric of our namespace is one the code emits: a renamed metric cannot leave a
silent alarm or an empty graph behind."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from typing import Any, get_args

from localcloud.template import ROOT, load_template, resources_of_type
from mwaa_control.models import EndpointReconciliation
from mwaa_control.observability import METRICS_NAMESPACE

# Metric names built at run time, and every value they can take.
DYNAMIC = {"Endpoints_": [str(o) for o in get_args(EndpointReconciliation.model_fields["outcome"].annotation)]}


def emitted() -> set[str]:
    names: set[str] = set()
    for path in sorted((ROOT / "functions").glob("*/app.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", ""))
                in (
                    "add_metric",
                    "single_metric",
                )
            ):
                continue
            name = next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(name, ast.Constant):
                names.add(str(name.value))
            elif isinstance(name, ast.JoinedStr) and isinstance(name.values[0], ast.Constant):
                prefix = str(name.values[0].value)
                assert prefix in DYNAMIC, f"{path}: metric name {prefix}... is built at run time; list its values"
                names |= {prefix + value for value in DYNAMIC[prefix]}
            else:
                raise AssertionError(f"{path}: a metric name the test cannot read ({ast.dump(name) if name else None})")
    return names


def dashboard_metrics(template: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for dashboard in resources_of_type(template, "AWS::CloudWatch::Dashboard").values():
        body = dashboard["Properties"]["DashboardBody"]
        text = body["Fn::Sub"] if isinstance(body, dict) else body
        for widget in json.loads(text)["widgets"]:
            for metric in widget["properties"].get("metrics", []):
                assert "." not in metric[:2], "spell metrics out: the test does not resolve '.' shorthand"
                if isinstance(metric[0], dict):  # a SEARCH expression: the MetricName it selects
                    names |= set(re.findall(r'MetricName=\\?"(\w+)\\?"', metric[0]["expression"]))
                elif metric[0] == METRICS_NAMESPACE:
                    names.add(metric[1])
    return names


def alarm_metrics(template: dict[str, Any]) -> set[str]:
    """Our namespace's metrics behind alarms, whether named directly or inside metric math."""
    names: set[str] = set()
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props.get("Namespace") == METRICS_NAMESPACE:
            names.add(props["MetricName"])
        for query in props.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == METRICS_NAMESPACE:
                names.add(metric["MetricName"])
    return names


def test_every_scheduled_function_has_an_errors_alarm() -> None:
    """A periodic function that fails outright emits none of its own metrics: only Lambda's Errors
    metric says so."""
    template = load_template()
    alarmed = {
        alarm["Properties"]["Dimensions"][0]["Value"]["Ref"]
        for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("Namespace") == "AWS/Lambda" and alarm["Properties"].get("MetricName") == "Errors"
    }
    scheduled = {
        logical_id
        for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items()
        if any(e["Type"] in ("Schedule", "ScheduleV2") for e in function["Properties"].get("Events", {}).values())
    }
    assert scheduled and scheduled <= alarmed, f"scheduled functions without an Errors alarm: {scheduled - alarmed}"


def test_every_emitted_metric_is_shown_or_alarmed() -> None:
    template = load_template()
    missing = emitted() - dashboard_metrics(template) - alarm_metrics(template)
    assert not missing, f"emitted but on no dashboard and behind no alarm: {sorted(missing)}"


def test_every_alarm_and_graph_of_our_namespace_watches_an_emitted_metric() -> None:
    template = load_template()
    stale = (dashboard_metrics(template) | alarm_metrics(template)) - emitted()
    assert not stale, f"watched but never emitted: {sorted(stale)}"


def test_the_workflows_that_can_fail_unattended_are_alarmed() -> None:
    template = load_template()
    watched = {
        dimension["Value"]["Ref"]
        for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        for query in alarm["Properties"].get("Metrics", [])
        if "MetricStat" in query
        for dimension in query["MetricStat"]["Metric"].get("Dimensions", [])
        if dimension["Name"] == "StateMachineArn"
    }
    assert watched == set(resources_of_type(template, "AWS::Serverless::StateMachine"))


def test_workflow_failures_are_counted_by_error_name_never_by_message() -> None:
    spec = importlib.util.spec_from_file_location("pause_resume_app_under_test", ROOT / "functions/pause_resume/app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.failure_reason({"Error": "NoWorkerDatabase", "Cause": "no credentials"}) == "NoWorkerDatabase"
    assert app.failure_reason({"error": "States.Timeout"}) == "States.Timeout"
    assert app.failure_reason({"Error": "the password is hunter2"}) == "Other"
    assert app.failure_reason({"Error": "x" * 49}) == "Other"
    assert app.failure_reason(None) == app.failure_reason({}) == "Other"
