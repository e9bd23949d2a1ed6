"""Customer-managed VPC endpoints of MWAA environments (shared or locked-down VPCs).

With EndpointManagement=CUSTOMER, MWAA creates its side of the PrivateLink services, enters PENDING
and waits up to 72 hours for interface endpoints to them in the environment's VPC, then fails. This
module decides, from GetEnvironment (never from the best-effort event body), which endpoints must
exist, creates the missing ones, and removes the ones it created once the environment is gone.

It never acts on what it does not own. Tags are claims anyone with ec2:CreateTags can make, so an
endpoint is deleted only when it is tagged as ours AND recorded in our registry (written when we
created it, or vouched for by the intent written just before we created it) AND connects to an MWAA
PrivateLink service in our region; environments are acted on only in the accounts and region this
deployment serves; an SQS endpoint policy is amended only where a change is needed and the VPC
owner opted in by tagging the endpoint. Endpoints tagged by versions that kept no registry are
registered by the operator (``mwaactl endpoints adopt``), never by the automation.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from mwaa_control.endpoints.sqs_policy import policy_allowing_queue, policy_without_environment
from mwaa_control.errors import EndpointPolicyNotApplied, InvalidEnvironmentReference, NetworkLayoutError
from mwaa_control.models import (
    AdoptionCandidate,
    ControlScope,
    EndpointAction,
    EndpointIntent,
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

TAG_MANAGED_BY = "mwaa-control:managed-by"
TAG_ENVIRONMENT_ARN = "mwaa-control:environment-arn"
TAG_ENDPOINT_ROLE = "mwaa-control:endpoint-role"
# Set by the VPC owner on an SQS endpoint (value: our stack name) to let us amend its policy.
TAG_AMEND_POLICY = "mwaa-control:amend-policy"
# Our ClientToken, tagged at creation: EC2 does not return it, and it keys the endpoint's intent.
TAG_CLIENT_TOKEN = "mwaa-control:client-token"  # noqa: S105 - a tag key, not a secret

# An intent vouches only for an endpoint EC2 created after it was written; this allows for the
# difference between our clock and EC2's (both NTP-synchronised).
INTENT_CLOCK_TOLERANCE = timedelta(minutes=2)

# Statuses in which the polling fallback re-applies the SQS statement of a customer-managed
# environment (a VPC owner may opt in after the environment was created).
SQS_RECONCILED_STATUSES = (EnvironmentStatus.AVAILABLE, EnvironmentStatus.UPDATING)

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


class LeftAlone(NamedTuple):
    """What the automation reported but would not touch, counted per alarm."""

    endpoints: int  # tagged as ours but not ours to delete (someone may be probing the automation)
    sqs_endpoints_not_opted_in: int  # a change was needed but the VPC owner did not opt in


STUCK_AFTER = {"PENDING": timedelta(hours=2), "CREATING": timedelta(hours=3)}
"""How long after CreatedAt an environment may still be PENDING or CREATING before it counts as
stuck: this automation creates the endpoints of a PENDING environment within minutes (MWAA itself
gives up only after 72 hours), and a creation takes 20-30 minutes plus its PENDING time. DELETING and
UPDATING are not covered: GetEnvironment says when an environment was created, not when it began
deleting (the pause workflow's own wait limit covers the deletions the control plane starts)."""


def stuck_environments(results: Iterable[EndpointReconciliation], now: datetime) -> list[EndpointReconciliation]:
    """The environments of a sweep that have been PENDING or CREATING too long (STUCK_AFTER)."""
    return [
        r
        for r in results
        if r.status in STUCK_AFTER and r.created_at is not None and now - r.created_at > STUCK_AFTER[r.status]
    ]


def left_alone_counts(results: Iterable[EndpointReconciliation]) -> LeftAlone:
    actions = [a.action for r in results for a in r.actions]
    return LeftAlone(actions.count("skipped"), actions.count("sqs-endpoint-not-opted-in"))


def _intent_vouches_for(intent: EndpointIntent, endpoint: ManagedEndpoint) -> bool:
    return (
        (intent.environment_arn, intent.service_name, intent.vpc_id)
        == (endpoint.environment_arn, endpoint.service_name, endpoint.vpc_id)
        and endpoint.created_at is not None
        and endpoint.created_at >= intent.created_at - INTENT_CLOCK_TOLERANCE
    )


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

    def reconcile(self, ref: EnvironmentRef, *, sweep: bool = False) -> EndpointReconciliation:
        """Bring one environment's endpoints in line with its current state. ``sweep`` (the polling
        fallback): also re-apply the SQS statement of AVAILABLE/UPDATING environments."""
        refusal = self._scope.refusal(ref)
        if refusal:
            return EndpointReconciliation(environment_arn=ref.arn, outcome="ignored", reason=refusal)
        with self._lock.hold(ref.arn) as lease:
            environment = self._directory.get_environment(ref)
            result = self._reconcile_environment(ref, environment, lease, sweep)
            if environment is not None:
                result.created_at = environment.created_at
            return result

    def _reconcile_environment(
        self, ref: EnvironmentRef, environment: Environment | None, lease: Any, sweep: bool
    ) -> EndpointReconciliation:
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
        if sweep and environment.status in SQS_RECONCILED_STATUSES:
            return self._reconcile_sqs_policy(environment, lease)
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
        refs: dict[str, EnvironmentRef] = {}
        unlisted: list[EndpointReconciliation] = []
        for account in self._scope.accounts:
            # Per account: a participant whose role is missing or denied is reported as failed
            # (the sweep still ends in FleetReconcileIncomplete), the others are reconciled.
            try:
                refs.update((ref.arn, ref) for ref in self._directory.list_environments(account))
            except Exception as error:
                logger.exception("could not list environments", extra={"account": account})
                unlisted.append(
                    EndpointReconciliation(
                        environment_arn=(
                            f"arn:{self._scope.partition}:airflow:{self._scope.region}:{account}:environment/*"
                        ),
                        outcome="failed",
                        reason=f"could not list the environments of account {account}: {type(error).__name__}: {error}",
                    )
                )
        tagged = [e for e in self._network.managed_endpoints() if e.environment_arn not in refs]
        registered = self._registered(tagged)
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
        results = unlisted + [_skipped_alone(e, reason) for e, reason in refused if e.environment_arn not in refs]
        for ref in sorted(refs.values(), key=lambda r: r.arn):
            try:
                results.append(self.reconcile(ref, sweep=True))
            except Exception as error:  # one broken environment must not stop the sweep of the others
                logger.exception("reconciliation failed", extra={"environment_arn": ref.arn})
                results.append(
                    EndpointReconciliation(
                        environment_arn=ref.arn, outcome="failed", reason=f"{type(error).__name__}: {error}"
                    )
                )
        return results

    # --- adoption of endpoints tagged before the registry existed (operator-run) ----------------------
    def adoption_candidates(self) -> list[AdoptionCandidate]:
        """Every endpoint tagged as ours that has no registry record, with whether it may be
        adopted. Reads only; an environment out of scope is never read."""
        tagged = self._network.managed_endpoints()
        registered = self._registry.lookup([e.endpoint_id for e in tagged])
        environments: dict[str, Environment | None] = {}
        return [self._candidate(e, environments) for e in tagged if e.endpoint_id not in registered]

    def adopt(self, candidates: Sequence[AdoptionCandidate], *, include_gone: bool) -> list[AdoptionCandidate]:
        """Register the adoptable candidates (and, with ``include_gone``, those of environments that
        no longer exist, which the next sweep then deletes); the ones registered."""
        adopted: list[AdoptionCandidate] = []
        for candidate in candidates:
            if candidate.verdict != "adopt" and not (candidate.verdict == "gone" and include_gone):
                continue
            endpoint = candidate.endpoint
            self._registry.register(
                EndpointRecord(
                    endpoint_id=endpoint.endpoint_id,
                    environment_arn=endpoint.environment_arn,
                    service_name=endpoint.service_name,
                    vpc_id=endpoint.vpc_id,
                    role=endpoint.role,
                    created_at=endpoint.created_at or self._now(),
                )
            )
            logger.info(
                "adopted an endpoint tagged before the registry existed",
                extra={"endpoint_id": endpoint.endpoint_id, "environment_arn": endpoint.environment_arn},
            )
            adopted.append(candidate)
        return adopted

    def _candidate(self, endpoint: ManagedEndpoint, environments: dict[str, Environment | None]) -> AdoptionCandidate:
        def refused(reason: str) -> AdoptionCandidate:
            return AdoptionCandidate(endpoint=endpoint, verdict="refused", reason=reason)

        if not is_mwaa_privatelink_service(endpoint.service_name, self._scope.region):
            return refused(
                f"service {endpoint.service_name} is not an MWAA PrivateLink service of {self._scope.region}"
            )
        try:
            ref = EnvironmentRef.from_arn(endpoint.environment_arn)
        except InvalidEnvironmentReference as error:
            return refused(f"its environment tag is unusable: {error}")
        refusal = self._scope.refusal(ref)
        if refusal:
            return refused(refusal)
        if ref.arn not in environments:
            try:
                environments[ref.arn] = self._directory.get_environment(ref)
            except Exception as error:
                return refused(f"could not read {ref.arn}: {type(error).__name__}: {error}")
        environment = environments[ref.arn]
        if environment is None or environment.status == EnvironmentStatus.DELETED:
            return AdoptionCandidate(
                endpoint=endpoint,
                verdict="gone",
                reason=f"{ref.arn} no longer exists; adopt it (--include-gone) only if this deployment created it: "
                "the next sweep deletes it",
            )
        current = sorted(
            s for s in (environment.database_vpc_endpoint_service, environment.webserver_vpc_endpoint_service) if s
        )
        if endpoint.service_name not in current:
            return refused(f"{endpoint.service_name} is not a current endpoint service of {ref.arn} ({current})")
        return AdoptionCandidate(
            endpoint=endpoint, verdict="adopt", reason=f"connects to a current endpoint service of {ref.arn}"
        )

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

    def _registered(self, tagged: Sequence[ManagedEndpoint]) -> dict[str, EndpointRecord]:
        """The registry records of the tagged endpoints, by endpoint id. An endpoint we created but
        could not register (the write after CreateVpcEndpoint failed) is registered now, if the
        intent written before creating it vouches for it; each intent vouches for one endpoint."""
        registered = self._registry.lookup([e.endpoint_id for e in tagged])
        unregistered = [e for e in tagged if e.endpoint_id not in registered and e.client_token]
        if not unregistered:
            return registered
        intents = self._registry.lookup_intents([e.client_token for e in unregistered if e.client_token])
        completed: list[str] = []
        for token, intent in intents.items():
            vouched = [e for e in unregistered if e.client_token == token and _intent_vouches_for(intent, e)]
            if not vouched or not is_mwaa_privatelink_service(intent.service_name, self._scope.region):
                continue
            # The first one EC2 created: a second endpoint carrying the same token is not ours.
            endpoint = min(vouched, key=lambda e: (e.created_at or datetime.max.replace(tzinfo=UTC), e.endpoint_id))
            record = EndpointRecord(
                endpoint_id=endpoint.endpoint_id,
                environment_arn=intent.environment_arn,
                service_name=intent.service_name,
                vpc_id=intent.vpc_id,
                role=intent.role,
                created_at=intent.created_at,
            )
            self._registry.register(record)
            registered[endpoint.endpoint_id] = record
            completed.append(token)
            logger.info(
                "registered an endpoint its intent vouched for",
                extra={"environment_arn": intent.environment_arn, "endpoint_id": endpoint.endpoint_id},
            )
        if completed:
            self._registry.forget_intents(completed)
        return registered

    def _owned_endpoints(self, environment_arn: str) -> tuple[list[ManagedEndpoint], list[EndpointAction]]:
        """The environment's endpoints this deployment created, and the tagged ones it did not."""
        tagged = self._network.managed_endpoints(environment_arn)
        registered = self._registered(tagged)
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
            token = client_token(environment, service_name)
            # BEFORE creating: if the registration below fails and MWAA leaves PENDING before a
            # retry re-creates (and so registers) it, the intent still vouches for the endpoint.
            self._registry.record_intent(
                EndpointIntent(
                    client_token=token,
                    environment_arn=environment.arn,
                    service_name=service_name,
                    vpc_id=vpc_id,
                    role=role,
                    created_at=self._now(),
                )
            )
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
                    TAG_CLIENT_TOKEN: token,
                },
                client_token=token,
            )
            # Right away: an endpoint we created but did not record would depend on its intent.
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
            self._registry.forget_intents([token])
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

    def _reconcile_sqs_policy(self, environment: Environment, lease: Lease) -> EndpointReconciliation:
        """The sweep's pass over a running customer-managed environment: its endpoints are MWAA's
        concern now, but the VPC owner may have opted the SQS endpoint in since it was created."""
        if environment.endpoint_management != EndpointManagement.CUSTOMER or len(environment.network.subnet_ids) != 2:
            return EndpointReconciliation(
                environment_arn=environment.arn,
                outcome="no-op",
                status=environment.status,
                reason=f"nothing to do while the environment is {environment.status}",
            )
        vpc_id = self._network.vpc_of_subnets(environment.network.subnet_ids)
        actions = self._open_sqs_policy(environment, vpc_id, lease)
        changed = any(a.action == "sqs-policy-updated" for a in actions)
        return EndpointReconciliation(
            environment_arn=environment.arn,
            outcome="provisioned" if changed else "no-op",
            status=environment.status,
            reason=f"SQS endpoint policy reconciled while the environment is {environment.status}",
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
                # First whether a change is needed at all: a policy that already allows the queue
                # (the default full-access one, say) needs no opt-in and raises no alarm.
                amended = policy_allowing_queue(endpoint.policy, environment.arn, queue)
                if amended is None:
                    actions.append(EndpointAction(action="sqs-policy-ok", endpoint_id=endpoint.endpoint_id))
                    continue
                if not self._opted_in(endpoint):
                    actions.append(self._not_opted_in(endpoint, "its policy was left as it is"))
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
        # The write may have landed after the lease became unsafe (a slow call): then a waiter may
        # be writing too, and reading our own write back would prove nothing. Re-check, then verify.
        for held in leases:
            held.ensure()
        for pause in (*POLICY_VERIFY_PAUSES, None):
            if applied(self._network.endpoint_policy(endpoint_id)):
                for held in leases:
                    held.ensure()
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
        # Our statement may be in VPCs where we hold no endpoint of the environment (endpoints
        # that predate the registry, or deleted by hand): its Sid is derived from the environment
        # ARN, so every opted-in SQS endpoint of the account is searched for it.
        vpc_ids = {e.vpc_id for e in ours} | {
            e.vpc_id
            for e in self._network.opted_in_sqs_endpoints()
            if policy_without_environment(e.policy, environment_arn) is not None
        }
        # The SQS statement goes first: our endpoints are how a retry finds the VPC again, so they
        # must outlive any step that can fail.
        for vpc_id in sorted(vpc_ids):
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
