"""Typed failures of Airflow calls. Messages say what happened and what to do; never a token."""

from __future__ import annotations

from mwaa_control.errors import ControlPlaneError


class AirflowError(ControlPlaneError):
    """Base class of failures talking to Airflow on an environment."""


class UnsafeValue(AirflowError, ValueError):
    """A user-supplied value cannot be passed to Airflow safely; nothing was sent."""


class AirflowUnavailable(AirflowError):
    """The environment's web server or API did not answer usefully (5xx, timeout); retry later."""


class AirflowThrottled(AirflowUnavailable):
    """Too many concurrent CLI/REST calls on the environment (429)."""


class AirflowAccessDenied(AirflowError):
    """IAM refused the MWAA call (CreateCliToken, InvokeRestApi): a grant is missing, retrying
    will not help. The message names the action and the resource to grant."""


class CliTokenRejected(AirflowError):
    """The web server refused the CLI token (expired or not authorised) even after a fresh one."""


class AirflowCommandRejected(AirflowError):
    """The MWAA CLI endpoint refused the command (unsupported command or bad request)."""


class AirflowCommandFailed(AirflowError):
    """Airflow ran the command and reported an error (its stderr is in the message)."""


class UnexpectedAirflowOutput(AirflowError):
    """Airflow's output was not the machine-readable document the command promises."""


class AirflowRestError(AirflowError):
    """The Airflow REST API answered with a client error."""

    def __init__(self, status: int, detail: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class AirflowNotFound(AirflowRestError):
    """The DAG, run or variable does not exist (404)."""


class AirflowForbidden(AirflowRestError):
    """Airflow refused the call (401/403): the Airflow role IAM mapped the caller to, the role in
    the InvokeRestApi resource it was granted, may not do this."""


class RestPathTooLong(AirflowError):
    """The REST path exceeds InvokeRestApi's 64-character limit (long DAG or run ids)."""


class DagNotParsed(AirflowError):
    """The DAG did not appear in Airflow within the wait (not parsed yet, or import errors)."""
