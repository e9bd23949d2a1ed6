"""State and lifecycle of emulated MWAA environments.

Behaviour follows the MWAA API (2020-07-01) and user guide as recorded in shared/docs/mwaa-facts.md:
CREATING -> AVAILABLE, or with customer-managed endpoints CREATING -> PENDING -> (interface endpoints
to its services exist in its VPC) CREATING -> AVAILABLE, PENDING for 72 h -> CREATE_FAILED, and
DELETING -> DELETED. Every transition emits an "MWAA Environment Status Change" event.

Each environment generation (a create; a recreate under the same name is a new generation) gets its
own real Airflow (localcloud.airflow.backend), started on first use, never before:

- Release: `AirflowVersion` exactly when `.airflow/<version>` is installed, else the local release
  of its major line (`local_release`).
- Creation (CREATING -> AVAILABLE) reads the environment's S3 objects through the `object_store`
  the emulator was given: a `PluginsS3Path` object missing at `PluginsS3ObjectVersion` (or not a
  zip), or a `RequirementsS3Path` object missing at its version or naming a distribution the
  release's virtualenv lacks (a name check, versions ignored), ends in CREATE_FAILED instead, with
  `LastUpdate.Error` saying why. Without an object store nothing is read or checked.
- First use (`airflow()`'s backend, before any CLI or REST call runs): a new metadata database
  (`airflow db migrate`) with a new Fernet key; plugins.zip unzipped into the home's plugins folder,
  which is on every Airflow process's PYTHONPATH (as on MWAA); then, once the clock has passed
  AVAILABLE + `Timings.dag_parse_delay`, every object under `SourceBucketArn`/`DagS3Path` copied into
  the DAG folder (relative paths kept) and one DAG-processor pass, so REST and CLI callers see the
  DAGs only from then on. A missing bucket or prefix syncs nothing.
- Triggered runs execute: a successful `POST /dags/{id}/dagRuns` or `PATCH /dags...` through
  InvokeRestApi, or `dags trigger` / `dags unpause` through the CLI endpoint, pokes the
  environment's scheduler stand-in (localcloud.airflow.scheduler), which runs every queued run of
  an unpaused DAG in one long-lived process in the background, with the run's conf. Task processes
  get `task_environment()` (the local cloud's moto server endpoint, region and dummy credentials).
  `wait_for_runs()` blocks until none is executing.
- DELETED: the runner is stopped and the home (database, DAGs, plugins, logs) removed.
- Metadata database: SQLite in the home, unless `postgres` is set: then each environment of Airflow
  3 gets its own PostgreSQL database on that server (as MWAA runs PostgreSQL), dropped when it is
  DELETED, and its Airflow processes (the task runner among them) get the variables MWAA 3.0.6
  workers reportedly carry: `DB_SECRETS` ({"username", "password"}), `POSTGRES_HOST`,
  `POSTGRES_PORT`, `POSTGRES_DB`. Environments named in `without_worker_credentials` get none
  (workers without credentials). Task code on Airflow 3 cannot use Airflow's ORM (runner.py).

Faults: `inject_fault(operation, ...)` answers the next calls of one operation with an error;
`inject_throttling(every=3)` refuses every third API call, whatever its operation, with
ThrottlingException (HTTP 429) until `stop_throttling()`, and counts what it refused. The quota of
environments per account and region (`quota_per_region`, 10) may be raised, as AWS raises it.
"""

from __future__ import annotations

import base64
import copy
import json
import posixpath
import re
import secrets
import shlex
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote

from localcloud.airflow.backend import AirflowBackend, AirflowNotInstalled, local_release, unsatisfied_requirements
from localcloud.clock import ManualClock
from localcloud.postgres import PostgresServer

# botocore's list, then the releases AWS's MWAA image repository already carries (mwaa-facts.md).
CREATABLE_VERSIONS = ("2.7.2", "2.8.1", "2.9.2", "2.10.1", "2.10.3", "2.11.0", "3.0.6", "2.11.2", "3.2.1", "3.3.1")
RETIRED_VERSIONS = ("1.10.12", "2.0.2", "2.2.2", "2.4.3", "2.5.1", "2.6.3")
DEFAULT_VERSION = "2.11.0"
ENVIRONMENT_CLASSES = ("mw1.micro", "mw1.small", "mw1.medium", "mw1.large", "mw1.xlarge", "mw1.2xlarge")
LOG_MODULES = ("DagProcessingLogs", "SchedulerLogs", "TaskLogs", "WebserverLogs", "WorkerLogs")
CREATE_KEYS = {
    "ExecutionRoleArn",
    "SourceBucketArn",
    "DagS3Path",
    "NetworkConfiguration",
    "PluginsS3Path",
    "PluginsS3ObjectVersion",
    "RequirementsS3Path",
    "RequirementsS3ObjectVersion",
    "StartupScriptS3Path",
    "StartupScriptS3ObjectVersion",
    "AirflowConfigurationOptions",
    "EnvironmentClass",
    "MaxWorkers",
    "KmsKey",
    "AirflowVersion",
    "LoggingConfiguration",
    "WeeklyMaintenanceWindowStart",
    "Tags",
    "WebserverAccessMode",
    "MinWorkers",
    "Schedulers",
    "EndpointManagement",
    "MinWebservers",
    "MaxWebservers",
    # botocore 1.44 (2026): IAM Identity Center sign-in and per-team DAG folders.
    "IdentityCenterConfiguration",
    "Teams",
}
UPDATE_KEYS = CREATE_KEYS - {"KmsKey", "Tags", "EndpointManagement"}
# Keys GetEnvironment returns as they were given (the others get defaults or are rebuilt).
ECHOED_KEYS = CREATE_KEYS - {
    "EnvironmentClass",
    "MaxWorkers",
    "MinWorkers",
    "Schedulers",
    "MinWebservers",
    "MaxWebservers",
    "WebserverAccessMode",
    "EndpointManagement",
    "WeeklyMaintenanceWindowStart",
    "LoggingConfiguration",
    "Tags",
    "AirflowVersion",
}
NAME = re.compile(r"^[a-zA-Z][0-9a-zA-Z_-]{0,79}$")
QUOTA_PER_REGION = 10
STATUS_CHANGE = "MWAA Environment Status Change"


class MwaaApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields


def _validation(message: str) -> MwaaApiError:
    return MwaaApiError("ValidationException", message, 400)


@dataclass(frozen=True)
class Timings:
    """How long each phase takes on the emulator's clock."""

    until_pending: timedelta = timedelta(minutes=5)
    creating: timedelta = timedelta(minutes=25)
    after_endpoints: timedelta = timedelta(minutes=15)
    pending_timeout: timedelta = timedelta(hours=72)
    deleting: timedelta = timedelta(minutes=15)
    updating: timedelta = timedelta(minutes=20)
    # After AVAILABLE, how long until the DAG processor has parsed the DAGs synced from S3: until
    # then REST and CLI callers see no DAGs (the race a restore must wait out on MWAA).
    dag_parse_delay: timedelta = timedelta(0)


class ObjectStore(Protocol):
    """The S3 objects an environment is created from (the local cloud's moto)."""

    def get(self, bucket: str, key: str, version: str | None = None) -> bytes | None:
        """The object's bytes (at `version` when given), or None if the bucket, key or version is missing."""
        ...

    def list(self, bucket: str, prefix: str) -> list[str]:
        """Keys under a prefix; [] if the bucket is missing."""
        ...


@dataclass
class EmulatedEnvironment:
    account: str
    region: str
    name: str
    config: dict[str, Any]
    created_at: datetime
    status: str = "CREATING"
    status_since: datetime | None = None
    vpc_id: str = ""
    endpoints_ready: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    last_update: dict[str, Any] | None = None
    pending_update: dict[str, Any] | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    database_service: str = field(default_factory=lambda: f"vpce-svc-{secrets.token_hex(9)[:17]}")
    webserver_service: str = field(default_factory=lambda: f"vpce-svc-{secrets.token_hex(9)[:17]}")
    available_at: datetime | None = None
    plugins_archive: bytes | None = None
    dags_parsed: bool = False

    @property
    def arn(self) -> str:
        return f"arn:aws:airflow:{self.region}:{self.account}:environment/{self.name}"

    @property
    def customer_endpoints(self) -> bool:
        return bool(self.config.get("EndpointManagement") == "CUSTOMER")

    @property
    def private_webserver(self) -> bool:
        return bool(self.config.get("WebserverAccessMode", "PRIVATE_ONLY") == "PRIVATE_ONLY")

    def service_names(self) -> dict[str, str]:
        prefix = f"com.amazonaws.vpce.{self.region}."
        names = {"database": prefix + self.database_service}
        if self.private_webserver:
            names["webserver"] = prefix + self.webserver_service
        return names

    @property
    def celery_queue(self) -> str:
        return f"arn:aws:sqs:{self.region}:{_service_account(self.region)}:airflow-celery-{self.token[:12]}"

    def describe(self) -> dict[str, Any]:
        """The Environment structure of GetEnvironment."""
        host = f"{self.token}{'-vpce' if self.private_webserver else ''}.c1.{self.region}.airflow.amazonaws.com"
        env: dict[str, Any] = {
            "Name": self.name,
            "Status": self.status,
            "Arn": self.arn,
            "CreatedAt": self.created_at.timestamp(),
            "WebserverUrl": host,
            "ServiceRoleArn": f"arn:aws:iam::{self.account}:role/aws-service-role/airflow.amazonaws.com/"
            "AWSServiceRoleForAmazonMWAA",
            "AirflowVersion": self.config.get("AirflowVersion", DEFAULT_VERSION),
            "EnvironmentClass": self.config.get("EnvironmentClass", "mw1.small"),
            "MaxWorkers": self.config.get("MaxWorkers", 10),
            "MinWorkers": self.config.get("MinWorkers", 1),
            "Schedulers": self.config.get("Schedulers", 2),
            "MinWebservers": self.config.get("MinWebservers", 2),
            "MaxWebservers": self.config.get("MaxWebservers", 2),
            "WebserverAccessMode": self.config.get("WebserverAccessMode", "PRIVATE_ONLY"),
            "EndpointManagement": self.config.get("EndpointManagement", "SERVICE"),
            "WeeklyMaintenanceWindowStart": self.config.get("WeeklyMaintenanceWindowStart", "SUN:03:30"),
            "LoggingConfiguration": self._logging(),
            "Tags": dict(self.tags),
            "CeleryExecutorQueue": self.celery_queue,
        }
        for key in sorted(ECHOED_KEYS):
            if key in self.config:
                env[key] = copy.deepcopy(self.config[key])
        if self.customer_endpoints:
            services = self.service_names()
            env["DatabaseVpcEndpointService"] = services["database"]
            if "webserver" in services:
                env["WebserverVpcEndpointService"] = services["webserver"]
        if self.last_update:
            env["LastUpdate"] = copy.deepcopy(self.last_update)
        return env

    def _logging(self) -> dict[str, Any]:
        requested = self.config.get("LoggingConfiguration", {})
        result = {}
        for module in LOG_MODULES:
            settings = requested.get(module, {"Enabled": module == "TaskLogs", "LogLevel": "INFO"})
            out = {"Enabled": settings["Enabled"], "LogLevel": settings["LogLevel"]}
            if settings["Enabled"]:
                out["CloudWatchLogGroupArn"] = (
                    f"arn:aws:logs:{self.region}:{self.account}:log-group:airflow-{self.name}-"
                    f"{module.removesuffix('Logs')}"
                )
            result[module] = out
        return result


def _bucket(arn: str) -> str:
    return str(arn).removeprefix("arn:aws:s3:::").split("/", maxsplit=1)[0]


def _service_account(region: str) -> str:
    # MWAA's Celery queues live in a service-owned account.
    return "210987654321"


_CLI_COMMON = {
    "dags": {
        "delete",
        "list",
        "list-jobs",
        "list-import-errors",
        "list-runs",
        "next-execution",
        "pause",
        "report",
        "reserialize",
        "show",
        "state",
        "test",
        "trigger",
        "unpause",
    },
    "connections": {"add", "delete"},
    "db": {"clean"},
    "roles": {"add-perms", "create", "delete", "del-perms", "export", "import", "list"},
    "tasks": {"clear", "failed-deps", "list", "render", "state", "states-for-dag-run", "test"},
    "variables": {"delete", "get", "list", "set"},
    "version": set(),
}


def _cli_supported(argv: list[str], major: int) -> bool:
    """The subset of the Airflow CLI MWAA's endpoint accepts (mwaa-facts.md, 'Invoking Airflow')."""
    if not argv:
        return False
    allowed = {group: set(subs) for group, subs in _CLI_COMMON.items()}
    if major >= 3:
        allowed["assets"] = {"list", "details", "materialize"}
        allowed["backfill"] = {"create"}
    else:
        allowed["dags"].add("backfill")
        allowed["tasks"].add("run")
    if argv[0] not in allowed:
        return False
    return not allowed[argv[0]] or (len(argv) > 1 and argv[1] in allowed[argv[0]])


# IAM, as the emulator asks it: may the caller do this action on this resource ARN?
Authorizer = Callable[[str, str, Mapping[str, str]], bool]
"""(action, resource, context): the context holds the environment's tags as aws:ResourceTag/*."""
# Airflow's built-in roles, most privileged first. InvokeRestApi is authorised against
# arn:...:role/{environment}/{role}; the caller acts as the most privileged role it may use.
AIRFLOW_ROLES = ("Admin", "Op", "User", "Viewer", "Public")
_SECURITY_PATHS = ("/users", "/roles", "/permissions")


def allow_all(action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """The default: no IAM (tests that are not about permissions)."""
    return True


def airflow_role_allows(role: str, method: str, path: str) -> bool:
    """A coarse Airflow RBAC over REST calls: Viewer and Public read; User also writes DAGs and
    their runs (trigger, mark, pause); Op also writes configuration (variables, connections,
    pools); only Admin manages users and roles. The path is normalised first, so dot segments
    cannot move a write from /dags to /variables."""
    if role == "Admin":
        return True
    target = posixpath.normpath(unquote(path))
    # Airflow's batch list endpoints (POST .../list) read, whatever their verb.
    if method == "GET" or (method == "POST" and target.endswith("/list")):
        return True
    if role in ("Viewer", "Public"):
        return False
    if role == "User":
        return target == "/dags" or target.startswith("/dags/")
    return role == "Op" and not target.startswith(_SECURITY_PATHS)


EventMode = Literal["deliver", "drop", "duplicate"]
EndpointLookup = Callable[[str, str, set[str]], bool]
SubnetLookup = Callable[[str, list[str]], list[dict[str, str]]]


@dataclass
class Fault:
    code: str
    status: int
    message: str
    remaining: int


@dataclass
class Throttling:
    """Every `every`-th MWAA API call refused with a throttling error (see `inject_throttling`)."""

    every: int
    operations: frozenset[str] | None
    """The operations counted (None: all of them)."""
    code: str = "ThrottlingException"
    status: int = 429
    message: str = "Rate exceeded"
    counted: Counter[str] = field(default_factory=Counter)
    """Calls counted so far, per operation (throttled ones included)."""
    throttled: Counter[str] = field(default_factory=Counter)
    """Calls refused so far, per operation."""

    def refuses(self, operation: str) -> bool:
        """Counts one call; True when it is the `every`-th since the last refusal."""
        if self.operations is not None and operation not in self.operations:
            return False
        self.counted[operation] += 1
        if self.counted.total() % self.every:
            return False
        self.throttled[operation] += 1
        return True


class MwaaEmulator:
    """Environments per (account, region), a lifecycle on a manual clock, events on every change."""

    def __init__(
        self,
        clock: ManualClock,
        *,
        subnet_lookup: SubnetLookup,
        endpoints_exist: EndpointLookup,
        timings: Timings | None = None,
        workdir: Path | None = None,
        authorize: Authorizer = allow_all,
        object_store: ObjectStore | None = None,
        task_environment: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.clock = clock
        # Replaceable after construction: the local cloud points it at the calling function's IAM.
        self.authorize = authorize
        self.timings = timings or Timings()
        self.event_mode: EventMode = "deliver"
        self.emitted: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self._subnet_lookup = subnet_lookup
        self._endpoints_exist = endpoints_exist
        self._environments: dict[tuple[str, str, str], EmulatedEnvironment] = {}
        self._subscribers: list[Callable[[dict[str, Any]], object]] = []
        self._faults: dict[str, list[Fault]] = {}
        self.throttling: Throttling | None = None
        """Set by inject_throttling(): what it counted and refused."""
        self.quota_per_region = QUOTA_PER_REGION
        """Environments per account and region (replaceable: a raised service quota)."""
        self._lock = threading.RLock()
        self._outbox: list[dict[str, Any]] = []
        self._owns_workdir = workdir is None
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="mwaa-emulator-"))
        self._object_store = object_store
        self._task_environment = task_environment or dict
        self._backends: dict[str, AirflowBackend] = {}
        self.postgres: PostgresServer | None = None
        """Replaceable after construction: where environments of Airflow 3 keep their metadata."""
        self.without_worker_credentials: set[str] = set()
        """Names of environments whose workers carry no database credentials (on `postgres` only)."""
        self._databases: dict[str, str] = {}
        self._tokens: dict[str, tuple[tuple[str, str, str], datetime, str]] = {}
        clock.on_advance(self.tick)

    # --- test controls -------------------------------------------------------------------
    def subscribe(self, subscriber: Callable[[dict[str, Any]], object]) -> None:
        self._subscribers.append(subscriber)

    def inject_fault(
        self,
        operation: str,
        code: str = "ThrottlingException",
        *,
        status: int = 429,
        times: int = 1,
        message: str = "Rate exceeded",
    ) -> None:
        with self._lock:
            self._faults.setdefault(operation, []).append(Fault(code, status, message, times))

    def inject_throttling(
        self,
        every: int = 3,
        *,
        operations: Iterable[str] | None = None,
        code: str = "ThrottlingException",
        status: int = 429,
        message: str = "Rate exceeded",
    ) -> Throttling:
        """From now until `stop_throttling()`, refuse every `every`-th MWAA API call with `code`
        (HTTP `status`): one counter over all operations (or over `operations` only), in the order
        the emulator receives the calls, so exactly one call in `every` is refused, whichever thread
        makes it and whatever it asks; a retry is a call like any other. The web server's CLI
        endpoint (`web_cli`) is not an API call and is never counted. Returns the counters."""
        if every < 1:
            raise ValueError("every must be at least 1")
        with self._lock:
            chosen = None if operations is None else frozenset(operations)
            self.throttling = Throttling(every, chosen, code=code, status=status, message=message)
            return self.throttling

    def stop_throttling(self) -> Throttling | None:
        """Stops refusing calls; returns what the throttling counted and refused."""
        with self._lock:
            throttling, self.throttling = self.throttling, None
            return throttling

    def environment(self, account: str, region: str, name: str) -> EmulatedEnvironment | None:
        return self._environments.get((account, region, name))

    # --- API -----------------------------------------------------------------------------
    def call(self, operation: str, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one API operation; raises MwaaApiError as the service would answer."""
        try:
            with self._lock:
                self.calls.append((operation, params.get("Name", "")))
                throttling = self.throttling
                if throttling is not None and throttling.refuses(operation):
                    raise MwaaApiError(throttling.code, throttling.message, throttling.status)
                self._raise_injected(operation)
                self._advance_lifecycles()
                handler = getattr(self, f"_op_{operation}", None)
                if handler is None:
                    raise MwaaApiError("InternalServerException", f"{operation} is not emulated", 500)
                result: dict[str, Any] = handler(account, region, params)
                return result
        finally:
            self._flush()

    def tick(self) -> None:
        with self._lock:
            self._advance_lifecycles()
        self._flush()

    def _raise_injected(self, operation: str) -> None:
        faults = self._faults.get(operation, [])
        if faults:
            fault = faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.pop(0)
            raise MwaaApiError(fault.code, fault.message, fault.status)

    def _require(self, action: str, resource: str) -> None:
        # AWS authorises before it looks anything up (a refused caller learns nothing about names),
        # with the environment's tags as aws:ResourceTag/* when it exists.
        found = next((e for k, e in self._environments.items() if self._environment_arn(*k) == resource), None)
        context = {f"aws:ResourceTag/{k}": v for k, v in found.tags.items()} if found is not None else {}
        if not self.authorize(action, resource, context):
            raise MwaaApiError(
                "AccessDeniedException", f"User is not authorized to perform: {action} on resource: {resource}", 403
            )

    @staticmethod
    def _environment_arn(account: str, region: str, name: str) -> str:
        return f"arn:aws:airflow:{region}:{account}:environment/{name}"

    def _get(self, account: str, region: str, name: str) -> EmulatedEnvironment:
        env = self._environments.get((account, region, name))
        if env is None:
            raise MwaaApiError("ResourceNotFoundException", f"Environment {name} not found", 404)
        return env

    def _op_CreateEnvironment(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        name = params.pop("Name")
        if not NAME.match(name):
            raise _validation(f"Invalid environment name {name!r}")
        if (account, region, name) in self._environments:
            raise _validation(f"An environment named {name} already exists")
        if sum(1 for k in self._environments if k[:2] == (account, region)) >= self.quota_per_region:
            raise _validation(f"Environment quota of {self.quota_per_region} per region reached")
        unknown = set(params) - CREATE_KEYS
        if unknown:
            raise _validation(f"Unknown parameters: {sorted(unknown)}")
        for required in ("ExecutionRoleArn", "SourceBucketArn", "DagS3Path", "NetworkConfiguration"):
            if not params.get(required):
                raise _validation(f"{required} is required")
        self._validate_common(params)
        tags = params.pop("Tags", {}) or {}
        bad = [k for k in tags if k.lower().startswith("aws:")]
        if bad:
            raise _validation(f"Tag keys starting with 'aws:' are reserved: {bad}")
        vpc_id = self._validate_network(account, region, params["NetworkConfiguration"])
        version = params.get("AirflowVersion", DEFAULT_VERSION)
        if version in RETIRED_VERSIONS:
            raise _validation(f"Airflow version {version} is no longer supported for new environments")
        if version not in CREATABLE_VERSIONS:
            raise _validation(f"Invalid AirflowVersion {version!r}; supported: {', '.join(CREATABLE_VERSIONS)}")
        now = self.clock.now()
        env = EmulatedEnvironment(
            account=account,
            region=region,
            name=name,
            config=params,
            created_at=now,
            status_since=now,
            vpc_id=vpc_id,
            tags=dict(tags),
        )
        self._environments[(account, region, name)] = env
        self._emit(env, previous=None)
        return {"Arn": env.arn}

    def _validate_common(self, params: dict[str, Any]) -> None:
        for key in (
            "PluginsS3Path",
            "RequirementsS3Path",
            "StartupScriptS3Path",
            "PluginsS3ObjectVersion",
            "RequirementsS3ObjectVersion",
            "StartupScriptS3ObjectVersion",
        ):
            if key in params and not params[key]:
                raise _validation(f"{key} must not be empty")
        if "EnvironmentClass" in params and params["EnvironmentClass"] not in ENVIRONMENT_CLASSES:
            raise _validation(f"Invalid EnvironmentClass {params['EnvironmentClass']!r}")
        mode = params.get("WebserverAccessMode", "PRIVATE_ONLY")
        if mode not in ("PRIVATE_ONLY", "PUBLIC_ONLY", "PUBLIC_AND_PRIVATE"):
            raise _validation(f"Invalid WebserverAccessMode {mode!r}")
        version = str(params.get("AirflowVersion", "3.2"))
        if mode == "PUBLIC_AND_PRIVATE" and tuple(int(p) for p in version.split(".")[:2]) < (3, 2):
            raise _validation("WebserverAccessMode PUBLIC_AND_PRIVATE needs Airflow 3.2 or later")
        if params.get("EndpointManagement", "SERVICE") not in ("CUSTOMER", "SERVICE"):
            raise _validation(f"Invalid EndpointManagement {params['EndpointManagement']!r}")
        min_w, max_w = params.get("MinWorkers", 1), params.get("MaxWorkers", 10)
        if not 1 <= min_w <= max_w <= 25:
            raise _validation("Workers must satisfy 1 <= MinWorkers <= MaxWorkers <= 25")
        if not 1 <= params.get("Schedulers", 2) <= 5:
            raise _validation("Schedulers must be between 1 and 5")
        logging = params.get("LoggingConfiguration", {})
        for module, settings in logging.items():
            if module not in LOG_MODULES or set(settings) != {"Enabled", "LogLevel"}:
                raise _validation(f"LoggingConfiguration.{module} takes exactly Enabled and LogLevel")

    def _validate_network(self, account: str, region: str, network: dict[str, Any]) -> str:
        subnet_ids = network.get("SubnetIds", [])
        if len(subnet_ids) != 2:
            raise _validation("NetworkConfiguration.SubnetIds must contain exactly 2 subnets")
        if not 1 <= len(network.get("SecurityGroupIds", [])) <= 5:
            raise _validation("NetworkConfiguration.SecurityGroupIds must contain 1 to 5 security groups")
        subnets = self._subnet_lookup(region, subnet_ids)
        if len(subnets) != 2:
            raise _validation(f"Subnets not found: {sorted(set(subnet_ids) - {s['SubnetId'] for s in subnets})}")
        if len({s["VpcId"] for s in subnets}) != 1:
            raise _validation("Both subnets must be in the same VPC")
        if len({s["AvailabilityZone"] for s in subnets}) != 2:
            raise _validation("The subnets must be in two different Availability Zones")
        return subnets[0]["VpcId"]

    def _op_GetEnvironment(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        self._require("airflow:GetEnvironment", self._environment_arn(account, region, params["Name"]))
        return {"Environment": self._get(account, region, params["Name"]).describe()}

    def _op_ListEnvironments(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        size = int(params.get("MaxResults", 25))
        if not 1 <= size <= 25:
            raise _validation("MaxResults must be between 1 and 25")
        names = sorted(n for (a, r, n) in self._environments if (a, r) == (account, region))
        start = int(params.get("NextToken") or 0)
        page: dict[str, Any] = {"Environments": names[start : start + size]}
        if start + size < len(names):
            page["NextToken"] = str(start + size)
        return page

    def _op_DeleteEnvironment(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        env = self._get(account, region, params["Name"])
        if env.status in ("CREATING", "UPDATING", "DELETING", "CREATING_SNAPSHOT", "ROLLING_BACK"):
            raise _validation(f"Environment {env.name} cannot be deleted while {env.status}")
        self._transition(env, "DELETING")
        return {}

    def _op_UpdateEnvironment(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        env = self._get(account, region, params.pop("Name"))
        if env.status == "CREATE_FAILED":
            raise _validation("Environments in CREATE_FAILED cannot be updated, only deleted")
        if env.status not in ("AVAILABLE", "UPDATE_FAILED"):
            raise _validation(f"Environment {env.name} cannot be updated while {env.status}")
        unknown = set(params) - UPDATE_KEYS
        if unknown:
            raise _validation(f"Unknown parameters: {sorted(unknown)}")
        self._validate_common({**env.config, **params})
        env.pending_update = params
        env.last_update = {"Status": "PENDING", "CreatedAt": self.clock.now().timestamp(), "Source": "Customer"}
        self._transition(env, "UPDATING")
        return {"Arn": env.arn}

    def _arn_target(self, account: str, region: str, arn: str) -> EmulatedEnvironment:
        match = re.match(r"^arn:aws:airflow:([a-z0-9-]+):(\d{12}):environment/(.+)$", arn)
        if not match:
            raise _validation(f"Invalid resource ARN {arn!r}")
        return self._get(match.group(2), match.group(1), match.group(3))

    def _op_ListTagsForResource(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"Tags": dict(self._arn_target(account, region, params["ResourceArn"]).tags)}

    def _op_TagResource(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        env = self._arn_target(account, region, params["ResourceArn"])
        tags = params.get("Tags", {})
        if any(k.lower().startswith("aws:") for k in tags):
            raise _validation("Tag keys starting with 'aws:' are reserved")
        env.tags.update(tags)
        return {}

    def _op_UntagResource(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        env = self._arn_target(account, region, params["ResourceArn"])
        for key in params.get("tagKeys", []):
            env.tags.pop(key, None)
        return {}

    # --- Airflow inside the environment ----------------------------------------------------
    def airflow(self, account: str, region: str, name: str) -> AirflowBackend:
        """The real Airflow behind an environment (one per environment generation). Constructing it
        costs nothing; its first `ensure_ready()` (every CLI and REST call makes one) migrates the
        database and provisions plugins and, when the parse delay has passed, the DAGs."""
        with self._lock:
            env = self._get(account, region, name)
            if env.token not in self._backends:
                release = local_release(str(env.config.get("AirflowVersion", DEFAULT_VERSION)))
                db_url, worker = self._metadata_database(env, release)
                backend = AirflowBackend(self._workdir / f"{name}-{env.token[:8]}", release=release, db_url=db_url)
                backend.extra_env = {**self._task_environment(), **worker}
                backend.before_use = lambda airflow: self._provision(env, airflow)
                self._backends[env.token] = backend
            return self._backends[env.token]

    def _metadata_database(self, env: EmulatedEnvironment, release: str) -> tuple[str | None, dict[str, str]]:
        """A PostgreSQL database of this generation's own (Airflow 3 with `postgres` set), and the
        variables its workers carry; (None, {}) for SQLite."""
        if self.postgres is None or int(release.split(".", maxsplit=1)[0]) < 3:
            return None, {}
        database = f"mwaa_{re.sub(r'[^a-z0-9]+', '_', env.name.lower())[:40]}_{env.token[:8]}"
        url = self.postgres.create_database(database)
        self._databases[env.token] = database
        if env.name in self.without_worker_credentials:
            return url, {}
        # The cluster trusts local connections: the password is random, and never needed or shown.
        secret = json.dumps({"username": self.postgres.user, "password": secrets.token_urlsafe(24)})
        return url, {
            "DB_SECRETS": secret,
            "POSTGRES_HOST": self.postgres.host,
            "POSTGRES_PORT": str(self.postgres.port),
            "POSTGRES_DB": database,
        }

    def wait_for_runs(self, account: str, region: str, name: str, timeout: float = 300) -> list[dict[str, Any]]:
        """Blocks until the environment executes no DAG run; returns the runs executed so far
        ({"dag_id", "run_id", "state"}). Raises TimeoutError, or RuntimeError if its runner failed."""
        with self._lock:
            env = self._get(account, region, name)
            backend = self._backends.get(env.token)
        return backend.wait_for_runs(timeout) if backend is not None else []

    def close(self) -> None:
        """Stops every environment's runner; removes the working directory if the emulator made it."""
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            backend.close()
        if self._owns_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _provision(self, env: EmulatedEnvironment, backend: AirflowBackend) -> None:
        """The backend's before_use hook (under its lock, never the emulator's)."""
        if env.plugins_archive is not None:
            backend.install_plugins(env.plugins_archive)
            env.plugins_archive = None
        if env.dags_parsed or env.available_at is None:
            return
        if self.clock.now() < env.available_at + self.timings.dag_parse_delay:
            return
        env.dags_parsed = True
        files = self._dag_files(env)
        if files:
            backend.write_dags(files)
            backend.run_dag_processor()

    def _dag_files(self, env: EmulatedEnvironment) -> dict[str, bytes]:
        if self._object_store is None:
            return {}
        bucket = _bucket(env.config["SourceBucketArn"])
        prefix = str(env.config["DagS3Path"]).strip("/")
        files = {}
        for key in self._object_store.list(bucket, prefix + "/" if prefix else ""):
            relative = key[len(prefix) :].lstrip("/") if prefix else key
            content = self._object_store.get(bucket, key)
            if relative and not key.endswith("/") and content is not None:
                files[relative] = content
        return files

    def _creation_error(self, env: EmulatedEnvironment) -> str | None:
        """Why creating this environment fails on its S3 objects, or None (plugins kept for first use)."""
        if self._object_store is None:
            return None
        bucket = _bucket(env.config["SourceBucketArn"])
        if env.config.get("PluginsS3Path"):
            key, version = env.config["PluginsS3Path"], env.config.get("PluginsS3ObjectVersion")
            archive = self._object_store.get(bucket, key, version)
            if archive is None:
                return f"plugins s3://{bucket}/{key}" + (f" version {version}" if version else "") + " not found"
            if not zipfile.is_zipfile(BytesIO(archive)):
                return f"plugins s3://{bucket}/{key} is not a zip archive"
            env.plugins_archive = archive
        if env.config.get("RequirementsS3Path"):
            key, version = env.config["RequirementsS3Path"], env.config.get("RequirementsS3ObjectVersion")
            requirements = self._object_store.get(bucket, key, version)
            if requirements is None:
                return f"requirements s3://{bucket}/{key}" + (f" version {version}" if version else "") + " not found"
            try:
                release = local_release(str(env.config.get("AirflowVersion", DEFAULT_VERSION)))
                missing = unsatisfied_requirements(requirements.decode(errors="replace"), release)
            except AirflowNotInstalled:
                missing = []  # no Airflow here to check against (tests that never start Airflow)
            if missing:
                return f"requirements not satisfiable: {', '.join(missing)}"
        return None

    def _retire(self, env: EmulatedEnvironment) -> None:
        """DELETED: this generation's Airflow goes, with its database."""
        backend = self._backends.pop(env.token, None)
        if backend is not None:
            backend.close(remove=True)
        database = self._databases.pop(env.token, None)
        if database is not None and self.postgres is not None and self.postgres.running:
            self.postgres.drop_database(database)

    @staticmethod
    def _schedules(method: str, path: str) -> bool:
        """Whether a successful REST call may give the scheduler a run to start (a new run, an unpause)."""
        if method == "POST":
            return re.fullmatch(r"/dags/[^/]+/dagRuns/?", path) is not None
        return method == "PATCH" and re.fullmatch(r"/dags(/[^/]+)?/?", path) is not None

    def _available(self, account: str, region: str, name: str) -> EmulatedEnvironment:
        env = self._get(account, region, name)
        if env.status not in ("AVAILABLE", "UPDATING", "UPDATE_FAILED"):
            raise _validation(f"Environment {name} is {env.status}; the web server is not available")
        return env

    def _op_CreateCliToken(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        self._require("airflow:CreateCliToken", self._environment_arn(account, region, params["Name"]))
        env = self._available(account, region, params["Name"])
        token = secrets.token_urlsafe(48)
        host = env.describe()["WebserverUrl"]
        self._tokens[token] = ((account, region, env.name), self.clock.now() + timedelta(seconds=60), host)
        return {"CliToken": token, "WebServerHostname": host}

    def _op_CreateWebLoginToken(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        env = self._available(account, region, params["Name"])
        return {
            "WebToken": secrets.token_urlsafe(48),
            "WebServerHostname": env.describe()["WebserverUrl"],
            "IamIdentity": f"arn:aws:iam::{account}:user/emulated",
            "AirflowIdentity": "assumed-role/emulated",
        }

    def _op_InvokeRestApi(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        roles = [
            role
            for role in AIRFLOW_ROLES
            if self.authorize("airflow:InvokeRestApi", f"arn:aws:airflow:{region}:{account}:role/{name}/{role}", {})
        ]
        if not roles:
            raise MwaaApiError(
                "AccessDeniedException",
                "User is not authorized to perform: airflow:InvokeRestApi on any Airflow role resource "
                f"arn:aws:airflow:{region}:{account}:role/{name}/{{Admin|Op|User|Viewer|Public}}",
                403,
            )
        env = self._available(account, region, name)
        path, method = params.get("Path", ""), params.get("Method", "")
        if not 1 <= len(path) <= 64:
            raise _validation("Path must be 1 to 64 characters")
        if not path.startswith("/") or method not in ("GET", "PUT", "POST", "PATCH", "DELETE"):
            raise _validation("Path must start with '/' and Method be GET, PUT, POST, PATCH or DELETE")
        if not airflow_role_allows(roles[0], method, path):
            raise MwaaApiError(
                "RestApiClientException",
                "Airflow REST API client error",
                400,
                RestApiStatusCode=403,
                RestApiResponse={
                    "detail": f"the {roles[0]} role may not {method} {path}",
                    "status": 403,
                    "title": "Forbidden",
                },
            )
        backend = self.airflow(account, region, env.name)
        self._lock.release()  # Airflow takes seconds; other API calls must not wait on it
        try:
            status, text = backend.rest(method, path, params.get("QueryParameters"), params.get("Body"))
            if status < 300 and self._schedules(method, path):
                backend.schedule_runs()
        finally:
            self._lock.acquire()
        try:
            document: Any = json.loads(text) if text else None
        except ValueError:
            document = text
        if status >= 500:
            raise MwaaApiError(
                "RestApiServerException",
                "Airflow REST API server error",
                400,
                RestApiStatusCode=status,
                RestApiResponse=document,
            )
        if status >= 400:
            raise MwaaApiError(
                "RestApiClientException",
                "Airflow REST API client error",
                400,
                RestApiStatusCode=status,
                RestApiResponse=document,
            )
        return {"RestApiStatusCode": status, "RestApiResponse": document}

    def web_cli(self, host: str, path: str, authorization: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The web server's /aws_mwaa/cli endpoint: (status, headers, body)."""
        with self._lock:
            self.calls.append(("WebCli", host))
            try:
                self._raise_injected("WebCli")
            except MwaaApiError as fault:
                return fault.status, {}, json.dumps({"message": fault.message}).encode()
            token = authorization.removeprefix("Bearer ").strip()
            entry = self._tokens.get(token)
            if entry is None or entry[2] != host:
                return 403, {}, b'{"message": "Forbidden"}'
            if entry[1] <= self.clock.now():
                return 403, {}, b'{"message": "Token expired"}'
            env = self._environments.get(entry[0])
            if env is None:
                return 404, {}, b'{"message": "Not found"}'
            major = int(str(env.config.get("AirflowVersion", DEFAULT_VERSION)).split(".", maxsplit=1)[0])
            if major >= 3 and path == "/aws_mwaa/cli":
                return 307, {"Location": f"https://{host}/aws_mwaa/cli/"}, b""
            if path != ("/aws_mwaa/cli/" if major >= 3 else "/aws_mwaa/cli"):
                return 404, {}, b'{"message": "Not found"}'
            try:
                argv = shlex.split(body.decode())
            except ValueError as error:
                return 400, {}, json.dumps({"message": f"Malformed command: {error}"}).encode()
            if not _cli_supported(argv, major):
                return 400, {}, json.dumps({"message": f"Command not supported: {' '.join(argv[:2])}"}).encode()
            backend = self.airflow(*entry[0])
        done = backend.cli(argv)
        if done.returncode == 0 and argv[:2] in (["dags", "trigger"], ["dags", "unpause"]):
            backend.schedule_runs()
        payload = {
            "stdout": base64.b64encode(done.stdout.encode()).decode(),
            "stderr": base64.b64encode(done.stderr.encode()).decode(),
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    # --- lifecycle -----------------------------------------------------------------------
    def _advance_lifecycles(self) -> None:
        now = self.clock.now()
        for key, env in list(self._environments.items()):
            for _ in range(6):  # several phases may have elapsed since the last look
                if not self._step(env, now):
                    break
            if env.status == "DELETED":
                del self._environments[key]

    def _step(self, env: EmulatedEnvironment, now: datetime) -> bool:
        since = env.status_since or env.created_at
        elapsed = now - since
        t = self.timings
        if env.status == "CREATING":
            if env.customer_endpoints and not env.endpoints_ready:
                if elapsed >= t.until_pending:
                    self._transition(env, "PENDING", at=since + t.until_pending)
                    return True
                return False
            duration = t.after_endpoints if env.customer_endpoints else t.creating
            if elapsed >= duration:
                error = self._creation_error(env)
                if error is not None:
                    env.last_update = {
                        "Status": "FAILED",
                        "CreatedAt": env.created_at.timestamp(),
                        "Error": {"ErrorCode": "INCORRECT_CONFIGURATION", "ErrorMessage": error},
                    }
                    self._transition(env, "CREATE_FAILED", at=since + duration)
                    return True
                env.available_at = since + duration
                self._transition(env, "AVAILABLE", at=since + duration)
                return True
        elif env.status == "PENDING":
            if self._endpoints_exist(env.region, env.vpc_id, set(env.service_names().values())):
                env.endpoints_ready = True
                self._transition(env, "CREATING", at=now)
                return True
            if elapsed >= t.pending_timeout:
                self._transition(env, "CREATE_FAILED", at=since + t.pending_timeout)
                return True
        elif env.status == "DELETING" and elapsed >= t.deleting:
            self._transition(env, "DELETED", at=since + t.deleting)
            self._retire(env)
            return True
        elif env.status == "UPDATING" and elapsed >= t.updating:
            env.config.update(env.pending_update or {})
            env.pending_update = None
            if env.last_update:
                env.last_update["Status"] = "SUCCESS"
            self._transition(env, "AVAILABLE", at=since + t.updating)
            return True
        return False

    def _transition(self, env: EmulatedEnvironment, status: str, at: datetime | None = None) -> None:
        previous = env.status
        env.status = status
        env.status_since = at or self.clock.now()
        self._emit(env, previous=previous)

    def _emit(self, env: EmulatedEnvironment, previous: str | None) -> None:
        described = env.describe()
        detail = {
            "name": env.name,
            "status": env.status,
            "previousStatus": previous,
            "airflowVersion": described["AirflowVersion"],
            "environmentClass": described["EnvironmentClass"],
            "webserverAccessMode": described["WebserverAccessMode"],
            "endpointManagement": described["EndpointManagement"],
            "subnetIds": described["NetworkConfiguration"]["SubnetIds"],
            "securityGroupIds": described["NetworkConfiguration"]["SecurityGroupIds"],
            "celeryExecutorQueue": described["CeleryExecutorQueue"],
        }
        for key, camel in (
            ("DatabaseVpcEndpointService", "databaseVpcEndpointService"),
            ("WebserverVpcEndpointService", "webserverVpcEndpointService"),
        ):
            if key in described:
                detail[camel] = described[key]
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": STATUS_CHANGE,
            "source": "aws.airflow",
            "account": env.account,
            "time": (env.status_since or self.clock.now()).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": env.region,
            "resources": [env.arn],
            "detail": detail,
        }
        self.emitted.append(event)
        if self.event_mode == "drop":
            return
        self._outbox.append(event)
        if self.event_mode == "duplicate":
            self._outbox.append(copy.deepcopy(event))

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                event = self._outbox.pop(0)
            for subscriber in list(self._subscribers):
                subscriber(event)
