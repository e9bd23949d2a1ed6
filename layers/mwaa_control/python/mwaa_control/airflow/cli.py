"""The MWAA CLI endpoint: CreateCliToken, then POST the command to https://{host}/aws_mwaa/cli.

A fresh token per call (they live 60 s); the command is an argument list joined with shlex, so
every value arrives as one argument, byte for byte. The endpoint handles only a few commands at a
time per environment, so calls are bounded per environment. The token is never logged or raised.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.airflow.errors import (
    AirflowAccessDenied,
    AirflowCommandRejected,
    AirflowThrottled,
    AirflowUnavailable,
    CliTokenRejected,
    UnexpectedAirflowOutput,
)
from mwaa_control.airflow.transport import WebTransport, default_transport
from mwaa_control.observability import logger

MAX_CONCURRENT_PER_ENVIRONMENT = 4
_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _slot(environment: str) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(environment, threading.BoundedSemaphore(MAX_CONCURRENT_PER_ENVIRONMENT))


@dataclass(frozen=True)
class CliResult:
    stdout: str
    stderr: str


class MwaaCli:
    def __init__(
        self,
        mwaa: Any,
        environment: str,
        *,
        airflow_major: int,
        transport: WebTransport | None = None,
        timeout: float = 60.0,
        attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._mwaa = mwaa
        self._environment = environment
        self._airflow_major = airflow_major
        self._transport = transport or default_transport()
        self._timeout = timeout
        self._attempts = attempts
        self._sleep = sleep

    def run(self, argv: Sequence[str]) -> CliResult:
        command = shlex.join(argv)
        with _slot(self._environment):
            for attempt in range(1, self._attempts + 1):
                try:
                    return self._once(command, argv)
                except (AirflowUnavailable, CliTokenRejected) as error:
                    if attempt == self._attempts:
                        raise
                    delay = min(0.5 * 2**attempt, 8.0)
                    logger.warning(
                        "retrying Airflow CLI command",
                        extra={
                            "environment": self._environment,
                            "command": argv[:2],
                            "error": str(error),
                            "attempt": attempt,
                        },
                    )
                    self._sleep(delay)
        raise AssertionError("unreachable")

    def _once(self, command: str, argv: Sequence[str]) -> CliResult:
        try:
            token = self._mwaa.create_cli_token(Name=self._environment)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "AccessDeniedException":
                # A missing grant: retrying (here or in the workflow) cannot help.
                raise AirflowAccessDenied(
                    f"{self._environment}: IAM denies airflow:CreateCliToken; grant it on the environment's ARN"
                ) from None
            raise AirflowUnavailable(f"CreateCliToken for {self._environment} failed: {code}") from None
        # Airflow 3 environments redirect /aws_mwaa/cli to /aws_mwaa/cli/; post there directly.
        path = "/aws_mwaa/cli/" if self._airflow_major >= 3 else "/aws_mwaa/cli"
        url = f"https://{token['WebServerHostname']}{path}"
        try:
            response = self._transport.post(
                url,
                headers={"Authorization": f"Bearer {token['CliToken']}", "Content-Type": "text/plain"},
                body=command.encode(),
                timeout=self._timeout,
            )
        except Exception as error:  # network failure or timeout of any HTTP stack
            raise AirflowUnavailable(
                f"{self._environment}: CLI endpoint unreachable ({type(error).__name__}); is the web server up?"
            ) from None
        subcommand = " ".join(argv[:2])
        if response.status in (401, 403):
            raise CliTokenRejected(f"{self._environment}: CLI token refused (HTTP {response.status})")
        if response.status == 429:
            raise AirflowThrottled(f"{self._environment}: too many concurrent CLI commands")
        if response.status >= 500:
            raise AirflowUnavailable(f"{self._environment}: CLI endpoint answered HTTP {response.status}")
        if response.status != 200:
            raise AirflowCommandRejected(
                f"{self._environment}: '{subcommand}' refused (HTTP {response.status}): {_text(response.body)[:500]}"
            )
        try:
            payload = json.loads(response.body)
            return CliResult(
                stdout=base64.b64decode(payload.get("stdout") or b"").decode("utf-8", "replace"),
                stderr=base64.b64decode(payload.get("stderr") or b"").decode("utf-8", "replace"),
            )
        except (ValueError, binascii.Error, AttributeError) as error:
            raise UnexpectedAirflowOutput(f"{self._environment}: CLI endpoint answer is not JSON: {error}") from None


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()


def json_document(stdout: str) -> Any:
    """The JSON document in a command's stdout, which may also carry log and warning lines.

    Airflow prints INFO log lines and warnings on stdout before the `-o json` document; the
    document is the last line that parses as a JSON array or object.
    """
    for line in reversed(stdout.splitlines()):
        stripped = line.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return json.loads(stripped)
            except ValueError:
                continue
    raise ValueError("no JSON document in output")
