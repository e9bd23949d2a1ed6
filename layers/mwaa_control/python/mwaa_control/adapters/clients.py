"""boto3 clients with the project's one retry policy (botocore standard mode) and timeouts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.loaders import Loader

RETRY_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    user_agent_appid="mwaa-control",
)

# For calls made under a lease: EC2's Create/Delete/ModifyVpcEndpoint and the lease's own renewals.
# A call that passed Lease.ensure() must end before a waiter can take the lease over, so its worst
# case (worst_case_seconds) bounds the lease's safety margin (EndpointSettings checks the relation).
# total_max_attempts, not max_attempts: botocore reads `max_attempts` as retries after the first
# attempt (and rewrites the dict in place to total_max_attempts = max_attempts + 1).
DESTRUCTIVE_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2},
    connect_timeout=2,
    read_timeout=5,
    user_agent_appid="mwaa-control",
)

# botocore's standard retry mode sleeps at most min(2**attempt, 20) s between attempts, raised by
# up to 5 s more when the service sends x-amz-retry-after.
_STANDARD_MAX_BACKOFF_SECONDS = 20
_RETRY_AFTER_MAX_ADDITIONAL_SECONDS = 5


def worst_case_seconds(config: Config) -> float:
    """The longest one call with this config can take: every attempt times out on connect and read,
    with the longest backoff between attempts."""
    retries = config.retries or {}
    if "total_max_attempts" in retries:
        attempts = int(retries["total_max_attempts"])
    else:  # botocore's meaning: retries after the first attempt (default: 2 retries in standard mode)
        attempts = int(retries.get("max_attempts", 2)) + 1
    per_attempt = float(config.connect_timeout) + float(config.read_timeout)
    backoff = sum(
        min(2.0**attempt, _STANDARD_MAX_BACKOFF_SECONDS) + _RETRY_AFTER_MAX_ADDITIONAL_SECONDS
        for attempt in range(attempts - 1)
    )
    return attempts * per_attempt + backoff


# Every client gets a session of its own (credentials and configuration read as boto3 reads them,
# the handlers botocore registers on new sessions included) but they share one data loader: each
# new session would otherwise parse the endpoint rules and the service models again. A pause step
# creates seven clients on its first invocation: 0.8-1.2 s with a loader each, 0.3-0.4 s shared.
_loader_lock = threading.Lock()
_shared_loader: list[Loader] = []


def new_session() -> boto3.session.Session:
    core = botocore.session.get_session()
    with _loader_lock:
        if _shared_loader:
            core.register_component("data_loader", _shared_loader[0])
        else:
            _shared_loader.append(core.get_component("data_loader"))
        session = boto3.session.Session(botocore_session=core)
        # boto3 appends its own data directory to the loader's search paths on every new session.
        paths = _shared_loader[0].search_paths
        paths[:] = list(dict.fromkeys(paths))
    return session


def client(
    service: str,
    *,
    region: str | None = None,
    session: boto3.session.Session | None = None,
    config: Config = RETRY_CONFIG,
) -> Any:
    return (session or new_session()).client(service, region_name=region, config=config)


def assumed_session(
    role_arn: str,
    *,
    region: str,
    session_name: str = "mwaa-control",
    sts: Any = None,
    clock: Callable[[], datetime] | None = None,
) -> boto3.session.Session:
    """A session with the credentials of a role in another account (shared-VPC participants).

    The credentials renew themselves (AssumeRole again) before they expire: a warm container keeps
    its session far longer than the hour assumed-role credentials last. ``clock`` (aware UTC) is the
    time botocore compares the expiration with; tests move it.
    """
    sts = sts or client("sts", region=region)

    def assume_role() -> dict[str, str]:
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
        expiration = credentials["Expiration"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiration.isoformat() if isinstance(expiration, datetime) else str(expiration),
        }

    credentials = DeferredRefreshableCredentials(
        refresh_using=assume_role, method="sts-assume-role", time_fetcher=clock or (lambda: datetime.now(UTC))
    )
    core = botocore.session.get_session()
    # botocore has no public setter for a session's credentials; this is how its own
    # assume-role provider and boto3's documentation examples install refreshable ones.
    core._credentials = credentials
    return boto3.session.Session(botocore_session=core, region_name=region)
