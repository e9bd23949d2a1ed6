"""EventBridge delivery as deployed: each function's rule pattern from template.yaml decides which
events reach it (matched with moto's EventBridge pattern engine), and the function is invoked
through boto3 ``lambda:Invoke`` (so the in-process runtime runs the real handler). Like an async
invocation, a failing handler is retried twice and then dead-lettered, never raised to the emitter.

Shared VPC: events from another account reach this (owner) account's bus only if that account
forwards them (participant.yaml) and the owner's bus policy allows it (ParticipantAccountIds)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, cast

from moto.events.models import EventPattern

from localcloud.template import FunctionSpec

ASYNC_ATTEMPTS = 3


def rule_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge pattern matching, by moto's implementation of it."""
    return bool(EventPattern.load(json.dumps(pattern)).matches_event(cast(Any, event)))


@dataclass
class Delivery:
    function: str
    rule: str
    event_id: str
    detail_status: str | None
    outcome: Any = None
    error: str | None = None


class TemplateEventRouter:
    def __init__(self, specs: dict[str, FunctionSpec], lambda_client: Any, home_account: str) -> None:
        self._rules = [
            (spec.logical_id, rule_id, EventPattern.load(json.dumps(pattern)))
            for spec in specs.values()
            for rule_id, pattern in spec.event_patterns.items()
        ]
        self._lambda = lambda_client
        self.home_account = home_account
        self.forwarding_accounts: set[str] = set()
        self.deliveries: list[Delivery] = []
        self.dead_letters: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def publish(self, event: dict[str, Any]) -> list[Delivery]:
        """Deliver an event to every function whose rule matches it.

        Delivery is asynchronous on AWS: an event emitted while a handler runs (its own API call
        advanced the lifecycle) is queued and delivered after that handler returns, never nested
        inside it. The returned deliveries are those of this call's own event and its queue.
        """
        if event.get("account") not in ({self.home_account} | self.forwarding_accounts):
            return []
        queue: list[dict[str, Any]] = self._local.__dict__.setdefault("queue", [])
        queue.append(event)
        if self._local.__dict__.get("delivering"):
            return []
        self._local.delivering = True
        done = []
        try:
            while queue:
                current = queue.pop(0)
                for function, rule_id, pattern in self._rules:
                    if pattern.matches_event(cast(Any, current)):
                        done.append(self._deliver(function, rule_id, current))
        finally:
            self._local.delivering = False
        return done

    def _deliver(self, function: str, rule_id: str, event: dict[str, Any]) -> Delivery:
        status = event.get("detail", {}).get("status") if isinstance(event.get("detail"), dict) else None
        delivery = Delivery(function=function, rule=rule_id, event_id=str(event.get("id")), detail_status=status)
        for _ in range(ASYNC_ATTEMPTS):
            response = self._lambda.invoke(FunctionName=function, Payload=json.dumps(event).encode())
            payload = json.loads(response["Payload"].read() or b"null")
            if "FunctionError" not in response:
                delivery.outcome, delivery.error = payload, None
                break
            delivery.error = f"{payload.get('errorType')}: {payload.get('errorMessage')}"
        else:
            self.dead_letters.append(event)
        with self._lock:
            self.deliveries.append(delivery)
        return delivery
