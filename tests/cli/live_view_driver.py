"""`python -m tests.cli.live_view_driver LOG ARG...`: runs `mwaactl ARG...` in this process against a
local cloud it starts itself, for tests that run the CLI in a real terminal (tests/cli/test_live_view.py).

A CLI in a child process cannot reach a test's in-process moto, so this process builds the local cloud
(the environments have no Airflow: the emulator refuses Airflow calls, as in test_fleet_cli.py), points
`mwaactl.fleet.locate` at it and calls the typer app. mwaactl's consoles keep writing to this process's
terminal; what the local cloud's functions print (Powertools logs, metrics) goes to LOG instead, so
the terminal shows what an on-call engineer would see. While rich's live view runs it sends whatever
this process prints through the terminal, so the functions log only errors and publish no metrics (as
`localcloud.demo` runs them), and Python's own logging and warnings (moto's) go to LOG. Exits with
mwaactl's exit code, once the workflows it started have ended."""

from __future__ import annotations

import logging
import os
import sys


def main(log_path: str, arguments: list[str]) -> int:
    # The consoles detect the terminal (colour system, size) when they are made, at this import.
    import mwaactl.fleet
    from localcloud import LocalCloud
    from mwaactl.main import app
    from tests.cli.test_fleet_cli import fleet_of
    from tests.fleet_support import settle_workflows

    mwaactl.fleet.console.file = os.fdopen(os.dup(1), "w", buffering=1)
    mwaactl.fleet.errors.file = os.fdopen(os.dup(2), "w", buffering=1)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    logging.basicConfig(filename=log_path, level=logging.INFO, force=True)
    logging.captureWarnings(True)
    code: int | str | None = 0
    quiet = {"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}
    with LocalCloud(environment_overrides=quiet) as cloud:
        for operation in ("CreateCliToken", "CreateWebLoginToken", "InvokeRestApi"):
            cloud.emulator.inject_fault(operation, "AccessDeniedException", status=403, times=10_000, message="test")
        mwaactl.fleet.locate = lambda *_: fleet_of(cloud)
        try:
            app(arguments, prog_name="mwaactl")
        except SystemExit as exited:
            code = exited.code
        settle_workflows(cloud)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
