"""Typed errors of the domain. Each carries a message an on-call engineer can act on."""


class ControlPlaneError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidEnvironmentReference(ControlPlaneError):
    """An event or request does not identify an MWAA environment unambiguously."""


class EnvironmentOutOfScope(InvalidEnvironmentReference):
    """The environment is in an account, region or partition this deployment does not serve."""


class NetworkLayoutError(ControlPlaneError):
    """The environment's subnets or VPC are not usable for endpoints (wrong count, several VPCs)."""


class LockNotAcquired(ControlPlaneError):
    """Another invocation holds the environment's lease; retrying later is safe."""


class LeaseLost(ControlPlaneError):
    """Another invocation took over our lease (we could not renew it): stop before changing anything."""


class CrossAccountNotConfigured(ControlPlaneError):
    """An event came from another account but no participant role is configured to read it."""


class EndpointDeletionFailed(ControlPlaneError):
    """EC2 refused to delete one or more of our endpoints."""


class EndpointPolicyNotApplied(ControlPlaneError):
    """An SQS endpoint policy we wrote did not read back as written (retried, then given up)."""


class FleetReconcileIncomplete(ControlPlaneError):
    """The scheduled sweep could not reconcile some environments (the others were done)."""
