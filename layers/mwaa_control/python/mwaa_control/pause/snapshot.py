"""The environment a pause deletes, kept so that resume can create it again identically.

MWAA has no stop or snapshot API: pausing deletes the environment, and resuming calls
CreateEnvironment with what GetEnvironment (and ListTagsForResource) said before the deletion.
This module is the one place that maps the one to the other, and keeps the result.

Why the mapping is an explicit allow-list, checked against the botocore model by the tests:
GetEnvironment returns read-only fields (Status, Arn, the service's endpoint services, ...) that
boto3 refuses in CreateEnvironment, and output shapes that differ from the input ones (log modules
carry a log group ARN that CreateEnvironment refuses). A field MWAA adds later must fail a test
(it is neither in MAPPED nor in DROPPED) instead of silently vanishing on the first resume.

Why a snapshot is authenticated like a metadata backup: it holds the environment's Airflow
configuration options (sensitive: connection strings, secrets backends' settings) and the
execution role, network and bucket that resume gives the new environment. Whoever could write a
snapshot could choose them. So the options are sealed with a per-snapshot KMS data key wrapped
under the backup's encryption context plus mwaa-control:kind=snapshot (snapshot_context), and an HMAC (key derived
from the same data key, with its own HKDF info) covers the exact stored bytes and is checked before
the document is parsed. Snapshots live under `snapshots/`, not `backups/`: an execution role may
read `backups/<its environment>/*`, and must not read the options of its own environment (they may
name secrets it is not meant to see) nor find a snapshot where the backup engine lists backups.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from itertools import accumulate
from types import MappingProxyType
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mwaa_control.errors import ControlPlaneError
from mwaa_control.metadata.authentication import (
    NESTING,
    NOT_NESTING,
    RAW_ENVELOPE,
    BackupKey,
    backup_context,
    check_name,
)
from mwaa_control.metadata.errors import BackupCorrupt, BackupNotAuthentic, BackupNotFound, MetadataError
from mwaa_control.metadata.manifest import EnvelopeEntry
from mwaa_control.metadata.sealing import KeyService
from mwaa_control.metadata.store import BackupStore

log = logging.getLogger(__name__)

# --- the mapping -----------------------------------------------------------------------------------

LOG_MODULES: Final = ("DagProcessingLogs", "SchedulerLogs", "WebserverLogs", "WorkerLogs", "TaskLogs")
PINNED_OBJECTS: Final = (
    ("PluginsS3Path", "PluginsS3ObjectVersion"),
    ("RequirementsS3Path", "RequirementsS3ObjectVersion"),
    ("StartupScriptS3Path", "StartupScriptS3ObjectVersion"),
)
# Copied as they are when GetEnvironment has them (and they are not empty: CreateEnvironment
# rejects empty strings). The object versions are copied only with their path.
COPIED: Final = (
    "Name",
    "ExecutionRoleArn",
    "SourceBucketArn",
    "DagS3Path",
    "PluginsS3Path",
    "RequirementsS3Path",
    "StartupScriptS3Path",
    "EnvironmentClass",
    "MaxWorkers",
    "MinWorkers",
    "Schedulers",
    "MinWebservers",
    "MaxWebservers",
    "KmsKey",
    "AirflowVersion",
    "WeeklyMaintenanceWindowStart",
    "WebserverAccessMode",
    "EndpointManagement",
)
REQUIRED: Final = ("Name", "ExecutionRoleArn", "SourceBucketArn", "DagS3Path", "NetworkConfiguration")
TAGS_SOURCE: Final = "ListTagsForResource.Tags"
RESERVED_TAG_PREFIX: Final = "aws:"
OPTIONS: Final = "AirflowConfigurationOptions"

MAPPED: Final[Mapping[str, str]] = MappingProxyType(
    {
        **{name: name for name in COPIED},
        **{version: version for _, version in PINNED_OBJECTS},
        OPTIONS: OPTIONS,
        "NetworkConfiguration.SubnetIds": "NetworkConfiguration.SubnetIds",
        "NetworkConfiguration.SecurityGroupIds": "NetworkConfiguration.SecurityGroupIds",
        **{
            f"LoggingConfiguration.{module}.{member}": f"LoggingConfiguration.{module}.{member}"
            for module in LOG_MODULES
            for member in ("Enabled", "LogLevel")
        },
        "IdentityCenterConfiguration.StartUrl": "IdentityCenterConfiguration.StartUrl",
        "IdentityCenterConfiguration.IdentityStoreId": "IdentityCenterConfiguration.IdentityStoreId",
        "Teams.*.SourceBucketArn": "Teams.*.SourceBucketArn",
        "Teams.*.DagS3Path": "Teams.*.DagS3Path",
        "Tags": TAGS_SOURCE,
    }
)
"""CreateEnvironment input member (dotted path, `*` for any key of a map) -> where create_request
takes it from: a GetEnvironment `Environment` member, or ListTagsForResource's tags."""

DROPPED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Status": "read-only: the state at snapshot time (kept in the snapshot, not in the request)",
        "Arn": "read-only: derived from account, region and name (account and region kept in the snapshot)",
        "CreatedAt": "read-only: a new environment has a new creation time",
        "WebserverUrl": "read-only: a new environment gets a new webserver URL",
        "ServiceRoleArn": "read-only: MWAA's service-linked role, not a parameter",
        "LastUpdate": "read-only: the history of updates to the old environment",
        "CeleryExecutorQueue": "read-only: a new environment gets a new SQS queue",
        "DatabaseVpcEndpointService": "read-only: a new environment gets new endpoint services",
        "WebserverVpcEndpointService": "read-only: a new environment gets new endpoint services",
        **{
            f"LoggingConfiguration.{module}.CloudWatchLogGroupArn": "read-only: MWAA names the log group after "
            "the environment; CreateEnvironment takes only Enabled and LogLevel per module"
            for module in LOG_MODULES
        },
        "Tags": f"the same map as {TAGS_SOURCE}, which create_request takes as `tags` (the authoritative read)",
    }
)
"""GetEnvironment `Environment` member -> why create_request does not carry it into the request."""

NOT_RECOVERABLE: Final[Mapping[str, str]] = MappingProxyType({})
"""CreateEnvironment input member -> why no snapshot can supply it. Empty today: every input
member has a GetEnvironment counterpart. A new input-only member goes here (with the reason) or
into MAPPED; the tests fail until it is one of them."""

CREATABLE_AIRFLOW_VERSIONS: Final = frozenset(
    {"2.7.2", "2.8.1", "2.9.2", "2.10.1", "2.10.3", "2.11.0", "2.11.2", "3.0.6", "3.2.1", "3.3.1"}
)
"""Versions MWAA creates new environments at (botocore's documented list plus 2.11.2, 3.2.1 and
3.3.1 of AWS's MWAA images). Past its end of support a version cannot be created: an environment on
it cannot be paused, since it could not be resumed unchanged."""


class SnapshotError(ControlPlaneError):
    """An environment cannot be snapshotted, or a snapshot cannot be used. Nothing was changed."""


class NotCreatable(SnapshotError):
    """GetEnvironment lacks what CreateEnvironment requires: the environment could not be recreated."""


class SnapshotExists(SnapshotError, MetadataError):
    """A snapshot is already stored under this backup id; snapshots are never replaced."""


class SnapshotNotFound(SnapshotError, BackupNotFound):
    """No complete snapshot (environment.json) under this environment and backup id."""


class SnapshotNotAuthentic(SnapshotError, BackupNotAuthentic):
    """No MAC, a MAC that does not match, a data key KMS will not unwrap for the requested
    environment and backup id, or a snapshot naming another one. Nothing was changed."""


class SnapshotDamaged(SnapshotError, BackupCorrupt):
    """environment.json is oversized, nested too deep, not JSON, or not a snapshot."""


def _present(value: Any) -> bool:
    return value is not None and value not in ("", {}, [])


def _copy_present(source: Mapping[str, Any], names: Collection[str]) -> dict[str, Any]:
    return {name: source[name] for name in names if _present(source.get(name))}


def creatable_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags CreateEnvironment accepts: `aws:` keys are reserved (CloudFormation stamps them on the
    environments it creates) and tag values must not be empty."""
    return {k: v for k, v in tags.items() if not k.lower().startswith(RESERVED_TAG_PREFIX) and v != ""}


def create_request(environment: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """CreateEnvironment parameters that recreate `environment` (GetEnvironment's `Environment`)
    with `tags` (ListTagsForResource's). Raises NotCreatable when a required member is missing."""
    request = _copy_present(environment, COPIED)
    for path, version in PINNED_OBJECTS:
        # A version without its path means nothing; a path without a version takes the newest object.
        if path in request and _present(environment.get(version)):
            request[version] = environment[version]
    options = environment.get(OPTIONS) or {}
    if options:
        request[OPTIONS] = dict(options)
    network = _copy_present(environment.get("NetworkConfiguration") or {}, ("SubnetIds", "SecurityGroupIds"))
    if network:
        request["NetworkConfiguration"] = {key: list(value) for key, value in network.items()}
    logging_input = _logging_input(environment.get("LoggingConfiguration") or {})
    if logging_input:
        request["LoggingConfiguration"] = logging_input
    identity = _copy_present(environment.get("IdentityCenterConfiguration") or {}, ("StartUrl", "IdentityStoreId"))
    if identity:
        request["IdentityCenterConfiguration"] = identity
    teams = {
        team: _copy_present(config, ("SourceBucketArn", "DagS3Path"))
        for team, config in (environment.get("Teams") or {}).items()
    }
    if teams:
        request["Teams"] = teams
    kept = creatable_tags(tags)
    if kept:
        request["Tags"] = kept
    missing = [name for name in REQUIRED if name not in request]
    if missing:
        raise NotCreatable(
            f"environment {str(environment.get('Name'))[:80]!r}: GetEnvironment has no {', '.join(missing)}, "
            "which CreateEnvironment requires: it could not be recreated. Nothing was changed."
        )
    return request


def _logging_input(output: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    # CreateEnvironment requires both members of a module it is given; a module GetEnvironment
    # reports incompletely is left to MWAA's default (snapshot_notes says which).
    return {
        module: {"Enabled": settings["Enabled"], "LogLevel": settings["LogLevel"]}
        for module in LOG_MODULES
        if isinstance(settings := output.get(module), Mapping)
        and settings.get("Enabled") is not None
        and _present(settings.get("LogLevel"))
    }


def snapshot_notes(environment: Mapping[str, Any], tags: Mapping[str, str]) -> list[str]:
    """What a resume from this environment's create request will not reproduce exactly."""
    notes = [
        f"{path} has no object version: the newest object will be used on resume"
        for path, version in PINNED_OBJECTS
        if _present(environment.get(path)) and not _present(environment.get(version))
    ]
    dropped = sorted(k for k in tags if k.lower().startswith(RESERVED_TAG_PREFIX))
    if dropped:
        notes.append(
            f"{len(dropped)} reserved aws: tags ({', '.join(dropped[:5])}) are not recreated: CreateEnvironment "
            "refuses them (the environment was created by CloudFormation or another AWS service)"
        )
    empty = sorted(k for k in tags if k not in dropped and tags[k] == "")
    if empty:
        notes.append(f"tags with empty values are not recreated: {', '.join(empty[:5])}")
    output = environment.get("LoggingConfiguration") or {}
    partial = [m for m in LOG_MODULES if m in output and m not in _logging_input(output)]
    if partial:
        notes.append(f"log modules without Enabled and LogLevel take MWAA's defaults: {', '.join(partial)}")
    if environment.get("EndpointManagement") == "CUSTOMER":
        notes.append(
            "EndpointManagement is CUSTOMER: the new environment has new endpoint services and stays PENDING "
            "until interface endpoints to them exist; the old endpoints are orphans once it is deleted"
        )
    return notes


def creatable(version: str, allowed: Collection[str] = CREATABLE_AIRFLOW_VERSIONS) -> bool:
    """Whether MWAA creates environments at `version`: pausing one it does not would be final."""
    return version.strip() in allowed


# --- idempotent resume -----------------------------------------------------------------------------

_UNORDERED_LISTS: Final = ("SubnetIds", "SecurityGroupIds")


def differences(request: Mapping[str, Any], environment: Mapping[str, Any], tags: Mapping[str, str]) -> list[str]:
    """Why an existing environment is not the one `request` creates ([] when it is: resume adopts
    it). Names fields and, except for the configuration options, both values; an option's value is
    never shown, only which keys differ."""
    current = create_request(environment, tags)
    versions = {version for _, version in PINNED_OBJECTS}
    found: list[str] = []
    for name in sorted(set(request) | set(current)):
        wanted, actual = request.get(name), current.get(name)
        if name in versions and wanted is None:
            continue  # not pinned in the snapshot: whatever object MWAA took is the one asked for
        if name == OPTIONS:
            keys = _differing_keys(wanted or {}, actual or {})
            if keys:
                found.append(f"{OPTIONS} differ (keys: {', '.join(keys)})")
        elif name == "Tags":
            keys = _differing_keys(wanted or {}, actual or {})
            if keys:
                found.append(f"Tags differ (keys: {', '.join(keys)})")
        elif isinstance(wanted, Mapping) and isinstance(actual, Mapping):
            found += _nested_differences(name, wanted, actual)
        elif wanted != actual:
            found.append(f"{name}: {_shown(wanted)} in the snapshot, {_shown(actual)} in the environment")
    return found


def _differing_keys(wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(wanted) | set(actual) if wanted.get(k) != actual.get(k))


def _nested_differences(path: str, wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for key in sorted(set(wanted) | set(actual)):
        where, a, b = f"{path}.{key}", wanted.get(key), actual.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += _nested_differences(where, a, b)
        elif key in _UNORDERED_LISTS and isinstance(a, list) and isinstance(b, list):
            if sorted(a) != sorted(b):
                found.append(f"{where}: {_shown(a)} in the snapshot, {_shown(b)} in the environment")
        elif a != b:
            found.append(f"{where}: {_shown(a)} in the snapshot, {_shown(b)} in the environment")
    return found


def _shown(value: Any) -> str:
    return "absent" if value is None else repr(value)[:200]


# --- the snapshot ----------------------------------------------------------------------------------

FORMAT: Final = "mwaa-control-environment-snapshot/1"
SNAPSHOTS: Final = "snapshots"
SNAPSHOT_FILE: Final = "environment.json"
SNAPSHOT_MAC: Final = "environment.mac"
MAC_FORMAT: Final = "mwaa-control-environment-snapshot-mac/1"
ALGORITHM: Final = "HMAC-SHA256"
MAC_INFO: Final = b"mwaa-control:environment-snapshot:mac:v1"
"""Not the manifest's HKDF info: a manifest MAC can never pass for a snapshot MAC, or back."""
MAX_SNAPSHOT_BYTES: Final = 4 << 20
"""A create request is a few KB; configuration options are few and short. 4 MB is far above any."""
MAX_MAC_BYTES: Final = 4096
MAX_SNAPSHOT_DEPTH: Final = 8
"""A snapshot nests 5 levels (snapshot, request, Teams or LoggingConfiguration, entry, list)."""
ARN: Final = re.compile(r"arn:aws(?:-[a-z]+)*:airflow:([a-z0-9-]+):(\d{12}):environment/(.+)")
RAW_TAKEN_AT: Final = re.compile(rb'"taken_at"\s*:\s*"([0-9T:.+Z-]{10,40})"')


def snapshot_prefix(environment: str, backup_id: str) -> str:
    return f"{SNAPSHOTS}/{environment}/{backup_id}"


def _option_where(environment: str, backup_id: str, option: str) -> str:
    # The AEAD associated data: a sealed value cannot be moved to another option or snapshot.
    return f"snapshot/{environment}/{backup_id}/{OPTIONS}/{option}"


class EnvironmentSnapshot(BaseModel):
    """An environment as it was before a pause, with AirflowConfigurationOptions sealed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["mwaa-control-environment-snapshot/1"] = FORMAT
    environment: str
    backup_id: str
    account: str
    region: str
    taken_at: datetime
    airflow_version: str
    status: str
    """The environment's status when the snapshot was taken."""
    create_request: dict[str, Any] = Field(repr=False)
    """CreateEnvironment parameters; each AirflowConfigurationOptions value is sealed."""
    notes: list[str] = Field(default_factory=list)
    envelope: EnvelopeEntry
    """The data key that sealed the options and keys the MAC, wrapped under snapshot_context."""


KIND_KEY: Final = "mwaa-control:kind"


def snapshot_context(environment: str, backup_id: str) -> dict[str, str]:
    """A backup's encryption context plus `mwaa-control:kind=snapshot`. Execution roles may use KMS
    only with the two backup keys (EnvironmentExecutionPolicy's kms:EncryptionContextKeys), so an
    environment's own role can never unwrap its snapshot's key, and with it the sealed
    AirflowConfigurationOptions, even if it can read the object."""
    return {**backup_context(environment, backup_id), KIND_KEY: "snapshot"}


def take_snapshot(
    environment: Mapping[str, Any],
    tags: Mapping[str, str],
    keys: KeyService,
    backup_id: str,
    *,
    taken_at: datetime | None = None,
) -> EnvironmentSnapshot:
    """The snapshot of `environment` (GetEnvironment's `Environment`) for backup `backup_id`,
    its options sealed under a new data key for that environment and backup id."""
    request = create_request(environment, tags)
    name = check_name(request["Name"], "environment")
    check_name(backup_id, "backup id")
    found = ARN.fullmatch(str(environment.get("Arn") or ""))
    if found is None or found.group(3) != name:
        raise NotCreatable(f"environment {name}: its ARN does not name it ({str(environment.get('Arn'))[:200]!r})")
    context = snapshot_context(name, backup_id)
    plaintext, encrypted, key_id = keys.generate_data_key(context)
    key = BackupKey(
        plaintext, EnvelopeEntry(key_id=key_id, encrypted_key=base64.b64encode(encrypted).decode(), context=context)
    )
    sealer = key.sealer()
    if OPTIONS in request:
        request[OPTIONS] = {
            option: sealer.seal(str(value), fernet=False, where=_option_where(name, backup_id, option))
            for option, value in request[OPTIONS].items()
        }
    return EnvironmentSnapshot(
        environment=name,
        backup_id=backup_id,
        account=found.group(2),
        region=found.group(1),
        taken_at=taken_at or datetime.now(UTC),
        airflow_version=str(request.get("AirflowVersion", "")),
        status=str(environment.get("Status", "")),
        create_request=request,
        notes=snapshot_notes(environment, tags),
        envelope=key.envelope,
    )


def save_snapshot(store: BackupStore, keys: KeyService, snapshot: EnvironmentSnapshot, backup_id: str) -> None:
    """Write snapshots/{environment}/{backup_id}/: the MAC, then environment.json (the completion
    marker). The data key is unwrapped again with the context built here, so a snapshot whose key
    does not open for this environment and backup id is never written."""
    environment = check_name(snapshot.environment, "environment")
    check_name(backup_id, "backup id")
    where = f"snapshot {backup_id} of {environment}"
    if snapshot.backup_id != backup_id:
        raise SnapshotError(f"{where}: the snapshot was taken for backup {snapshot.backup_id!r}")
    prefix = snapshot_prefix(environment, backup_id)
    if store.occupied(prefix):
        raise SnapshotExists(f"{where} already exists in {store.url}; snapshots are never replaced")
    expected = snapshot_context(environment, backup_id)
    if snapshot.envelope.context != expected:
        raise SnapshotNotAuthentic(f"{where}: its data key was wrapped for {snapshot.envelope.context}")
    key = _unwrap(keys, snapshot.envelope.key_id, snapshot.envelope.encrypted_key, expected, where)
    raw = snapshot.model_dump_json(indent=2).encode()
    document = {"format": MAC_FORMAT, "algorithm": ALGORITHM, "mac": _mac(key.data_key, raw)}
    store.put_bytes(f"{prefix}/{SNAPSHOT_MAC}", json.dumps(document, indent=1).encode())
    store.put_bytes(f"{prefix}/{SNAPSHOT_FILE}", raw)


def load_snapshot(
    store: BackupStore, keys: KeyService, environment: str, backup_id: str
) -> tuple[EnvironmentSnapshot, dict[str, Any]]:
    """The authenticated snapshot of `environment` for `backup_id`, and its create request with
    the configuration options unsealed (pass it to CreateEnvironment; never log it)."""
    check_name(environment, "environment")
    check_name(backup_id, "backup id")
    prefix = snapshot_prefix(environment, backup_id)
    where = f"snapshot {backup_id} of {environment}"
    if not store.exists(f"{prefix}/{SNAPSHOT_FILE}"):
        raise SnapshotNotFound(f"{where}: no {SNAPSHOT_FILE} in {store.url} (never taken, or not completed)")
    raw = store.get_bytes(f"{prefix}/{SNAPSHOT_FILE}")
    if len(raw) > MAX_SNAPSHOT_BYTES:
        raise SnapshotDamaged(f"{where}: {SNAPSHOT_FILE} is {len(raw)} bytes, more than any real snapshot")
    _check_depth(raw, where)
    mac = _read_mac(store, prefix, where)
    expected = snapshot_context(environment, backup_id)
    key = _unwrap(keys, *_raw_envelope(raw, where), expected, where)
    if not hmac.compare_digest(_mac(key.data_key, raw), mac):
        raise SnapshotNotAuthentic(
            f"{where}: {SNAPSHOT_MAC} does not match {SNAPSHOT_FILE}: it was altered after it was written, or "
            "was not written by the control plane. Nothing was changed."
        )
    snapshot = _parse(raw, where)
    if snapshot.environment != environment or snapshot.backup_id != backup_id or snapshot.envelope.context != expected:
        raise SnapshotNotAuthentic(
            f"{where}: the file names snapshot {snapshot.backup_id[:80]!r} of {snapshot.environment[:80]!r}, "
            "not the one requested. Nothing was changed."
        )
    request = copy.deepcopy(snapshot.create_request)
    if request.get("Name") != environment:
        raise SnapshotNotAuthentic(f"{where}: its create request names another environment. Nothing was changed.")
    sealed = request.get(OPTIONS)
    if sealed is not None:
        if not isinstance(sealed, dict):
            raise SnapshotDamaged(f"{where}: {OPTIONS} is not a map. Nothing was changed.")
        sealer = key.sealer()
        try:
            request[OPTIONS] = {
                option: sealer.unseal(str(value), where=_option_where(environment, backup_id, option))[0]
                for option, value in sealed.items()
            }
        except (MetadataError, ValueError, binascii.Error) as error:
            raise SnapshotDamaged(f"{where}: a configuration option cannot be unsealed ({error})") from None
    return snapshot, request


def latest_snapshot(store: BackupStore, keys: KeyService, environment: str) -> str | None:
    """The backup id of the newest AUTHENTICATED snapshot of `environment`; None when there is none.
    Damaged and forged ones are skipped (a forged time only puts a forgery first, where it fails)."""
    check_name(environment, "environment")
    candidates: list[tuple[datetime, str]] = []
    for backup_id in store.list_prefixes(f"{SNAPSHOTS}/{environment}"):
        candidates.append((_claimed_taken_at(store, environment, backup_id), backup_id))
    for _, backup_id in sorted(candidates, reverse=True):
        try:
            load_snapshot(store, keys, environment, backup_id)
        except (SnapshotError, MetadataError) as error:
            log.warning("skipping snapshot %s of %s: %s", backup_id[:80], environment, type(error).__name__)
            continue
        return backup_id
    return None


def _claimed_taken_at(store: BackupStore, environment: str, backup_id: str) -> datetime:
    """Only to order candidates: read from the raw bytes, nothing parsed before its MAC."""
    earliest = datetime.min.replace(tzinfo=UTC)
    try:
        key = f"{snapshot_prefix(environment, backup_id)}/{SNAPSHOT_FILE}"
        raw = store.get_bytes(key) if store.exists(key) else b""
    except Exception:  # an unreadable snapshot is tried last, and skipped there
        return earliest
    found = RAW_TAKEN_AT.search(raw[:MAX_SNAPSHOT_BYTES])
    if found is None:
        return earliest
    try:
        moment = datetime.fromisoformat(found.group(1).decode("ascii").replace("Z", "+00:00"))
    except ValueError:
        return earliest
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- authentication (the manifest's scheme, with the snapshot's own MAC key) ------------------------


def _mac(data_key: bytes, raw: bytes) -> str:
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MAC_INFO).derive(data_key)
    return hmac.new(mac_key, raw, hashlib.sha256).hexdigest()


def _read_mac(store: BackupStore, prefix: str, where: str) -> str:
    if not store.exists(f"{prefix}/{SNAPSHOT_MAC}"):
        raise SnapshotNotAuthentic(f"{where} has no {SNAPSHOT_MAC}: nothing proves who wrote it. Nothing was changed.")
    raw = store.get_bytes(f"{prefix}/{SNAPSHOT_MAC}")
    try:
        if len(raw) > MAX_MAC_BYTES:
            raise ValueError("too large")
        document = json.loads(raw)
        if document.get("format") != MAC_FORMAT or document.get("algorithm") != ALGORITHM:
            raise ValueError("another format or algorithm")
        mac = document["mac"]
        if not isinstance(mac, str) or not re.fullmatch(r"[0-9a-f]{64}", mac):
            raise ValueError("the MAC is not 64 hex digits")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise SnapshotNotAuthentic(
            f"{where}: {SNAPSHOT_MAC} is not a MAC document ({str(error)[:200]}). Nothing was changed."
        ) from None
    return mac


def _raw_envelope(raw: bytes, where: str) -> tuple[str, str]:
    """The wrapped data key, found by a pattern in the unparsed bytes: KMS checks it against the
    context, and the MAC then checks every byte."""
    found = RAW_ENVELOPE.search(raw)
    if found is None:
        raise SnapshotDamaged(f"{where}: {SNAPSHOT_FILE} has no data key envelope. Nothing was changed.")
    try:
        return found.group(1).decode("ascii"), found.group(2).decode("ascii")
    except UnicodeDecodeError:
        raise SnapshotDamaged(f"{where}: the data key envelope is not ASCII. Nothing was changed.") from None


def _unwrap(keys: KeyService, key_id: str, encrypted: str, context: dict[str, str], where: str) -> BackupKey:
    try:
        blob = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise SnapshotNotAuthentic(f"{where}: the data key envelope is not base64. Nothing was changed.") from None
    try:
        plaintext = keys.decrypt_data_key(blob, context)
    except Exception as error:
        response: Any = getattr(error, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        raise SnapshotNotAuthentic(
            f"{where}: KMS refused to unwrap its data key for {context} ({code or type(error).__name__}): it was not "
            "written for this environment and backup id, or not under this KMS key. Nothing was changed."
        ) from None
    return BackupKey(plaintext, EnvelopeEntry(key_id=key_id, encrypted_key=encrypted, context=dict(context)))


def _check_depth(raw: bytes, where: str) -> None:
    """Nesting counted without parsing (strings removed, brackets summed), as for manifests."""
    brackets = NOT_NESTING.sub(b"", raw)
    if max(accumulate(map(NESTING.__getitem__, brackets)), default=0) > MAX_SNAPSHOT_DEPTH:
        raise SnapshotDamaged(f"{where}: {SNAPSHOT_FILE} is nested more than {MAX_SNAPSHOT_DEPTH} levels")


def _parse(raw: bytes, where: str) -> EnvironmentSnapshot:
    try:
        return EnvironmentSnapshot.model_validate_json(raw)
    except ValidationError as error:
        # Never the error's text: it quotes input, and the input holds sealed options.
        raise SnapshotDamaged(
            f"{where}: {SNAPSHOT_FILE} is not a snapshot ({error.error_count()} errors). Nothing was changed."
        ) from None
    except (RecursionError, ValueError, UnicodeDecodeError, MemoryError) as error:
        raise SnapshotDamaged(f"{where}: {SNAPSHOT_FILE} cannot be parsed ({type(error).__name__})") from None
