"""Builds domain services from settings with their real adapters (used by handlers and the CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mwaa_control.adapters.clients import DESTRUCTIVE_CONFIG, client

if TYPE_CHECKING:
    from mwaa_control.airflow.client import AirflowClient
    from mwaa_control.endpoints.service import EndpointService
    from mwaa_control.pause.rest_fallback import RestPathService
    from mwaa_control.pause.service import LifecycleService
    from mwaa_control.pause.state import PauseStateTable
    from mwaa_control.settings import EndpointSettings, LifecycleEnvironment

# Each builder imports only its own service's modules: a handler's cold start loads what that
# handler runs (the endpoint functions never load the metadata and pause packages, nor cryptography).


def endpoint_service(settings: EndpointSettings) -> EndpointService:
    from mwaa_control.adapters.lock import DynamoDbLeaseLock  # noqa: PLC0415 - see the note above
    from mwaa_control.adapters.mwaa import MwaaDirectory  # noqa: PLC0415
    from mwaa_control.endpoints.ec2 import Ec2EndpointNetwork  # noqa: PLC0415
    from mwaa_control.endpoints.registry import DynamoDbEndpointRegistry  # noqa: PLC0415
    from mwaa_control.endpoints.service import EndpointService  # noqa: PLC0415

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
    from mwaa_control.airflow.cli import MwaaCli  # noqa: PLC0415 - see the note above
    from mwaa_control.airflow.client import AirflowClient, airflow_major  # noqa: PLC0415
    from mwaa_control.airflow.rest import MwaaRest  # noqa: PLC0415

    mwaa = mwaa or client("mwaa", region=region)
    version = str(mwaa.get_environment(Name=environment)["Environment"]["AirflowVersion"])
    major = airflow_major(version)
    return AirflowClient(
        MwaaCli(mwaa, environment, airflow_major=major),
        MwaaRest(mwaa, environment),
        environment=environment,
        airflow_version=version,
    )


def _execution_running(sfn: Any) -> Any:
    def running(execution_arn: str) -> bool:
        try:
            return str(sfn.describe_execution(executionArn=execution_arn)["status"]) == "RUNNING"
        except sfn.exceptions.ExecutionDoesNotExist:
            return False

    return running


def pause_state(settings: LifecycleEnvironment) -> PauseStateTable:
    from mwaa_control.pause.state import PauseStateTable  # noqa: PLC0415 - see the note above

    return PauseStateTable(
        client("dynamodb", region=settings.region),
        settings.state_table_name,
        execution_running=_execution_running(client("stepfunctions", region=settings.region)),
    )


def lifecycle_service(settings: LifecycleEnvironment) -> LifecycleService:
    from mwaa_control.endpoints.ec2 import Ec2EndpointNetwork  # noqa: PLC0415 - see the note above
    from mwaa_control.metadata.sealing import KmsKeyService  # noqa: PLC0415
    from mwaa_control.metadata.store import S3Store  # noqa: PLC0415
    from mwaa_control.pause.service import LifecycleService, LifecycleSettings  # noqa: PLC0415

    region = settings.region
    mwaa = client("mwaa", region=region)
    network = Ec2EndpointNetwork(client("ec2", region=region), deployment_id=settings.deployment_id, region=region)

    def managed_endpoints(environment_arn: str) -> list[str]:
        return [e.endpoint_id for e in network.managed_endpoints(environment_arn) if e.state.lower() != "deleted"]

    def set_paused(environment: str, dag_id: str, paused: bool) -> None:
        airflow_client(environment, region=region, mwaa=mwaa).set_paused(dag_id, paused)

    return LifecycleService(
        mwaa=mwaa,
        state=pause_state(settings),
        store=S3Store(client("s3", region=region), settings.metadata_bucket, kms_key_id=settings.metadata_key_arn),
        keys=KmsKeyService(client("kms", region=region), settings.metadata_key_arn),
        tasks=client("stepfunctions", region=region),
        settings=LifecycleSettings(
            bucket=settings.metadata_bucket, kms_key_id=settings.metadata_key_arn, partition=settings.partition
        ),
        managed_endpoints=managed_endpoints,
        set_paused=set_paused,
    )


def rest_path_service(settings: LifecycleEnvironment) -> RestPathService:
    """The pause's REST-path fallback (Airflow 3 without worker database credentials)."""
    from mwaa_control.metadata.sealing import KmsKeyService  # noqa: PLC0415 - see the note above
    from mwaa_control.metadata.store import S3Store  # noqa: PLC0415
    from mwaa_control.pause.rest_fallback import RestPathService  # noqa: PLC0415

    region = settings.region
    mwaa = client("mwaa", region=region)
    return RestPathService(
        state=pause_state(settings),
        store=S3Store(client("s3", region=region), settings.metadata_bucket, kms_key_id=settings.metadata_key_arn),
        keys=KmsKeyService(client("kms", region=region), settings.metadata_key_arn),
        airflow_for=lambda environment: airflow_client(environment, region=region, mwaa=mwaa),
    )
