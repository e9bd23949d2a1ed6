"""Customer-managed VPC endpoints of MWAA environments (shared or locked-down VPCs).

With EndpointManagement=CUSTOMER, MWAA creates its side of the PrivateLink services, enters PENDING
and waits up to 72 hours for interface endpoints to them in the environment's VPC, then fails. This
module decides, from GetEnvironment (never from the best-effort event body), which endpoints must
exist, creates the missing ones, and removes the ones it created once the environment is gone.

It never acts on what it does not own. Tags are claims anyone with ec2:CreateTags can make, so an
endpoint is deleted only when it is tagged as ours AND recorded in our registry (written when we
created it) AND connects to an MWAA PrivateLink service in our region; environments are acted on
only in the accounts and region this deployment serves; an SQS endpoint policy is amended only
where the VPC owner opted in by tagging the endpoint.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from mwaa_control.errors import EndpointPolicyNotApplied, InvalidEnvironmentReference, NetworkLayoutError
from mwaa_control.models import (
    ControlScope,
    EndpointAction,
    EndpointManagement,
    EndpointReconciliation,
    EndpointRecord,
    Environment,
    EnvironmentRef,
    EnvironmentStatus,
    ManagedEndpoint,
)
from mwaa_control.observability import logger
from mwaa_control.ports import (
    EndpointNetwork,
    EndpointRegistry,
    EnvironmentDirectory,
    EnvironmentLock,
    Lease,
    SqsEndpoint,
)
from mwaa_control.sqs_policy import policy_allowing_queue, policy_without_environment

TAG_MANAGED_BY = "mwaa-control:managed-by"
TAG_ENVIRONMENT_ARN = "mwaa-control:environment-arn"
TAG_ENDPOINT_ROLE = "mwaa-control:endpoint-role"
# Set by the VPC owner on an SQS endpoint (value: our stack name) to let us amend its policy.
TAG_AMEND_POLICY = "mwaa-control:amend-policy"

# Reads of an SQS endpoint policy after writing it, and the pauses between them (EC2 is
# eventually consistent; a policy that never reads back as written is an error, not a success).
POLICY_VERIFY_PAUSES = (0.5, 1.0, 2.0)


def is_mwaa_privatelink_service(service_name: str, region: str) -> bool:
    """MWAA's database and webserver services are PrivateLink endpoint services of the region
    (com.amazonaws.vpce.<region>.vpce-svc-<hex>); AWS service endpoints such as
    com.amazonaws.<region>.secretsmanager never qualify."""
    return re.fullmatch(rf"com\.amazonaws\.vpce\.{re.escape(region)}\.vpce-svc-[0-9a-f]+", service_name) is not None


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
        registry: EndpointRegistry,
        *,
        deployment_id: str,
        scope: ControlScope,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._directory = directory
        self._network = network
        self._lock = lock
        self._registry = registry
        self._deployment_id = deployment_id
        self._scope = scope
        self._sleep = sleep
        self._now = now

    def reconcile(self, ref: EnvironmentRef) -> EndpointReconciliation:
        """Bring one environment's endpoints in line with its current state."""
        refusal = self._scope.refusal(ref)
        if refusal:
            return EndpointReconciliation(environment_arn=ref.arn, outcome="ignored", reason=refusal)
        with self._lock.hold(ref.arn) as lease:
            environment = self._directory.get_environment(ref)
            if environment is None:
                return self._remove(ref.arn, lease, reason="environment no longer exists")
            if environment.status == EnvironmentStatus.DELETED:
                return self._remove(ref.arn, lease, reason="environment is DELETED")
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
            return self._provision(environment, lease)

    def reconcile_fleet(self) -> list[EndpointReconciliation]:
        """Polling fallback for missed events: every listed environment, plus every environment
        that still owns endpoints of ours (which covers deleted ones). An endpoint that is only
        tagged as ours, or names an environment we do not serve, is reported, never acted on."""
        refs: dict[str, EnvironmentRef] = {ref.arn: ref for ref in self._directory.list_environments()}
        tagged = [e for e in self._network.managed_endpoints() if e.environment_arn not in refs]
        registered = self._registry.lookup([e.endpoint_id for e in tagged])
        refused: list[tuple[ManagedEndpoint, str]] = []
        for endpoint in tagged:
            # Per endpoint: one bad tag is reported and skipped; it must not stop the sweep.
            try:
                ref = EnvironmentRef.from_arn(endpoint.environment_arn)
            except InvalidEnvironmentReference as error:
                refused.append((endpoint, f"its environment tag is unusable: {error}"))
                continue
            reason = self._scope.refusal(ref) or self._not_ours(endpoint, registered.get(endpoint.endpoint_id))
            if reason:
                refused.append((endpoint, reason))
            else:
                refs.setdefault(ref.arn, ref)
        # Endpoints of an environment that is visited anyway are reported in its own result.
        results = [_skipped_alone(e, reason) for e, reason in refused if e.environment_arn not in refs]
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

    # --- what is ours ---------------------------------------------------------------------------
    def _not_ours(self, endpoint: ManagedEndpoint, record: EndpointRecord | None) -> str | None:
        """Why a tagged endpoint is not one this deployment may delete, or None when it is."""
        if not is_mwaa_privatelink_service(endpoint.service_name, self._scope.region):
            return f"service {endpoint.service_name} is not an MWAA PrivateLink service of {self._scope.region}"
        if record is None:
            return "tagged as ours but not in this deployment's endpoint registry: it did not create it"
        if (record.environment_arn, record.service_name, record.vpc_id) != (
            endpoint.environment_arn,
            endpoint.service_name,
            endpoint.vpc_id,
        ):
            return (
                f"its tags or location disagree with the registry (created for {record.environment_arn}, "
                f"{record.service_name} in {record.vpc_id})"
            )
        return None

    def _owned_endpoints(self, environment_arn: str) -> tuple[list[ManagedEndpoint], list[EndpointAction]]:
        """The environment's endpoints this deployment created, and the tagged ones it did not."""
        tagged = self._network.managed_endpoints(environment_arn)
        registered = self._registry.lookup([e.endpoint_id for e in tagged])
        owned: list[ManagedEndpoint] = []
        skipped: list[EndpointAction] = []
        for endpoint in tagged:
            reason = self._not_ours(endpoint, registered.get(endpoint.endpoint_id))
            if reason is None:
                owned.append(endpoint)
                continue
            logger.warning(
                "left alone an endpoint tagged as ours",
                extra={"environment_arn": environment_arn, "endpoint_id": endpoint.endpoint_id, "reason": reason},
            )
            skipped.append(_skipped(endpoint, reason))
        return owned, skipped

    # --- provisioning -------------------------------------------------------------------------------
    def _provision(self, environment: Environment, lease: Lease) -> EndpointReconciliation:
        subnet_ids = environment.network.subnet_ids
        if len(subnet_ids) != 2:
            raise NetworkLayoutError(f"{environment.arn} has {len(subnet_ids)} subnets; MWAA requires exactly two")
        vpc_id = self._network.vpc_of_subnets(subnet_ids)
        wanted = required_services(environment)
        owned, actions = self._owned_endpoints(environment.arn)

        # Endpoints of an earlier generation of this environment (deleted and recreated under the
        # same name, as pause/resume does) point at services that no longer exist: remove them.
        stale = [e for e in owned if e.service_name not in wanted.values()]
        if stale:
            actions += self._delete(stale, lease)

        for role, service_name in wanted.items():
            present = next((e for e in owned if e.service_name == service_name), None)
            if present:
                actions.append(
                    EndpointAction(action="kept", role=role, endpoint_id=present.endpoint_id, service_name=service_name)
                )
                continue
            lease.ensure()
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
            # Right away: an endpoint we created but did not record would never be deleted by us.
            # A retry after a crash here re-creates with the same ClientToken, gets the same
            # endpoint back from EC2 and records it then.
            self._registry.register(
                EndpointRecord(
                    endpoint_id=endpoint_id,
                    environment_arn=environment.arn,
                    service_name=service_name,
                    vpc_id=vpc_id,
                    role=role,
                    created_at=self._now(),
                )
            )
            logger.info(
                "created interface endpoint",
                extra={"environment_arn": environment.arn, "role": role, "endpoint_id": endpoint_id},
            )
            actions.append(
                EndpointAction(action="created", role=role, endpoint_id=endpoint_id, service_name=service_name)
            )

        actions += self._open_sqs_policy(environment, vpc_id, lease)
        return EndpointReconciliation(
            environment_arn=environment.arn,
            outcome="provisioned",
            status=environment.status,
            reason="environment is PENDING on customer-managed endpoints",
            actions=actions,
        )

    def _opted_in(self, endpoint: SqsEndpoint) -> bool:
        return endpoint.tags.get(TAG_AMEND_POLICY) == self._deployment_id

    def _not_opted_in(self, endpoint: SqsEndpoint, consequence: str) -> EndpointAction:
        return EndpointAction(
            action="sqs-endpoint-not-opted-in",
            endpoint_id=endpoint.endpoint_id,
            reason=f"not tagged {TAG_AMEND_POLICY}={self._deployment_id} by the VPC owner; {consequence}",
        )

    def _open_sqs_policy(self, environment: Environment, vpc_id: str, lease: Lease) -> list[EndpointAction]:
        queue = environment.celery_executor_queue
        # Environments sharing a VPC share its SQS endpoint: read-modify-write under the VPC's lease,
        # or two environments reconciled at once would overwrite each other's statement.
        with self._lock.hold(f"sqs-policy#{vpc_id}") as vpc_lease:
            sqs = self._network.sqs_endpoints(vpc_id)
            if not queue or not sqs:
                return [EndpointAction(action="no-sqs-endpoint")]
            actions = []
            for endpoint in sqs:
                if not self._opted_in(endpoint):
                    actions.append(self._not_opted_in(endpoint, "its policy was left as it is"))
                    continue
                amended = policy_allowing_queue(endpoint.policy, environment.arn, queue)
                if amended is None:
                    actions.append(EndpointAction(action="sqs-policy-ok", endpoint_id=endpoint.endpoint_id))
                    continue
                self._replace_policy(
                    endpoint.endpoint_id,
                    amended,
                    (lease, vpc_lease),
                    applied=lambda policy: policy_allowing_queue(policy, environment.arn, queue) is None,
                    change=f"allow {queue}",
                )
                actions.append(EndpointAction(action="sqs-policy-updated", endpoint_id=endpoint.endpoint_id))
            return actions

    def _replace_policy(
        self,
        endpoint_id: str,
        policy: dict[str, Any],
        leases: Sequence[Lease],
        *,
        applied: Callable[[dict[str, Any]], bool],
        change: str,
    ) -> None:
        for held in leases:
            held.ensure()
        self._network.replace_endpoint_policy(endpoint_id, policy)
        for pause in (*POLICY_VERIFY_PAUSES, None):
            if applied(self._network.endpoint_policy(endpoint_id)):
                return
            if pause is not None:
                self._sleep(pause)
        raise EndpointPolicyNotApplied(
            f"SQS endpoint {endpoint_id}: the policy written to {change} did not read back as written "
            f"after {len(POLICY_VERIFY_PAUSES) + 1} reads; someone may be editing it at the same time"
        )

    # --- removal ------------------------------------------------------------------------------------
    def _delete(self, endpoints: list[ManagedEndpoint], lease: Lease) -> list[EndpointAction]:
        ids = [e.endpoint_id for e in endpoints]
        lease.ensure()
        self._network.delete_endpoints(ids)
        # Only once EC2 accepted the deletion: a record outliving its endpoint is harmless, an
        # endpoint outliving its record would never be deleted by us.
        self._registry.forget(ids)
        return [_deleted(e) for e in endpoints]

    def _remove(self, environment_arn: str, lease: Lease, *, reason: str) -> EndpointReconciliation:
        ours, skipped = self._owned_endpoints(environment_arn)
        actions: list[EndpointAction] = []
        # The SQS statement goes first: our endpoints are how a retry finds the VPC again, so they
        # must outlive any step that can fail.
        for vpc_id in sorted({e.vpc_id for e in ours}):
            with self._lock.hold(f"sqs-policy#{vpc_id}") as vpc_lease:
                for endpoint in self._network.sqs_endpoints(vpc_id):
                    amended = policy_without_environment(endpoint.policy, environment_arn)
                    if amended is None:
                        continue
                    if not self._opted_in(endpoint):
                        actions.append(self._not_opted_in(endpoint, "our statement could not be withdrawn"))
                        continue
                    self._replace_policy(
                        endpoint.endpoint_id,
                        amended,
                        (lease, vpc_lease),
                        applied=lambda policy: policy_without_environment(policy, environment_arn) is None,
                        change=f"withdraw the statement of {environment_arn}",
                    )
                    actions.append(EndpointAction(action="sqs-policy-updated", endpoint_id=endpoint.endpoint_id))
        if ours:
            actions += self._delete(ours, lease)
            logger.info(
                "deleted interface endpoints",
                extra={"environment_arn": environment_arn, "endpoint_ids": [e.endpoint_id for e in ours]},
            )
        changed = any(a.action in ("deleted", "sqs-policy-updated") for a in actions)
        if skipped:
            reason += f"; left alone {len(skipped)} endpoint(s) tagged as ours that this deployment did not create"
        return EndpointReconciliation(
            environment_arn=environment_arn,
            outcome="removed" if changed else ("skipped" if skipped else "no-op"),
            reason=reason,
            actions=actions + skipped,
        )


def _deleted(endpoint: ManagedEndpoint) -> EndpointAction:
    return EndpointAction(
        action="deleted", role=endpoint.role, endpoint_id=endpoint.endpoint_id, service_name=endpoint.service_name
    )


def _skipped(endpoint: ManagedEndpoint, reason: str) -> EndpointAction:
    return EndpointAction(
        action="skipped",
        role=endpoint.role,
        endpoint_id=endpoint.endpoint_id,
        service_name=endpoint.service_name,
        reason=reason,
    )


def _skipped_alone(endpoint: ManagedEndpoint, reason: str) -> EndpointReconciliation:
    """The report of a tagged endpoint the sweep will not act on (its environment is not visited)."""
    logger.warning(
        "left alone an endpoint tagged as ours",
        extra={"endpoint_id": endpoint.endpoint_id, "environment_arn": endpoint.environment_arn, "reason": reason},
    )
    return EndpointReconciliation(
        environment_arn=endpoint.environment_arn,
        outcome="skipped",
        reason=reason,
        actions=[_skipped(endpoint, reason)],
    )
