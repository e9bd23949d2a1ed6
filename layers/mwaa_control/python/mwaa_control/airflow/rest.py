"""InvokeRestApi: Airflow's REST API through MWAA (v1 on Airflow 2, v2 on Airflow 3)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from mwaa_control.airflow.errors import (
    AirflowAccessDenied,
    AirflowForbidden,
    AirflowNotFound,
    AirflowRestError,
    AirflowThrottled,
    AirflowUnavailable,
    RestPathTooLong,
)

MAX_PATH = 64  # InvokeRestApi's Path limit (botocore model RestApiPath); botocore does not check it


class MwaaRest:
    def __init__(self, mwaa: Any, environment: str) -> None:
        self._mwaa = mwaa
        self._environment = environment

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        if len(path) > MAX_PATH:
            raise RestPathTooLong(
                f"{self._environment}: {method} {path[:40]}... is {len(path)} characters; "
                f"InvokeRestApi takes {MAX_PATH}"
            )
        request: dict[str, Any] = {"Name": self._environment, "Path": path, "Method": method}
        if query:
            request["QueryParameters"] = query
        if body is not None:
            request["Body"] = body
        try:
            response = self._mwaa.invoke_rest_api(**request)
        except ClientError as error:
            raise self._typed(error, method, path) from None
        return response.get("RestApiResponse")

    def _typed(self, error: ClientError, method: str, path: str) -> Exception:
        info = error.response.get("Error", {})
        code = info.get("Code", "")
        status = int(error.response.get("RestApiStatusCode") or 0)
        detail = _detail(error.response.get("RestApiResponse")) or info.get("Message", "")
        where = f"{self._environment}: "
        if code == "AccessDeniedException":
            # IAM authorises InvokeRestApi against the Airflow role resource, not the environment.
            return AirflowAccessDenied(
                f"{where}IAM denies airflow:InvokeRestApi ({method} {path}); grant it on "
                f"arn:<partition>:airflow:<region>:<account>:role/{self._environment}/{{AirflowRole}} "
                "with the least Airflow role that works, not on environment/*"
            )
        if code == "RestApiServerException" or code in ("InternalServerException", "ServiceUnavailable"):
            return AirflowUnavailable(f"{where}{method} {path} failed on the server (HTTP {status or 500}): {detail}")
        if code == "ThrottlingException" or status == 429:
            return AirflowThrottled(f"{where}REST API throttled")
        if code == "ResourceNotFoundException":
            return AirflowNotFound(404, f"environment {self._environment} not found", method=method, path=path)
        if status == 404:
            return AirflowNotFound(404, detail, method=method, path=path)
        if status in (401, 403):
            return AirflowForbidden(
                status,
                f"{where}{detail} (the Airflow role in the caller's InvokeRestApi grant may not do this)",
                method=method,
                path=path,
            )
        return AirflowRestError(status or 400, f"{where}{detail}", method=method, path=path)


def _detail(response: Any) -> str:
    if isinstance(response, dict):
        return str(response.get("detail") or response.get("title") or json.dumps(response)[:500])
    return str(response or "")[:500]
