"""HTTPS to an environment's web server (the CLI endpoint). urllib3 ships with botocore, so the
Lambda layer needs no extra dependency. Tests and the local cloud swap the transport, the way
moto swaps botocore's: set_default_transport()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import urllib3


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    location: str | None = None


class WebTransport(Protocol):
    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse: ...


class Urllib3Transport:
    def __init__(self) -> None:
        self._pool = urllib3.PoolManager(retries=False)

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> HttpResponse:
        response = self._pool.request(
            "POST",
            url,
            headers=headers,
            body=body,
            timeout=urllib3.Timeout(connect=5, read=timeout),
            redirect=False,
        )
        return HttpResponse(response.status, response.data, response.headers.get("Location"))


_default: WebTransport | None = None


def default_transport() -> WebTransport:
    global _default  # noqa: PLW0603 - one pool per process, replaceable by the local cloud
    if _default is None:
        _default = Urllib3Transport()
    return _default


def set_default_transport(transport: WebTransport | None) -> None:
    global _default  # noqa: PLW0603
    _default = transport
