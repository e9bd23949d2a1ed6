"""The one place that creates the Powertools logger, tracer and metrics."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE = "mwaa-control"
METRICS_NAMESPACE = "MwaaControl"
# What the functions call out through: AWS APIs (botocore) and the MWAA web login and REST paths
# (http.client under urllib3). Patching everything the X-Ray SDK knows (its default) imports every
# database driver installed next to it, SQLAlchemy and psycopg included, on each cold start.
TRACED_MODULES = ("botocore", "httplib")

F = TypeVar("F", bound=Callable[..., Any])

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=METRICS_NAMESPACE)


class DeferredTracer:
    """Powertools' Tracer, built (and the X-Ray SDK imported, botocore patched) on first use.

    Building a Tracer imports the X-Ray SDK and patches modules: the largest part of a handler's
    cold import after boto3 itself. Decorating a handler does not build it; the first invocation
    does, before the handler runs, so every invocation is traced as with a Tracer made at import.
    Patching botocore changes its client class, so clients created earlier are traced too.
    """

    def __init__(self, *, service: str, patch_modules: tuple[str, ...]) -> None:
        self._service = service
        self._patch_modules = patch_modules
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._tracer is not None

    def get(self) -> Tracer:
        with self._lock:
            if self._tracer is None:
                from aws_lambda_powertools import Tracer  # noqa: PLC0415 - imports the X-Ray SDK

                self._tracer = Tracer(service=self._service, patch_modules=self._patch_modules)
            return self._tracer

    def capture_lambda_handler(self, handler: F) -> F:
        traced: list[Callable[..., Any]] = []

        @functools.wraps(handler)
        def invoke(event: Any, context: Any) -> Any:
            if not traced:
                traced.append(self.get().capture_lambda_handler(handler))
            return traced[0](event, context)

        return invoke  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


tracer = DeferredTracer(service=SERVICE, patch_modules=TRACED_MODULES)
