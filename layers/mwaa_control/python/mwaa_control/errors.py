"""Typed errors of the domain. Each carries a message an on-call engineer can act on."""


class ControlPlaneError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidEnvironmentReference(ControlPlaneError):
    """An event or request does not identify an MWAA environment unambiguously."""


class NetworkLayoutError(ControlPlaneError):
    """The environment's subnets or VPC are not usable for endpoints (wrong count, several VPCs)."""


class LockNotAcquired(ControlPlaneError):
    """Another invocation holds the environment's lease; retrying later is safe."""


class CrossAccountNotConfigured(ControlPlaneError):
    """An event came from another account but no participant role is configured to read it."""


class EndpointDeletionFailed(ControlPlaneError):
    """EC2 refused to delete one or more of our endpoints."""


class FleetReconcileIncomplete(ControlPlaneError):
    """The scheduled sweep could not reconcile some environments (the others were done)."""
