"""Cold start: no handler loads the metadata engine's heavy dependencies, neither at import nor on
its first invocation (the Lambda has no pyarrow, SQLAlchemy or psycopg: loading one there is an
ImportError, and here a slow cold start), and `mwaactl` help and argument errors load none of them,
nor boto3. Checked in fresh interpreters through sys.modules; the timings are bench/coldstart_bench.py's.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "mwaa_control" / "python"
HANDLERS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
HEAVY = ("pyarrow", "sqlalchemy", "psycopg", "psycopg2")

# What Lambda sets before importing a handler (LAMBDA_TASK_ROOT puts Powertools' Tracer and the X-Ray
# SDK on their Lambda paths: tracing on, modules patched) and the variables the template gives.
LAMBDA_ENVIRONMENT = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_LAMBDA_FUNCTION_NAME": "ColdImportTest",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "POWERTOOLS_SERVICE_NAME": "mwaa-control",
    "POWERTOOLS_METRICS_NAMESPACE": "MwaaControl",
    "DEPLOYMENT_ID": "mwaa-control-test",
    "ACCOUNT_ID": "123456789012",
    "AWS_PARTITION": "aws",
    "LOCK_TABLE_NAME": "mwaa-control-state",
    "METADATA_BUCKET": "mwaa-control-backups",
    "METADATA_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
    "FLEET_DOCUMENT_KEY": "fleet/schedules.json",
    "PAUSE_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:pause",
    "RESUME_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:resume",
    "FLEET_WAKE_UP_SCHEDULE": "mwaa-control-fleet-wake-up",
    "FLEET_WAKE_UP_ROLE_ARN": "arn:aws:iam::123456789012:role/mwaa-control/wake-up",
}

# Imports the handler, reports what is loaded, then does what a first invocation does before its
# first AWS call (the imports inside the handler's functions, its cached builders, the tracer) and
# reports again.
HANDLER_PROBE = """
import json, sys
watched = {watched!r}
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in watched)
import app
at_import = loaded()
for name in {deferred!r}:
    __import__(name)
for builder in ("settings", "state", "service", "scheduler"):
    if callable(getattr(app, builder, None)):
        getattr(app, builder)()
tracer = app.tracer.get() if hasattr(app.tracer, "get") else app.tracer
print(json.dumps({{"import": at_import, "first_call": loaded(), "tracer": type(tracer).__name__}}))
"""

CLI_PROBE = """
import json, sys
watched = {watched!r}
import mwaactl.main
at_import = sorted(m for m in sys.modules if m.split(".")[0] in watched)
try:
    mwaactl.main.app({argv!r})
except SystemExit as done:
    code = done.code
print(json.dumps({{"import": at_import, "after": sorted(m for m in sys.modules if m.split(".")[0] in watched),
                  "code": code}}))
"""


def _deferred_imports(app: Path) -> list[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(app.read_text())):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    names.add(inner.module)
                elif isinstance(inner, ast.Import):
                    names.update(alias.name for alias in inner.names)
    return sorted(names)


def _run(code: str, *, cwd: Path, pythonpath: list[Path], env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN"))}
    clean |= env | {"PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_handler_never_loads_the_metadata_engine_dependencies(handler: str) -> None:
    # Given a fresh interpreter set up as Lambda sets one up for this function
    function = ROOT / "functions" / handler
    env = LAMBDA_ENVIRONMENT | {"LAMBDA_TASK_ROOT": str(function), "_HANDLER": "app.lambda_handler"}
    probe = HANDLER_PROBE.format(watched=HEAVY, deferred=_deferred_imports(function / "app.py"))

    # When the handler is imported, then prepared as its first invocation prepares it
    loaded = _run(probe, cwd=function, pythonpath=[function, LAYER], env=env)

    # Then neither step loaded pyarrow, SQLAlchemy or psycopg, and tracing is Powertools' Tracer
    assert loaded["import"] == []
    assert loaded["first_call"] == []
    assert loaded["tracer"] == "Tracer"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["metadata", "--help"],
        ["metadata", "backup"],
        ["endpoints", "adopt", "--bogus"],
        ["dags", "trigger"],
        ["status", "--bogus"],
        ["pause"],
        ["override", "--help"],
    ],
    ids=[
        "help",
        "metadata-help",
        "metadata-argument-error",
        "endpoints-argument-error",
        "dags-argument-error",
        "status-argument-error",
        "pause-argument-error",
        "override-help",
    ],
)
def test_mwaactl_help_and_argument_errors_load_no_engine_and_no_boto3(argv: list[str]) -> None:
    # Given a fresh interpreter with the CLI
    probe = CLI_PROBE.format(watched=(*HEAVY, "boto3", "botocore"), argv=argv)

    # When the CLI module is imported and asked for help, or given wrong arguments
    loaded = _run(probe, cwd=ROOT, pythonpath=[LAYER, ROOT / "cli"], env={})

    # Then it answered (help: 0, usage error: 2) without loading any of them
    assert loaded["code"] == (0 if "--help" in argv else 2)
    assert loaded["import"] == []
    assert loaded["after"] == []


def test_the_tracer_is_built_by_the_first_invocation_and_traces_it() -> None:
    # Given a handler decorated with a deferred tracer (outside Lambda: Powertools disables tracing)
    from mwaa_control.observability import DeferredTracer

    tracer = DeferredTracer(service="cold-import-test", patch_modules=())
    calls: list[object] = []

    @tracer.capture_lambda_handler
    def handler(event: dict[str, object], context: object) -> dict[str, object]:
        calls.append(event)
        return {"echo": event}

    # When it is decorated, nothing is built; when it is invoked twice
    assert not tracer.built
    first = handler({"n": 1}, None)
    second = handler({"n": 2}, None)

    # Then the first invocation built Powertools' Tracer, and both ran through it
    assert tracer.built
    assert type(tracer.get()).__name__ == "Tracer"
    assert (first, second) == ({"echo": {"n": 1}}, {"echo": {"n": 2}})
    assert calls == [{"n": 1}, {"n": 2}]
    assert handler.__name__ == "handler"


def test_clients_share_one_data_loader_but_not_their_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the SDK's environment, and the number of search paths the shared loader has now
    from mwaa_control.adapters.clients import client, new_session

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    new_session()
    paths = len(new_session()._session.get_component("data_loader").search_paths)

    # When clients are created one after another (as a first invocation creates them)
    first, second = client("dynamodb", region="us-east-1"), client("ec2", region="eu-west-1")
    sessions = [new_session() for _ in range(5)]

    # Then each has a session of its own, they all load the SDK's data through one loader (parsed
    # once per process), and boto3's per-session search path is not appended over and over
    assert len({id(s) for s in sessions}) == 5
    assert len({id(s._session) for s in sessions}) == 5
    assert first._loader is second._loader is sessions[0]._session.get_component("data_loader")
    assert len(sessions[-1]._session.get_component("data_loader").search_paths) == paths
    assert first.meta.region_name == "us-east-1"
    assert second.meta.region_name == "eu-west-1"
