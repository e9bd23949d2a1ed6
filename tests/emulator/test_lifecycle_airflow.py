"""An emulated environment's whole life with real Airflow, as a pause (back up, delete) and resume
(create, restore) cycle needs it: DAGs and plugins come from S3, deleting drops the metadata
database, a new generation gets a new migrated one with a new Fernet key, creation fails on
plugins or requirements MWAA could not install, DAGs appear only once parsed, and triggered runs
really execute inside the environment, reaching the local cloud's moto state."""

from __future__ import annotations

import io
import json
import textwrap
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from localcloud import LocalCloud
from localcloud.mwaa import Timings
from tests.conftest import SharedVpc, build_shared_vpc, create_request

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "mwaa_control" / "python"
BUCKET = "etl-environment"

# Imports mwaa_control from plugins.zip at parse time; its task writes an S3 object and reports
# through the callback contract (DynamoDB, then Step Functions), from inside Airflow.
REPORTER_DAG = textwrap.dedent(
    """
    from datetime import datetime

    from airflow import DAG
    try:
        from airflow.providers.standard.operators.python import PythonOperator
    except ImportError:
        from airflow.operators.python import PythonOperator

    from mwaa_control.airflow.callback import CONF_KEY, from_conf


    def work(**context):
        import boto3

        conf = context["dag_run"].conf or {}
        boto3.client("s3").put_object(Bucket=conf["bucket"], Key=conf["key"], Body=b"ran")
        if CONF_KEY in conf:
            from_conf(conf).success({"wrote": conf["key"]})


    with DAG("reporter", start_date=datetime(2024, 1, 1), schedule=None, catchup=False,
             is_paused_upon_creation=False):
        PythonOperator(task_id="work", python_callable=work)
    """
)
# A second DAG in a sub-folder: relative paths under DagS3Path are kept.
NESTED_DAG = textwrap.dedent(
    """
    from datetime import datetime
    from airflow import DAG
    try:
        from airflow.providers.standard.operators.empty import EmptyOperator
    except ImportError:
        from airflow.operators.empty import EmptyOperator

    with DAG("nested", start_date=datetime(2024, 1, 1), schedule=None, catchup=False):
        EmptyOperator(task_id="only")
    """
)


def plugins_zip() -> bytes:
    """The mwaa_control package as `make plugins` packs it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((PACKAGE / "mwaa_control").rglob("*.py")):
            archive.write(path, path.relative_to(PACKAGE).as_posix())
    return buffer.getvalue()


def upload_sources(cloud: LocalCloud, dags: dict[str, str], plugins: bytes | None = None) -> dict[str, str]:
    """A versioned bucket holding the environment's DAGs (and plugins.zip); the create parameters."""
    s3 = cloud.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for path, source in dags.items():
        s3.put_object(Bucket=BUCKET, Key=f"dags/{path}", Body=source.encode())
    parameters = {"SourceBucketArn": f"arn:aws:s3:::{BUCKET}", "DagS3Path": "dags"}
    if plugins is not None:
        version = s3.put_object(Bucket=BUCKET, Key="plugins.zip", Body=plugins)["VersionId"]
        parameters.update(PluginsS3Path="plugins.zip", PluginsS3ObjectVersion=version)
    return parameters


def create(cloud: LocalCloud, vpc: SharedVpc, name: str, version: str, **parameters: Any) -> str:
    request = create_request(name, vpc, EndpointManagement="SERVICE", AirflowVersion=version, **parameters)
    cloud.client("mwaa").create_environment(**request)
    cloud.run_for(timedelta(minutes=30))
    return str(cloud.client("mwaa").get_environment(Name=name)["Environment"]["Status"])


def rest(cloud: LocalCloud, name: str, method: str, path: str, **extra: Any) -> tuple[int, Any]:
    try:
        answer = cloud.client("mwaa").invoke_rest_api(Name=name, Method=method, Path=path, **extra)
    except ClientError as error:
        return int(error.response.get("RestApiStatusCode", 0)), error.response.get("RestApiResponse")
    return int(answer["RestApiStatusCode"]), answer["RestApiResponse"]


def dag_ids(cloud: LocalCloud, name: str) -> set[str]:
    status, listed = rest(cloud, name, "GET", "/dags")
    assert status == 200, listed
    return {d["dag_id"] for d in listed["dags"]}


def run_workflow(cloud: LocalCloud, name: str, conf: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    sfn = cloud.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=cloud.physical["RunDagStateMachine"],
        name=f"run-{name}",
        input=json.dumps({"environment": name, "dag_id": "reporter", "conf": conf}),
    )["executionArn"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        time.sleep(1)
    raise AssertionError(f"the workflow still waits after {timeout} s")


def test_delete_drops_the_database_and_recreate_builds_a_new_airflow_from_s3() -> None:
    with LocalCloud() as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.client("s3").create_bucket(Bucket="results")
        sources = upload_sources(cloud, {"reporter.py": REPORTER_DAG, "team/nested.py": NESTED_DAG}, plugins_zip())
        # Given an environment created from S3, whose DAGs import mwaa_control from plugins.zip
        assert create(cloud, vpc, "etl", "2.11.0", **sources) == "AVAILABLE"
        assert rest(cloud, "etl", "POST", "/variables", Body={"key": "marker", "value": "old"})[0] == 200
        first = cloud.emulator.airflow(cloud.account, cloud.region, "etl")
        assert (first.home / "airflow.db").exists() and (first.plugins_folder / "mwaa_control").is_dir()

        # When it is deleted, then its Airflow home (database, DAGs, plugins, logs) is gone
        cloud.client("mwaa").delete_environment(Name="etl")
        cloud.run_for(timedelta(minutes=20))
        assert not first.home.exists()

        # When it is created again from the same S3 objects
        assert create(cloud, vpc, "etl", "2.11.0", **sources) == "AVAILABLE"
        second = cloud.emulator.airflow(cloud.account, cloud.region, "etl")
        # Then it has a new, migrated, empty database under a new Fernet key, and the DAGs again
        assert second.home != first.home and second.fernet_key != first.fernet_key
        assert rest(cloud, "etl", "GET", "/variables/marker")[0] == 404
        assert dag_ids(cloud, "etl") == {"reporter", "nested"}
        assert rest(cloud, "etl", "GET", "/importErrors")[1]["total_entries"] == 0

        # And a DAG triggered by the run-DAG workflow runs there by itself and reports back
        described = run_workflow(cloud, "etl", {"bucket": "results", "key": "second-generation"})
        assert described["status"] == "SUCCEEDED", described
        assert json.loads(described["output"])["run"] == {"wrote": "second-generation"}
        assert cloud.client("s3").get_object(Bucket="results", Key="second-generation")["Body"].read() == b"ran"
        [executed] = cloud.emulator.wait_for_runs(cloud.account, cloud.region, "etl")
        assert (executed["dag_id"], executed["state"]) == ("reporter", "success")


def test_exact_release_parses_late_and_runs_cli_triggered_dags() -> None:
    with LocalCloud(timings=Timings(dag_parse_delay=timedelta(minutes=10))) as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.client("s3").create_bucket(Bucket="results")
        sources = upload_sources(cloud, {"reporter.py": REPORTER_DAG}, plugins_zip())
        # Given a 2.9.2 environment (installed here, so it runs 2.9.2, not the 2.x default)
        assert create(cloud, vpc, "legacy", "2.9.2", **sources) == "AVAILABLE"
        assert cloud.emulator.airflow(cloud.account, cloud.region, "legacy").release == "2.9.2"
        # When a caller looks before the DAG processor has parsed the DAG folder, the DAG is unknown
        assert rest(cloud, "legacy", "GET", "/dags/reporter")[0] == 404
        # Then once the parse delay has passed on the clock, it is there
        cloud.run_for(timedelta(minutes=10))
        status, dag = rest(cloud, "legacy", "GET", "/dags/reporter")
        assert status == 200 and dag["is_paused"] is False
        version = rest(cloud, "legacy", "GET", "/version")[1]["version"]
        assert version == "2.9.2"
        # And a run triggered through the CLI endpoint executes with its conf
        from mwaa_control.composition import airflow_client

        client = airflow_client("legacy", mwaa=cloud.client("mwaa"))
        client.trigger_dag("reporter", conf={"bucket": "results", "key": "from-cli"}, run_id="manual__cli")
        [executed] = cloud.emulator.wait_for_runs(cloud.account, cloud.region, "legacy")
        assert executed == {"dag_id": "reporter", "run_id": "manual__cli", "state": "success"}
        assert cloud.client("s3").get_object(Bucket="results", Key="from-cli")["Body"].read() == b"ran"


def test_airflow3_runs_a_dag_triggered_through_the_rest_api() -> None:
    with LocalCloud() as cloud:
        vpc = build_shared_vpc(cloud.client("ec2"))
        cloud.client("s3").create_bucket(Bucket="results")
        sources = upload_sources(cloud, {"reporter.py": REPORTER_DAG}, plugins_zip())
        assert create(cloud, vpc, "modern", "3.0.6", **sources) == "AVAILABLE"
        status, run = rest(
            cloud,
            "modern",
            "POST",
            "/dags/reporter/dagRuns",
            Body={"dag_run_id": "manual__rest", "logical_date": None, "conf": {"bucket": "results", "key": "v3"}},
        )
        assert status == 200, run
        [executed] = cloud.emulator.wait_for_runs(cloud.account, cloud.region, "modern")
        assert executed == {"dag_id": "reporter", "run_id": "manual__rest", "state": "success"}
        assert cloud.client("s3").get_object(Bucket="results", Key="v3")["Body"].read() == b"ran"
        assert rest(cloud, "modern", "GET", "/dags/reporter/dagRuns/manual__rest")[1]["state"] == "success"


def last_error(cloud: LocalCloud, name: str) -> str:
    environment = cloud.client("mwaa").get_environment(Name=name)["Environment"]
    assert environment["Status"] == "CREATE_FAILED"
    return str(environment["LastUpdate"]["Error"]["ErrorMessage"])


def test_plugins_version_that_does_not_exist_fails_creation(cloud: LocalCloud, vpc: SharedVpc) -> None:
    sources = upload_sources(cloud, {"reporter.py": REPORTER_DAG}, b"PK\x05\x06" + b"\x00" * 18)
    s3 = cloud.client("s3")
    # Given the version a paused environment recorded was deleted since (a newer one exists)
    s3.put_object(Bucket=BUCKET, Key="plugins.zip", Body=b"PK\x05\x06" + b"\x00" * 18)
    s3.delete_object(Bucket=BUCKET, Key="plugins.zip", VersionId=sources["PluginsS3ObjectVersion"])
    # When an environment is created at that version, then creation fails, as on MWAA
    assert create(cloud, vpc, "stale", "2.11.0", **sources) == "CREATE_FAILED"
    assert "plugins.zip" in last_error(cloud, "stale")
    # And at the current version it succeeds (no Airflow is started for either)
    current = s3.list_object_versions(Bucket=BUCKET, Prefix="plugins.zip")["Versions"][0]["VersionId"]
    assert create(cloud, vpc, "fresh", "2.11.0", **{**sources, "PluginsS3ObjectVersion": current}) == "AVAILABLE"
    assert cloud.emulator._backends == {}


def test_requirements_the_environment_cannot_install_fail_creation(cloud: LocalCloud, vpc: SharedVpc) -> None:
    sources = upload_sources(cloud, {})
    s3 = cloud.client("s3")
    s3.put_object(Bucket=BUCKET, Key="ok.txt", Body=b"# what the export DAG needs\nboto3\npyarrow>=14\n-c c.txt\n")
    s3.put_object(Bucket=BUCKET, Key="bad.txt", Body=b"boto3\nno-such-distribution-xyz==1.0\n")
    assert create(cloud, vpc, "ok", "2.11.0", **sources, RequirementsS3Path="ok.txt") == "AVAILABLE"
    assert create(cloud, vpc, "bad", "2.11.0", **sources, RequirementsS3Path="bad.txt") == "CREATE_FAILED"
    assert "no-such-distribution-xyz" in last_error(cloud, "bad")
