"""In-process Lambda: ``lambda:Invoke`` through boto3 runs the real handler from functions/.

moto without Docker only echoes payloads. A botocore ``before-call`` handler (``before-send`` would
still run moto's own stubber) imports the handler module, calls it with a LambdaContext-like object
and answers with Lambda's response shape, including ``FunctionError: Unhandled`` and the error
envelope, so Step Functions Retry/Catch on exception names behaves as on AWS.
"""

from __future__ import annotations

import importlib.util
import io
import json
import threading
import traceback
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody

from localcloud.template import FunctionSpec

# The function whose handler is running on this thread: the local IAM checks its calls against
# that function's policies in template.yaml.
CURRENT_FUNCTION: ContextVar[str | None] = ContextVar("localcloud_current_function", default=None)


@dataclass
class FakeLambdaContext:
    function_name: str
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = ""
    aws_request_id: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    timeout_ms: int = 120_000

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_ms


@dataclass
class Invocation:
    function: str
    event: Any
    result: Any = None
    error: str | None = None


class LocalLambda:
    """Registry of functions (from template.yaml) and the in-process invoker."""

    def __init__(self, specs: dict[str, FunctionSpec], account: str, region: str) -> None:
        self._specs = specs
        self._account = account
        self._region = region
        self._modules: dict[str, ModuleType] = {}
        self._lock = threading.Lock()
        self.invocations: list[Invocation] = []

    def _module(self, logical_id: str) -> ModuleType:
        with self._lock:
            if logical_id not in self._modules:
                spec = self._specs[logical_id]
                module_name, _ = spec.handler.rsplit(".", 1)
                path = spec.code_uri / f"{module_name}.py"
                loader_spec = importlib.util.spec_from_file_location(
                    f"localcloud_fn_{logical_id}_{uuid.uuid4().hex[:8]}", path
                )
                assert loader_spec and loader_spec.loader
                module = importlib.util.module_from_spec(loader_spec)
                loader_spec.loader.exec_module(module)
                self._modules[logical_id] = module
            return self._modules[logical_id]

    def resolve(self, function_name: str) -> str:
        name = function_name.rsplit(":function:", maxsplit=1)[-1].split(":", maxsplit=1)[0]
        if name not in self._specs:
            raise KeyError(f"no function {name!r} in template.yaml (known: {sorted(self._specs)})")
        return name

    def invoke(self, function_name: str, event: Any) -> Any:
        """Call the real handler; exceptions propagate (as an async invocation's error would)."""
        logical_id = self.resolve(function_name)
        spec = self._specs[logical_id]
        handler: Callable[[Any, Any], Any] = getattr(self._module(logical_id), spec.handler.rsplit(".", 1)[1])
        context = FakeLambdaContext(
            function_name=logical_id,
            invoked_function_arn=f"arn:aws:lambda:{self._region}:{self._account}:function:{logical_id}",
            aws_request_id=str(uuid.uuid4()),
            timeout_ms=spec.timeout * 1000,
        )
        record = Invocation(function=logical_id, event=event)
        self.invocations.append(record)
        running = CURRENT_FUNCTION.set(logical_id)
        try:
            record.result = handler(event, context)
        except Exception as error:
            record.error = type(error).__name__
            raise
        finally:
            CURRENT_FUNCTION.reset(running)
            _drop_unpublished_metrics()
        return record.result

    def before_call(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        """botocore before-call.lambda.Invoke handler."""
        body = params["body"]
        event = json.loads(body) if body else {}
        function_name = unquote(params["url_path"].split("/functions/")[1].split("/")[0])
        try:
            result = self.invoke(function_name, event)
            payload = json.dumps(result).encode()
            extra: dict[str, Any] = {}
        except Exception as error:
            payload = json.dumps(
                {
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "requestId": str(uuid.uuid4()),
                    "stackTrace": traceback.format_tb(error.__traceback__),
                }
            ).encode()
            extra = {"FunctionError": "Unhandled"}
        http = AWSResponse("https://lambda.local", 200, {}, None)
        parsed = {
            "StatusCode": 200,
            "ExecutedVersion": "$LATEST",
            "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
            "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {}},
            **extra,
        }
        return http, parsed


def _drop_unpublished_metrics() -> None:
    """With POWERTOOLS_METRICS_DISABLED (the demo's quiet mode) Powertools' flush keeps the metric
    set instead of clearing it, so every in-process function's values pile up in the one shared
    Metrics object until the 100th is printed to stdout. Each invocation starts empty, as a real
    Lambda's does after its flush."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled  # noqa: PLC0415

    from mwaa_control.observability import metrics  # noqa: PLC0415

    if is_metrics_disabled():
        metrics.clear_metrics()
