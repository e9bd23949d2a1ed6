"""In-memory stand-ins for the domain's ports (the domain is tested without AWS)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mwaa_control.errors import LeaseLost
from mwaa_control.models import EndpointIntent, EndpointRecord, Environment, EnvironmentRef, ManagedEndpoint
from mwaa_control.ports import SqsEndpoint


class FakeDirectory:
    def __init__(self, *environments: Environment) -> None:
        self.environments = {e.arn: e for e in environments}
        self.reads: list[str] = []
        # Accounts whose listing fails (a participant role missing, AssumeRole denied).
        self.broken_accounts: set[str] = set()

    def get_environment(self, ref: EnvironmentRef) -> Environment | None:
        self.reads.append(ref.arn)
        return self.environments.get(ref.arn)

    def list_environments(self, account: str | None = None) -> Iterator[EnvironmentRef]:
        # Like MwaaDirectory: listing every account fails at the first broken one.
        if account in self.broken_accounts or (account is None and self.broken_accounts):
            raise RuntimeError(f"AccessDenied: cannot assume the participant role of {account or 'a participant'}")
        for environment in self.environments.values():
            if account is None or environment.ref.account == account:
                yield environment.ref


class FakeNetwork:
    def __init__(self, subnets: Mapping[str, str], deployment_id: str = "stack") -> None:
        self.subnets = dict(subnets)
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.sqs: dict[str, SqsEndpoint] = {}
        self.sqs_vpc: dict[str, str] = {}
        self.deployment_id = deployment_id
        self.calls: list[str] = []
        # Reads of a written policy that still return the old one (EC2's eventual consistency);
        # None: the write never becomes visible.
        self.stale_policy_reads: int | None = 0
        self._written: dict[str, tuple[dict[str, Any], int]] = {}
        self._ids = itertools.count(1)

    def vpc_of_subnets(self, subnet_ids: Sequence[str]) -> str:
        vpcs = {self.subnets[s] for s in subnet_ids}
        assert len(vpcs) == 1
        return vpcs.pop()

    def managed_endpoints(self, environment_arn: str | None = None) -> list[ManagedEndpoint]:
        return [
            ManagedEndpoint(
                endpoint_id=eid,
                vpc_id=e["vpc_id"],
                service_name=e["service_name"],
                state="available",
                environment_arn=e["tags"]["mwaa-control:environment-arn"],
                role=e["tags"]["mwaa-control:endpoint-role"],
                created_at=e["created_at"],
                client_token=e["tags"].get("mwaa-control:client-token"),
            )
            for eid, e in self.endpoints.items()
            if e["tags"].get("mwaa-control:managed-by") == self.deployment_id
            and (environment_arn is None or e["tags"]["mwaa-control:environment-arn"] == environment_arn)
        ]

    def create_interface_endpoint(
        self,
        *,
        vpc_id: str,
        service_name: str,
        subnet_ids: Sequence[str],
        security_group_ids: Sequence[str],
        tags: Mapping[str, str],
        client_token: str,
    ) -> str:
        self.calls.append(f"create {service_name}")
        # EC2 returns the endpoint created earlier with the same ClientToken.
        same = next((eid for eid, e in self.endpoints.items() if e["client_token"] == client_token), None)
        if same:
            return same
        endpoint_id = f"vpce-{next(self._ids):04d}"
        self.endpoints[endpoint_id] = {
            "vpc_id": vpc_id,
            "service_name": service_name,
            "subnet_ids": list(subnet_ids),
            "security_group_ids": list(security_group_ids),
            "tags": dict(tags),
            "client_token": client_token,
            "created_at": datetime.now(UTC),
        }
        return endpoint_id

    def delete_endpoints(self, endpoint_ids: Sequence[str]) -> None:
        self.calls.append(f"delete {sorted(endpoint_ids)}")
        for endpoint_id in endpoint_ids:
            del self.endpoints[endpoint_id]

    def add_sqs_endpoint(
        self, endpoint_id: str, vpc_id: str, policy: dict[str, Any], *, opted_in_by: str | None = "stack"
    ) -> None:
        tags = {"mwaa-control:amend-policy": opted_in_by} if opted_in_by else {}
        self.sqs[endpoint_id] = SqsEndpoint(endpoint_id=endpoint_id, vpc_id=vpc_id, policy=policy, tags=tags)
        self.sqs_vpc[endpoint_id] = vpc_id

    def sqs_endpoints(self, vpc_id: str) -> list[SqsEndpoint]:
        return [e for eid, e in self.sqs.items() if self.sqs_vpc[eid] == vpc_id]

    def opted_in_sqs_endpoints(self) -> list[SqsEndpoint]:
        return [e for e in self.sqs.values() if e.tags.get("mwaa-control:amend-policy") == self.deployment_id]

    def replace_endpoint_policy(self, endpoint_id: str, policy: Mapping[str, Any]) -> None:
        self.calls.append(f"policy {endpoint_id}")
        previous = self.sqs[endpoint_id].policy
        self.sqs[endpoint_id] = self.sqs[endpoint_id].model_copy(update={"policy": dict(policy)})
        self._written[endpoint_id] = (previous, 0)

    def endpoint_policy(self, endpoint_id: str) -> dict[str, Any]:
        if endpoint_id in self._written:
            previous, reads = self._written[endpoint_id]
            if self.stale_policy_reads is None or reads < self.stale_policy_reads:
                self._written[endpoint_id] = (previous, reads + 1)
                return previous
        return self.sqs[endpoint_id].policy


class FakeRegistry:
    def __init__(self) -> None:
        self.records: dict[str, EndpointRecord] = {}
        self.intents: dict[str, EndpointIntent] = {}

    def register(self, record: EndpointRecord) -> None:
        self.records[record.endpoint_id] = record

    def lookup(self, endpoint_ids: Sequence[str]) -> dict[str, EndpointRecord]:
        return {i: self.records[i] for i in endpoint_ids if i in self.records}

    def forget(self, endpoint_ids: Sequence[str]) -> None:
        for endpoint_id in endpoint_ids:
            self.records.pop(endpoint_id, None)

    def record_intent(self, intent: EndpointIntent) -> None:
        self.intents.setdefault(intent.client_token, intent)

    def lookup_intents(self, client_tokens: Sequence[str]) -> dict[str, EndpointIntent]:
        return {t: self.intents[t] for t in client_tokens if t in self.intents}

    def forget_intents(self, client_tokens: Sequence[str]) -> None:
        for token in client_tokens:
            self.intents.pop(token, None)


class FakeLease:
    def __init__(self, key: str) -> None:
        self.key = key
        self.lost = False

    def ensure(self) -> None:
        if self.lost:
            raise LeaseLost(f"lease on {self.key} was lost")


class FakeLock:
    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self.held: list[str] = []
        self.leases: dict[str, FakeLease] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[FakeLease]:
        lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            self.held.append(key)
            lease = self.leases[key] = FakeLease(key)
            yield lease
        if lease.lost:
            raise LeaseLost(f"lease on {key} was lost while held")
