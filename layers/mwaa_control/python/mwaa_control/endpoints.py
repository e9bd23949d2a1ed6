"""Customer-managed VPC endpoints of MWAA environments (shared or locked-down VPCs).

With EndpointManagement=CUSTOMER, MWAA creates its side of the PrivateLink services, enters PENDING
and waits up to 72 hours for interface endpoints to them in the environment's VPC, then fails. This
module decides, from GetEnvironment (never from the best-effort event body), which endpoints must
exist, creates the missing ones, and removes the ones it created once the environment is gone.
"""

from __future__ import annotations

import hashlib

from mwaa_control.errors import NetworkLayoutError
from mwaa_control.models import (
    EndpointAction,
    EndpointManagement,
    EndpointReconciliation,
    Environment,
    EnvironmentRef,
    EnvironmentStatus,
    ManagedEndpoint,
)
from mwaa_control.observability import logger
from mwaa_control.ports import EndpointNetwork, EnvironmentDirectory, EnvironmentLock
from mwaa_control.sqs_policy import policy_allowing_queue, policy_without_environment

TAG_MANAGED_BY = "mwaa-control:managed-by"
TAG_ENVIRONMENT_ARN = "mwaa-control:environment-arn"
TAG_ENDPOINT_ROLE = "mwaa-control:endpoint-role"


def required_services(environment: Environment) -> dict[str, str]:
    """Endpoint role -> PrivateLink service name the environment waits for."""
    services: dict[str, str] = {}
    if environment.database_vpc_endpoint_service:
        services["database"] = environment.database_vpc_endpoint_service
    if environment.webserver_vpc_endpoint_service and environment.webserver_is_private:
        services["webserver"] = environment.webserver_vpc_endpoint_service
    return services


def client_token(environment: Environment, service_name: str) -> str:
    """EC2 idempotency token: one endpoint per environment generation and service."""
    created = environment.created_at.isoformat() if environment.created_at else ""
    return hashlib.sha256(f"{environment.arn}|{created}|{service_name}".encode()).hexdigest()[:64]


class EndpointService:
    """Reconciles the endpoints of environments with what MWAA says they need."""

    def __init__(
        self,
        directory: EnvironmentDirectory,
        network: EndpointNetwork,
        lock: EnvironmentLock,
        deployment_id: str,
    ) -> None:
        self._directory = directory
        self._network = network
        self._lock = lock
        self._deployment_id = deployment_id

    def reconcile(self, ref: EnvironmentRef) -> EndpointReconciliation:
        """Bring one environment's endpoints in line with its current state."""
        with self._lock.hold(ref.arn):
            environment = self._directory.get_environment(ref)
            if environment is None:
                return self._remove(ref.arn, reason="environment no longer exists")
            if environment.status == EnvironmentStatus.DELETED:
                return self._remove(ref.arn, reason="environment is DELETED")
            if environment.endpoint_management != EndpointManagement.CUSTOMER:
                return EndpointReconciliation(
                    environment_arn=ref.arn,
                    outcome="no-op",
                    status=environment.status,
                    reason="endpoints are managed by MWAA (EndpointManagement=SERVICE)",
                )
            if environment.status != EnvironmentStatus.PENDING:
                return EndpointReconciliation(
                    environment_arn=ref.arn,
                    outcome="no-op",
                    status=environment.status,
                    reason=f"nothing to do while the environment is {environment.status}",
                )
            return self._provision(environment)

    def reconcile_fleet(self) -> list[EndpointReconciliation]:
        """Polling fallback for missed events: every listed environment, plus every environment
        that still owns endpoints of ours (which covers participant accounts and deleted ones)."""
        refs: dict[str, EnvironmentRef] = {ref.arn: ref for ref in self._directory.list_environments()}
        for endpoint in self._network.managed_endpoints():
            refs.setdefault(endpoint.environment_arn, EnvironmentRef.from_arn(endpoint.environment_arn))
        results = []
        for ref in sorted(refs.values(), key=lambda r: r.arn):
            try:
                results.append(self.reconcile(ref))
            except Exception as error:  # one broken environment must not stop the sweep of the others
                logger.exception("reconciliation failed", extra={"environment_arn": ref.arn})
                results.append(
                    EndpointReconciliation(
                        environment_arn=ref.arn, outcome="failed", reason=f"{type(error).__name__}: {error}"
                    )
                )
        return results

    def _provision(self, environment: Environment) -> EndpointReconciliation:
        subnet_ids = environment.network.subnet_ids
        if len(subnet_ids) != 2:
            raise NetworkLayoutError(f"{environment.arn} has {len(subnet_ids)} subnets; MWAA requires exactly two")
        vpc_id = self._network.vpc_of_subnets(subnet_ids)
        wanted = required_services(environment)
        existing = self._network.managed_endpoints(environment.arn)
        actions: list[EndpointAction] = []

        # Endpoints of an earlier generation of this environment (deleted and recreated under the
        # same name, as pause/resume does) point at services that no longer exist: remove them.
        stale = [e for e in existing if e.service_name not in wanted.values()]
        if stale:
            self._network.delete_endpoints([e.endpoint_id for e in stale])
            actions += [_deleted(e) for e in stale]

        for role, service_name in wanted.items():
            present = next((e for e in existing if e.service_name == service_name), None)
            if present:
                actions.append(
                    EndpointAction(action="kept", role=role, endpoint_id=present.endpoint_id, service_name=service_name)
                )
                continue
            endpoint_id = self._network.create_interface_endpoint(
                vpc_id=vpc_id,
                service_name=service_name,
                subnet_ids=subnet_ids,
                security_group_ids=environment.network.security_group_ids,
                tags={
                    "Name": f"{environment.name}-{role}",
                    TAG_MANAGED_BY: self._deployment_id,
                    TAG_ENVIRONMENT_ARN: environment.arn,
                    TAG_ENDPOINT_ROLE: role,
                },
                client_token=client_token(environment, service_name),
            )
            logger.info(
                "created interface endpoint",
                extra={"environment_arn": environment.arn, "role": role, "endpoint_id": endpoint_id},
            )
            actions.append(
                EndpointAction(action="created", role=role, endpoint_id=endpoint_id, service_name=service_name)
            )

        actions += self._open_sqs_policy(environment, vpc_id)
        return EndpointReconciliation(
            environment_arn=environment.arn,
            outcome="provisioned",
            status=environment.status,
            reason="environment is PENDING on customer-managed endpoints",
            actions=actions,
        )

    def _open_sqs_policy(self, environment: Environment, vpc_id: str) -> list[EndpointAction]:
        queue = environment.celery_executor_queue
        # Environments sharing a VPC share its SQS endpoint: read-modify-write under the VPC's lease,
        # or two environments reconciled at once would overwrite each other's statement.
        with self._lock.hold(f"sqs-policy#{vpc_id}"):
            sqs = self._network.sqs_endpoints(vpc_id)
            if not queue or not sqs:
                return [EndpointAction(action="no-sqs-endpoint")]
            actions = []
            for endpoint in sqs:
                amended = policy_allowing_queue(endpoint.policy, environment.arn, queue)
                if amended is None:
                    actions.append(EndpointAction(action="sqs-policy-ok", endpoint_id=endpoint.endpoint_id))
                    continue
                self._network.replace_endpoint_policy(endpoint.endpoint_id, amended)
                actions.append(EndpointAction(action="sqs-policy-updated", endpoint_id=endpoint.endpoint_id))
            return actions

    def _remove(self, environment_arn: str, *, reason: str) -> EndpointReconciliation:
        ours = self._network.managed_endpoints(environment_arn)
        actions: list[EndpointAction] = []
        # The SQS statement goes first: our endpoints are how a retry finds the VPC again, so they
        # must outlive any step that can fail.
        for vpc_id in sorted({e.vpc_id for e in ours}):
            with self._lock.hold(f"sqs-policy#{vpc_id}"):
                for endpoint in self._network.sqs_endpoints(vpc_id):
                    amended = policy_without_environment(endpoint.policy, environment_arn)
                    if amended is not None:
                        self._network.replace_endpoint_policy(endpoint.endpoint_id, amended)
                        actions.append(EndpointAction(action="sqs-policy-updated", endpoint_id=endpoint.endpoint_id))
        if ours:
            self._network.delete_endpoints([e.endpoint_id for e in ours])
            actions += [_deleted(e) for e in ours]
            logger.info(
                "deleted interface endpoints",
                extra={"environment_arn": environment_arn, "endpoint_ids": [e.endpoint_id for e in ours]},
            )
        return EndpointReconciliation(
            environment_arn=environment_arn,
            outcome="removed" if actions else "no-op",
            reason=reason,
            actions=actions,
        )


def _deleted(endpoint: ManagedEndpoint) -> EndpointAction:
    return EndpointAction(
        action="deleted", role=endpoint.role, endpoint_id=endpoint.endpoint_id, service_name=endpoint.service_name
    )
