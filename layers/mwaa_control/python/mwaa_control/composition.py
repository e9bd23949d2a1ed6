"""Builds domain services from settings with their real adapters (used by handlers and the CLI)."""

from __future__ import annotations

from typing import Any

from mwaa_control.adapters.clients import DESTRUCTIVE_CONFIG, client
from mwaa_control.adapters.lock import DynamoDbLeaseLock
from mwaa_control.adapters.mwaa import MwaaDirectory
from mwaa_control.airflow.cli import MwaaCli
from mwaa_control.airflow.client import AirflowClient, airflow_major
from mwaa_control.airflow.rest import MwaaRest
from mwaa_control.endpoints.ec2 import Ec2EndpointNetwork
from mwaa_control.endpoints.registry import DynamoDbEndpointRegistry
from mwaa_control.endpoints.service import EndpointService
from mwaa_control.settings import EndpointSettings


def endpoint_service(settings: EndpointSettings) -> EndpointService:
    dynamodb = client("dynamodb", region=settings.region)
    return EndpointService(
        directory=MwaaDirectory(scope=settings.scope, participant_role_name=settings.participant_role_name),
        network=Ec2EndpointNetwork(
            client("ec2", region=settings.region),
            deployment_id=settings.deployment_id,
            region=settings.region,
            # Calls made after Lease.ensure() must end within the lease's safety margin.
            mutations=client("ec2", region=settings.region, config=DESTRUCTIVE_CONFIG),
        ),
        lock=DynamoDbLeaseLock(
            # Short timeouts: a renewal hanging for minutes would silence the heartbeat.
            client("dynamodb", region=settings.region, config=DESTRUCTIVE_CONFIG),
            settings.lock_table_name,
            lease_seconds=settings.lock_lease_seconds,
            wait_seconds=settings.lock_wait_seconds,
            safety_margin_seconds=settings.lock_safety_margin_seconds,
        ),
        registry=DynamoDbEndpointRegistry(dynamodb, settings.lock_table_name),
        deployment_id=settings.deployment_id,
        scope=settings.scope,
    )


def airflow_client(environment: str, *, region: str | None = None, mwaa: Any = None) -> AirflowClient:
    """A client for one environment; its Airflow version (2 or 3) decides paths and flags."""
    mwaa = mwaa or client("mwaa", region=region)
    version = str(mwaa.get_environment(Name=environment)["Environment"]["AirflowVersion"])
    major = airflow_major(version)
    return AirflowClient(
        MwaaCli(mwaa, environment, airflow_major=major),
        MwaaRest(mwaa, environment),
        environment=environment,
        airflow_version=version,
    )
