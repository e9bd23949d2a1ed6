"""The MWAA emulator behind the real boto3 client: a botocore ``before-send`` handler that answers
REST-JSON requests for the ``airflow`` endpoints, so botocore's own serialisation, validation,
retries and response/error parsing all run as they would against AWS. Step Functions' aws-sdk:mwaa
tasks reach it the same way, since moto's interpreter calls through boto3.

Assumed-role credentials expire here as on AWS, on the local cloud's clock: moto's STS stamps an
expiration in real time, while the emulator's ManualClock starts at a fixed date and moves only when
a test advances it, so the two never compare directly. A key's remaining lifetime, as STS counted
it, is carried over to the manual clock the first time the key signs an MWAA request (credentials
are used right after AssumeRole; a key first used later only lives longer, never shorter)."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from moto.core.botocore_stubber import MockRawResponse
from moto.iam.models import get_account_id_from
from moto.sts import models as moto_sts
from moto.utilities.utils import get_partition

from localcloud.mwaa.emulator import MwaaApiError, MwaaEmulator
from mwaa_control.airflow.transport import HttpResponse

_HOST = re.compile(r"^(?:api|env)\.airflow\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/")
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("PUT", re.compile(r"^/environments/(?P<Name>[^/]+)$"), "CreateEnvironment"),
    ("GET", re.compile(r"^/environments/(?P<Name>[^/]+)$"), "GetEnvironment"),
    ("PATCH", re.compile(r"^/environments/(?P<Name>[^/]+)$"), "UpdateEnvironment"),
    ("DELETE", re.compile(r"^/environments/(?P<Name>[^/]+)$"), "DeleteEnvironment"),
    ("GET", re.compile(r"^/environments$"), "ListEnvironments"),
    ("GET", re.compile(r"^/tags/(?P<ResourceArn>.+)$"), "ListTagsForResource"),
    ("POST", re.compile(r"^/tags/(?P<ResourceArn>.+)$"), "TagResource"),
    ("DELETE", re.compile(r"^/tags/(?P<ResourceArn>.+)$"), "UntagResource"),
    ("POST", re.compile(r"^/clitoken/(?P<Name>[^/]+)$"), "CreateCliToken"),
    ("POST", re.compile(r"^/webtoken/(?P<Name>[^/]+)$"), "CreateWebLoginToken"),
    ("POST", re.compile(r"^/restapi/(?P<Name>[^/]+)$"), "InvokeRestApi"),
]


class MwaaHttpFrontend:
    def __init__(self, emulator: MwaaEmulator) -> None:
        self.emulator = emulator
        self._expiry_lock = threading.Lock()
        self._expires_on_manual_clock: dict[str, datetime] = {}

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        url = urlsplit(request.url)
        host = _HOST.match(url.hostname or "")
        if not host:
            return None
        status, body = self.handle(request.method or "GET", url.path, url.query, request.headers, request.body)
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": "emulated"}
        if status >= 300:
            headers["x-amzn-ErrorType"] = body.get("__type", "")
        return AWSResponse(request.url, status, headers, MockRawResponse(json.dumps(body)))

    def handle(
        self, method: str, path: str, query: str, headers: Any, body: bytes | str | None
    ) -> tuple[int, dict[str, Any]]:
        auth = headers.get("Authorization", "")
        if isinstance(auth, bytes):
            auth = auth.decode()
        credential = _CREDENTIAL.search(auth)
        if not credential:
            return 403, {"__type": "AccessDeniedException", "message": "Missing SigV4 credentials"}
        account = get_account_id_from(credential.group("key"))
        region = credential.group("region")
        if self._expired(credential.group("key"), account, region):
            return 403, {
                "__type": "ExpiredTokenException",
                "message": "The security token included in the request is expired",
            }
        routed = next(
            ((operation, m) for verb, pattern, operation in _ROUTES if verb == method and (m := pattern.match(path))),
            None,
        )
        if routed is None:
            return 404, {"__type": "ResourceNotFoundException", "message": f"No route for {method} {path}"}
        operation, match = routed
        params: dict[str, Any] = {k: unquote(v) for k, v in match.groupdict().items()}
        raw = body.decode() if isinstance(body, bytes) else (body or "")
        if raw:
            params.update(json.loads(raw))
        for key, values in parse_qs(query).items():
            params[key] = values if key == "tagKeys" else values[0]
        try:
            return 200, self.emulator.call(operation, account, region, params)
        except MwaaApiError as error:
            return error.status, {"__type": error.code, "message": error.message, **error.fields}

    def _expired(self, access_key: str, account: str, region: str) -> bool:
        """Whether an assumed-role key has expired on the manual clock (long-term keys never do)."""
        role = moto_sts.sts_backends[account][get_partition(region)].get_assumed_role_from_access_key(access_key)
        if role is None:
            return False
        now = self.emulator.clock.now()
        with self._expiry_lock:
            if access_key not in self._expires_on_manual_clock:
                # moto's clock is naive UTC; looked up on the module so a test can move STS's time.
                remaining = role.expiration.replace(tzinfo=UTC) - moto_sts.utcnow().replace(tzinfo=UTC)  # type: ignore[attr-defined]
                self._expires_on_manual_clock[access_key] = now + remaining
            return now >= self._expires_on_manual_clock[access_key]


class EmulatorWebTransport:
    """mwaa_control's WebTransport answered by the emulator's web servers (no network)."""

    def __init__(self, emulator: MwaaEmulator) -> None:
        self.emulator = emulator

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse:
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise ConnectionError(f"refusing non-HTTPS URL {url}")
        status, response_headers, payload = self.emulator.web_cli(
            parts.hostname or "", parts.path, headers.get("Authorization", ""), body
        )
        return HttpResponse(status, payload, response_headers.get("Location"))
