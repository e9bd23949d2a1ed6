"""LocalCloud: moto + the MWAA emulator + in-process Lambda, built from template.yaml."""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Self

import boto3
from botocore.exceptions import ClientError
from botocore.handlers import BUILTIN_HANDLERS
from moto import mock_aws
from moto.ec2.exceptions import InvalidSubnetIdError
from moto.ec2.models import ec2_backends
from moto.server import ThreadedMotoServer
from moto.stepfunctions.parser import models as sfn_parser_models
from moto.stepfunctions.parser.backend.execution import Execution as SfnExecution
from moto.stepfunctions.responses import StepFunctionResponse

from localcloud.clock import ManualClock
from localcloud.eventbus import TemplateEventRouter
from localcloud.iam import AccessDenied, Deployment, FunctionPermissions, Renderer
from localcloud.lambdas import CURRENT_FUNCTION, LocalLambda
from localcloud.mwaa.emulator import MwaaEmulator, Timings
from localcloud.mwaa.http import EmulatorWebTransport, MwaaHttpFrontend
from localcloud.postgres import free_port
from localcloud.scheduler import ScheduleFiringEngine
from localcloud.template import ROOT, FunctionSpec, functions, load_template, resources_of_type, stack_id
from mwaa_control import clock as control_clock
from mwaa_control.airflow.transport import set_default_transport

HOME_ACCOUNT = "123456789012"
# The error code each service answers a refused call with.
_DENIED = {"ec2": "UnauthorizedOperation", "dynamodb": "AccessDeniedException", "sts": "AccessDenied"}


class LocalCloud:
    """Use as a context manager; everything AWS inside it is local.

    Processes outside this one (the emulated environments' Airflow: DAG parsing, task runs) reach
    the same moto state through a moto server in this process, started on first need:
    `aws_endpoint_url()` is its URL and `task_environment()` the variables such a process gets
    (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_REGION and dummy credentials). The MWAA emulator
    reads environments' DAGs, plugins and requirements from moto's S3 (see MwaaEmulator)."""

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        stack_name: str = "mwaa-control",
        parameters: dict[str, str] | None = None,
        clock: ManualClock | None = None,
        timings: Timings | None = None,
        environment_overrides: dict[str, str] | None = None,
        fire_template_schedules: bool = False,
    ) -> None:
        """``fire_template_schedules``: create the functions' Schedule/ScheduleV2 events in moto, so
        the periodic reconcilers run on the clock as they would deployed (off by default: tests
        drive them explicitly with ``run_schedule``)."""
        self.region = region
        self.fire_template_schedules = fire_template_schedules
        self.account = HOME_ACCOUNT
        self.stack_name = stack_name
        self.parameters = parameters or {}
        self.clock = clock or ManualClock()
        self.timings = timings
        self.environment_overrides = environment_overrides or {}
        self.template = load_template()
        self.physical: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}
        self._handlers: list[tuple[str, Any]] = []
        self._session: boto3.session.Session | None = None
        self._moto_server: ThreadedMotoServer | None = None
        self._moto_url = ""
        self._server_lock = threading.Lock()
        self._arns: dict[str, str] = {}

    # --- set-up ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._set_env(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "MwaaControl",
            }
        )
        self._mock = mock_aws(
            config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
        )
        self._mock.start()
        self.emulator = MwaaEmulator(
            self.clock,
            subnet_lookup=self._subnets,
            endpoints_exist=self._endpoints_exist,
            timings=self.timings,
            object_store=MotoObjectStore(self),
            task_environment=self.task_environment,
        )
        self.lambdas = LocalLambda(functions(self.template), self.account, self.region)
        self._install("before-send.mwaa", MwaaHttpFrontend(self.emulator))
        set_default_transport(EmulatorWebTransport(self.emulator))
        self._install("before-call.lambda.Invoke", self.lambdas.before_call)
        self._deploy_resources()
        self._deploy_state_machines()
        self._set_env({**self._function_environment(), **self.environment_overrides})
        self.deployment = Deployment(
            self.template,
            stack_name=self.stack_name,
            account=self.account,
            region=self.region,
            parameters=self.parameters,
            physical={k: v for k, v in self.physical.items() if not v.startswith(("arn:", "https:"))},
        )
        self.iam = FunctionPermissions(
            self.deployment, CURRENT_FUNCTION, ec2_lookup=self._endpoint_facts, participant=self._participant_stack()
        )
        for service in _DENIED:
            self._install(f"before-parameter-build.{service}", self._authorize)
        if hasattr(self.emulator, "authorize"):
            self.emulator.authorize = self.iam.allows
        self.events = TemplateEventRouter(self.rendered_functions(), self.client("lambda"), home_account=self.account)
        self.emulator.subscribe(self.events.publish)
        # moto stores EventBridge Scheduler schedules but never fires them: this fires them on the clock.
        self.scheduler = ScheduleFiringEngine(
            self.clock,
            self.client("scheduler"),
            self.client("stepfunctions"),
            invoke_lambda=self.lambdas.invoke,
            notified=True,
        )
        self._install("after-call.scheduler", self._schedule_changed)
        if self._session is not None:  # the local cloud's own session predates the hook
            self._session._session.register("after-call.scheduler", self._schedule_changed)
        if self.fire_template_schedules:
            self._deploy_function_schedules()
        self.scheduler.attach()
        # In-process functions see this cloud's time, the time the emulated MWAA stamps.
        control_clock.install(self.clock.now)
        # moto's SendTaskFailure handler passes `error` and drops `cause`: a DAG's reason would never
        # reach the workflow (Step Functions keeps it). Patched for this cloud's lifetime.
        self._saved_send_task_failure = StepFunctionResponse.send_task_failure
        StepFunctionResponse.send_task_failure = _send_task_failure_with_cause  # type: ignore[method-assign]
        # moto stamps executions with the system clock: a step comparing `$$.Execution.StartTime`
        # with the control plane's now (a wait's limit) would mix two clocks. Stamped on this one.
        self._saved_execution = getattr(sfn_parser_models, "Execution")  # noqa: B009 - not exported
        setattr(sfn_parser_models, "Execution", _execution_on(self.clock))  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "scheduler", None) is not None:
            self.scheduler.close()  # the clock cannot drop a listener: make it a no-op
        control_clock.install(None)
        if getattr(self, "_saved_execution", None) is not None:
            setattr(sfn_parser_models, "Execution", self._saved_execution)  # noqa: B010
        if getattr(self, "_saved_send_task_failure", None) is not None:
            StepFunctionResponse.send_task_failure = self._saved_send_task_failure  # type: ignore[method-assign]
        for event_name, handler in self._handlers:
            if (event_name, handler) in BUILTIN_HANDLERS:
                BUILTIN_HANDLERS.remove((event_name, handler))
        set_default_transport(None)
        self.emulator.close()
        if self._moto_server is not None:
            self._moto_server.stop()
        self._mock.stop()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def aws_endpoint_url(self) -> str:
        """The moto server's URL (started on first call); it serves the in-process mock's state."""
        with self._server_lock:
            if self._moto_server is None:
                # The server's access log would print a line per task AWS call.
                logging.getLogger("werkzeug").setLevel(logging.ERROR)
                port = free_port()
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
                server.start()
                self._moto_server, self._moto_url = server, f"http://127.0.0.1:{port}"
            return self._moto_url

    def task_environment(self) -> dict[str, str]:
        """What an Airflow process of an emulated environment needs to reach this cloud."""
        return {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url(),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def _deploy_function_schedules(self) -> None:
        """The functions' Schedule/ScheduleV2 events, as SAM creates them: one EventBridge Scheduler
        schedule per event, targeting the function with the event's Input."""
        scheduler = self.client("scheduler")
        for logical_id, resource in resources_of_type(self.template, "AWS::Serverless::Function").items():
            for event_id, event in resource["Properties"].get("Events", {}).items():
                if event["Type"] not in ("Schedule", "ScheduleV2"):
                    continue
                props = event["Properties"]
                target: dict[str, Any] = {
                    "Arn": f"arn:aws:lambda:{self.region}:{self.account}:function:{logical_id}",
                    "RoleArn": f"arn:aws:iam::{self.account}:role/{self.stack_name}-{logical_id}-{event_id}",
                }
                if "Input" in props:
                    target["Input"] = self.resolve(props["Input"])
                scheduler.create_schedule(
                    Name=f"{self.stack_name}-{logical_id}-{event_id}"[:64],
                    ScheduleExpression=self.resolve(props["ScheduleExpression"]),
                    ScheduleExpressionTimezone=self.resolve(props.get("ScheduleExpressionTimezone", "UTC")),
                    FlexibleTimeWindow={"Mode": "OFF"},
                    Target=target,
                )

    def _schedule_changed(self, model: Any = None, **_: Any) -> None:
        """after-call hook of every EventBridge Scheduler call: writes make the engine list again."""
        name = getattr(model, "name", "")
        if name.startswith(("Create", "Update", "Delete")):
            self.scheduler.changed()

    def _install(self, event_name: str, handler: Any) -> None:
        # New sessions pick handlers up from BUILTIN_HANDLERS (as moto's stubber does); the default
        # session already exists after mock_aws starts, so it is registered there too.
        BUILTIN_HANDLERS.append((event_name, handler))
        self._handlers.append((event_name, handler))
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION._session.register(event_name, handler)

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def client(self, service: str, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = boto3.session.Session()
        return self._session.client(service, region_name=self.region, **kwargs)

    def _deploy_resources(self) -> None:
        ddb = self.client("dynamodb")
        for logical_id, resource in resources_of_type(self.template, "AWS::DynamoDB::Table").items():
            props = resource["Properties"]
            name = Renderer(self._bare_deployment()).render(props.get("TableName", f"{self.stack_name}-{logical_id}"))
            ddb.create_table(
                TableName=name,
                AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"],
                BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
            )
            self.physical[logical_id] = name
        for logical_id in resources_of_type(self.template, "AWS::KMS::Key"):
            key = self.client("kms").create_key(Description=f"{self.stack_name}-{logical_id}")["KeyMetadata"]
            self.physical[logical_id], self._arns[logical_id] = key["KeyId"], key["Arn"]
        for logical_id, resource in resources_of_type(self.template, "AWS::S3::Bucket").items():
            # As CloudFormation names a bucket without BucketName: <stack>-<logical id>-<suffix>, lowercased.
            name = f"{self.stack_name}-{logical_id}-{uuid.uuid4().hex[:12]}".lower()
            s3 = self.client("s3")
            s3.create_bucket(Bucket=name)
            versioning = resource.get("Properties", {}).get("VersioningConfiguration", {}).get("Status")
            if versioning == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            self.physical[logical_id], self._arns[logical_id] = name, f"arn:aws:s3:::{name}"
        for logical_id in resources_of_type(self.template, "AWS::SQS::Queue"):
            self.physical[logical_id] = self.client("sqs").create_queue(QueueName=f"{self.stack_name}-{logical_id}")[
                "QueueUrl"
            ]
        for logical_id in resources_of_type(self.template, "AWS::SNS::Topic"):
            self.physical[logical_id] = self.client("sns").create_topic(Name=f"{self.stack_name}-{logical_id}")[
                "TopicArn"
            ]

    def resolve(self, value: Any) -> str:
        """Resolve the intrinsic functions template environment variables use."""
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and "Ref" in value:
            ref = str(value["Ref"])
            pseudo = {
                "AWS::StackName": self.stack_name,
                "AWS::AccountId": self.account,
                "AWS::Region": self.region,
                "AWS::Partition": "aws",
                "AWS::StackId": stack_id("aws", self.region, self.account, self.stack_name),
            }
            if ref in pseudo:
                return pseudo[ref]
            if ref in self.template.get("Parameters", {}):
                return self.parameters.get(ref, str(self.template["Parameters"][ref].get("Default", "")))
            return self.physical[ref]
        if isinstance(value, dict) and "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            items: list[str] = []
            for part in parts if isinstance(parts, list) else [parts]:
                resolved = self.resolve(part)
                items += [resolved] if isinstance(part, str) else [p for p in resolved.split(",") if p]
            return str(separator).join(items)
        if isinstance(value, dict) and "Fn::Select" in value:
            index, listed = value["Fn::Select"]
            return self.resolve(listed).split(",")[int(index)]
        if isinstance(value, dict) and "Fn::Split" in value:
            separator, text = value["Fn::Split"]
            return ",".join(self.resolve(text).split(str(separator)))
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            logical_id, attribute = target if isinstance(target, list) else str(target).split(".", 1)
            resource_type = self.template["Resources"][logical_id]["Type"]
            if resource_type == "AWS::Serverless::Function" and attribute == "Arn":
                return f"arn:aws:lambda:{self.region}:{self.account}:function:{logical_id}"
            if resource_type == "AWS::IAM::Role" and attribute == "Arn":
                # The stack's roles live under its IAM path (see template.yaml's role Path).
                return f"arn:aws:iam::{self.account}:role/mwaa-control/{self.stack_name}/{logical_id}"
            if attribute == "Arn" and logical_id in self._arns:
                return self._arns[logical_id]
        raise ValueError(f"local cloud cannot resolve {value!r}")

    def _deploy_state_machines(self) -> None:
        sfn = self.client("stepfunctions")
        for logical_id, resource in resources_of_type(self.template, "AWS::Serverless::StateMachine").items():
            props = resource["Properties"]
            definition = (ROOT / props["DefinitionUri"]).read_text()
            for key, raw in props.get("DefinitionSubstitutions", {}).items():
                definition = definition.replace("${" + key + "}", self.resolve(raw))
            leftover = re.findall(r"\$\{[A-Za-z0-9_]+\}", definition)
            if leftover:
                raise ValueError(f"{logical_id}: unsubstituted placeholders {leftover}")
            self.physical[logical_id] = sfn.create_state_machine(
                name=f"{self.stack_name}-{logical_id}",
                definition=definition,
                roleArn=f"arn:aws:iam::{self.account}:role/{logical_id}Role",
            )["stateMachineArn"]

    def _function_environment(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for spec in functions(self.template).values():
            for key, raw in spec.environment.items():
                value = self.resolve(raw)
                if merged.get(key, value) != value:
                    raise ValueError(f"functions disagree on environment variable {key}")
                merged[key] = value
        return merged

    def _bare_deployment(self) -> Deployment:
        return Deployment(
            self.template,
            stack_name=self.stack_name,
            account=self.account,
            region=self.region,
            parameters=self.parameters,
        )

    def _participant_stack(self) -> Deployment:
        """participant.yaml with the parameters the owner's stack implies (its reader role name)."""
        template = load_template(ROOT / "participant.yaml")
        parameters = {"OwnerAccountId": self.account, "OwnerStackName": self.stack_name}
        if self.parameters.get("ParticipantRoleName"):
            parameters["ReaderRoleName"] = self.parameters["ParticipantRoleName"]
        return Deployment(
            template, stack_name=f"{self.stack_name}-participant", region=self.region, parameters=parameters
        )

    def rendered_functions(self) -> dict[str, FunctionSpec]:
        """The functions with their rule patterns as CloudFormation renders them (account filters)."""
        renderer = Renderer(self.deployment)
        specs = functions(self.template)
        for spec in specs.values():
            spec.event_patterns = {k: renderer.render(v) for k, v in spec.event_patterns.items()}
        return specs

    def _authorize(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """botocore before-parameter-build: a call from inside a handler needs its function's IAM."""
        service = model.service_model.endpoint_prefix
        try:
            self.iam.check(service, model.name, params)
        except AccessDenied as denied:
            code = _DENIED.get(service, "AccessDenied")
            raise ClientError({"Error": {"Code": code, "Message": str(denied)}}, model.name) from None

    def _endpoint_facts(self, endpoint_id: str) -> tuple[str, dict[str, str]]:
        for account in list(ec2_backends.keys()):
            endpoint = ec2_backends[account][self.region].vpc_end_points.get(endpoint_id)
            if endpoint is not None:
                return str(endpoint.service_name), {t["key"]: t["value"] for t in endpoint.get_tags()}
        return "", {}

    # --- moto lookups the emulator needs (MWAA sees every account's shared subnets) --------
    def _subnets(self, region: str, subnet_ids: list[str]) -> list[dict[str, str]]:
        found = []
        for account in list(ec2_backends.keys()):
            backend = ec2_backends[account][region]
            for subnet_id in subnet_ids:
                try:
                    subnet = backend.get_subnet(subnet_id)
                except InvalidSubnetIdError:
                    continue
                found.append(
                    {"SubnetId": subnet.id, "VpcId": subnet.vpc_id, "AvailabilityZone": subnet.availability_zone}
                )
        return found

    def _endpoints_exist(self, region: str, vpc_id: str, service_names: set[str]) -> bool:
        present: set[str] = set()
        for account in list(ec2_backends.keys()):
            for endpoint in ec2_backends[account][region].vpc_end_points.values():
                if endpoint.vpc_id == vpc_id and endpoint.state == "available":
                    present.add(endpoint.service_name)
        return service_names <= present

    # --- conveniences for tests and the demo ------------------------------------------------
    @contextmanager
    def participant(self, account: str) -> Iterator[boto3.session.Session]:
        """A session in another account (moto maps assumed-role keys to that account)."""
        sts = self.client("sts")
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/mwaa-admin", RoleSessionName="participant")[
            "Credentials"
        ]
        yield boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=self.region,
        )

    def run_for(self, duration: timedelta, step: timedelta = timedelta(minutes=1)) -> None:
        """Let time pass in steps, as it does: each step is a chance for events and handlers to act."""
        elapsed = timedelta(0)
        while elapsed < duration:
            self.clock.advance(min(step, duration - elapsed))
            elapsed += step

    def run_schedule(self, function: str) -> Any:
        event = {"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}
        return self.lambdas.invoke(function, event)


class MotoObjectStore:
    """The emulator's view of S3: moto, read with the local cloud's own credentials."""

    def __init__(self, cloud: LocalCloud) -> None:
        self._cloud = cloud

    def get(self, bucket: str, key: str, version: str | None = None) -> bytes | None:
        s3 = self._cloud.client("s3")
        try:
            found = s3.get_object(Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchKey", "NoSuchVersion", "InvalidArgument"):
                return None
            raise
        body: bytes = found["Body"].read()
        return body

    def list(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self._cloud.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                keys += [item["Key"] for item in page.get("Contents", [])]
        except ClientError as error:
            if error.response["Error"]["Code"] == "NoSuchBucket":
                return []
            raise
        return keys


def _execution_on(clock: ManualClock) -> type[SfnExecution]:
    """moto's execution, started at `clock`'s now (what `$$.Execution.StartTime` and
    DescribeExecution's startDate show) instead of the system clock's."""

    class ExecutionOnLocalClock(SfnExecution):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["start_date"] = clock.now()
            super().__init__(*args, **kwargs)

    return ExecutionOnLocalClock


def _send_task_failure_with_cause(self: StepFunctionResponse) -> Any:
    """SendTaskFailure as Step Functions does it: the error and its cause reach the waiting task."""
    from moto.core.responses import EmptyResult  # noqa: PLC0415 - moto's own result type

    # The interpreter's backend (the one the local cloud runs) takes the cause; the type names the base.
    self.stepfunction_backend.send_task_failure(  # type: ignore[call-arg]
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()
