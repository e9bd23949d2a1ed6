"""The stack's IAM, evaluated: what the functions, the MWAA execution roles and the participant
roles may do, and what they are refused (localcloud.iam renders template.yaml and participant.yaml
as CloudFormation would and evaluates requests as IAM does)."""

from __future__ import annotations

from typing import Any

import pytest

from localcloud.iam import Deployment, Renderer, Request, is_allowed, principal_statements, resource_policy
from localcloud.template import ROOT, load_template

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTICIPANTS = ("111111111111", "222222222222")
MWAA_SERVICE = f"com.amazonaws.vpce.{REGION}.vpce-svc-0a1b2c3d4e5f60718"
SECRETS_SERVICE = f"com.amazonaws.{REGION}.secretsmanager"
SQS_SERVICE = f"com.amazonaws.{REGION}.sqs"
ENDPOINT = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-endpoint/vpce-0123456789abcdef0"
STACK = "mwaa-control"


def deployment(**parameters: str) -> Deployment:
    return Deployment(load_template(), stack_name=STACK, account=ACCOUNT, region=REGION, parameters=parameters)


SHARED = deployment(ParticipantAccountIds=",".join(PARTICIPANTS), ParticipantRoleName="mwaa-control-reader")


def may(
    principal: str, action: str, resource: str = "*", context: dict[str, Any] | None = None, d: Deployment = SHARED
) -> bool:
    return is_allowed(principal_statements(d, principal), Request(action, resource, context or {}))


# --- the evaluator itself -------------------------------------------------------------------------
def test_the_evaluator_follows_iam_semantics() -> None:
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/${aws:PrincipalTag/team}/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/x/secret"},
        {
            "Effect": "Allow",
            "Action": "dynamodb:GetItem",
            "Resource": "*",
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["a#*"]}},
        },
        {
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEqualsIfExists": {"k": "v"}},
        },
    ]
    tag = {"aws:PrincipalTag/team": "x"}
    assert is_allowed(statements, Request("S3:GETOBJECT", "arn:aws:s3:::b/x/file", tag))  # actions ignore case
    assert not is_allowed(statements, Request("s3:GetObject", "arn:aws:s3:::b/y/file", tag))
    assert not is_allowed(statements, Request("s3:GetObject", "arn:aws:s3:::b/x/file"))  # no tag: no match
    assert not is_allowed(statements, Request("s3:GetObject", "arn:aws:s3:::b/x/secret", tag))  # deny wins
    assert not is_allowed(statements, Request("s3:PutObject", "arn:aws:s3:::b/x/file", tag))
    assert is_allowed(statements, Request("dynamodb:GetItem", context={"dynamodb:LeadingKeys": ["a#1"]}))
    assert not is_allowed(statements, Request("dynamodb:GetItem", context={"dynamodb:LeadingKeys": ["a#1", "b#2"]}))
    assert is_allowed(statements, Request("kms:Decrypt"))  # IfExists: absent key passes
    assert not is_allowed(statements, Request("kms:Decrypt", context={"k": "w"}))


def test_the_evaluator_matches_arns_by_segment_set_operators_on_absent_keys_and_tag_key_case() -> None:
    arn_like = [
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:events:*:111111111111:rule/*"}},
        }
    ]
    assert is_allowed(
        arn_like, Request("x:y", context={"aws:SourceArn": "arn:aws:events:us-east-1:111111111111:rule/r"})
    )
    # '*' in the region segment must not swallow ':<other account>:rule/...'
    forged = "arn:aws:events:us-east-1:222222222222:x:111111111111:rule/r"
    assert not is_allowed(arn_like, Request("x:y", context={"aws:SourceArn": forged}))
    resource = [{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:iam::*:role/reader"}]
    assert not is_allowed(resource, Request("x:y", "arn:aws:iam::111:x:222:role/reader"))
    any_negated = [
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {"ForAnyValue:StringNotLike": {"aws:TagKeys": ["a:*"]}},
        }
    ]
    assert not is_allowed(any_negated, Request("x:y"))  # no tag keys at all: no value matches
    tagged = [
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/Owner": "me"}},
        }
    ]
    assert is_allowed(tagged, Request("x:y", context={"AWS:resourcetag/Owner": "me"}))  # key names ignore case
    assert not is_allowed(tagged, Request("x:y", context={"aws:ResourceTag/owner": "me"}))  # tag keys do not


# --- endpoint automation ----------------------------------------------------------------------------
ENDPOINTS = "EndpointManagerFunction"


def _create_requests(service: str, tags: dict[str, str]) -> list[Request]:
    request_tags: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    vpc_endpoint = {**request_tags, "ec2:VpceServiceName": service}
    return [
        Request("ec2:CreateVpcEndpoint", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1"),
        Request("ec2:CreateVpcEndpoint", f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/subnet-1"),
        Request("ec2:CreateVpcEndpoint", f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-1"),
        Request("ec2:CreateVpcEndpoint", f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-endpoint/*", vpc_endpoint),
        Request(
            "ec2:CreateTags",
            f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc-endpoint/*",
            {**request_tags, "ec2:CreateAction": "CreateVpcEndpoint"},
        ),
    ]


def _allowed_all(requests: list[Request]) -> bool:
    statements = principal_statements(SHARED, ENDPOINTS)
    return all(is_allowed(statements, r) for r in requests)


OURS = {
    "mwaa-control:managed-by": STACK,
    "mwaa-control:environment-arn": f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/etl",
}


def test_endpoints_are_created_only_for_mwaa_services_and_only_tagged_as_ours() -> None:
    assert _allowed_all(_create_requests(MWAA_SERVICE, OURS))
    assert not _allowed_all(_create_requests(SECRETS_SERVICE, OURS))
    assert not _allowed_all(_create_requests(MWAA_SERVICE, {"Name": "x"}))
    assert not _allowed_all(_create_requests(MWAA_SERVICE, {"mwaa-control:managed-by": "another-stack"}))


@pytest.mark.parametrize(
    ("service", "tags", "allowed"),
    [
        (MWAA_SERVICE, OURS, True),
        (SECRETS_SERVICE, OURS, False),  # tagged as ours, but not an MWAA service
        (MWAA_SERVICE, {}, False),  # an MWAA endpoint somebody else made
        (MWAA_SERVICE, {"mwaa-control:managed-by": "another-stack"}, False),
    ],
)
def test_only_our_mwaa_endpoints_can_be_deleted(service: str, tags: dict[str, str], allowed: bool) -> None:
    context = {f"aws:ResourceTag/{k}": v for k, v in tags.items()} | {"ec2:VpceServiceName": service}
    assert may(ENDPOINTS, "ec2:DeleteVpcEndpoints", ENDPOINT, context) is allowed


@pytest.mark.parametrize(
    ("service", "tags", "allowed"),
    [
        (SQS_SERVICE, {"mwaa-control:amend-policy": STACK}, True),
        (SQS_SERVICE, {}, False),  # the VPC owner did not opt this endpoint in
        (SQS_SERVICE, {"mwaa-control:amend-policy": "another-stack"}, False),
        (SECRETS_SERVICE, {"mwaa-control:amend-policy": STACK}, False),
        (MWAA_SERVICE, OURS, False),
    ],
)
def test_only_opted_in_sqs_endpoint_policies_can_be_modified(service: str, tags: dict[str, str], allowed: bool) -> None:
    context = {f"aws:ResourceTag/{k}": v for k, v in tags.items()} | {"ec2:VpceServiceName": service}
    assert may(ENDPOINTS, "ec2:ModifyVpcEndpoint", ENDPOINT, context) is allowed


def _assume(account: str, role: str = "mwaa-control-reader", d: Deployment = SHARED) -> bool:
    arn = f"arn:aws:iam::{account}:role/{role}"
    return may(ENDPOINTS, "sts:AssumeRole", arn, {"aws:ResourceAccount": account}, d)


def test_roles_are_assumed_only_in_configured_participant_accounts() -> None:
    assert _assume("111111111111") and _assume("222222222222")
    assert not _assume("333333333333")
    assert not _assume("111111111111", role="OrganizationAccountAccessRole")
    assert not _assume("111111111111", d=deployment())  # single-account deployment: nowhere
    assert not _assume("111111111111", d=deployment(ParticipantAccountIds="111111111111"))  # no role name


def test_both_endpoint_functions_run_as_the_role_the_participants_trust() -> None:
    assert principal_statements(SHARED, "EndpointReconcilerFunction") == principal_statements(SHARED, ENDPOINTS)
    role = load_template()["Resources"]["EndpointAutomationRole"]["Properties"]
    assert role["Path"] == {"Fn::Sub": "/mwaa-control/${AWS::StackName}/"}


def test_the_state_table_is_split_by_key_prefix() -> None:
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state"
    for key, allowed in (("lock#env", True), ("endpoint#vpce-1", True), ("callback#etl#1", False)):
        assert may(ENDPOINTS, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": [key]}) is allowed
    for key, allowed in (("callback#etl#1", True), ("lock#env", False), ("endpoint#vpce-1", False)):
        assert may("DagTriggerFunction", "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": [key]}) is allowed
    assert not may("DagTriggerFunction", "dynamodb:GetItem", table, {"dynamodb:LeadingKeys": ["callback#etl#1"]})


def test_the_adoption_role_registers_endpoints_and_does_nothing_else() -> None:
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state"
    adopt = "EndpointAdoptionRole"
    assert may(adopt, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": ["endpoint#vpce-1"]})
    assert not may(adopt, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": ["lock#etl"]})
    assert not may(adopt, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": ["callback#etl#1"]})
    tagged = {"aws:ResourceTag/mwaa-control:managed-by": STACK, "ec2:VpceServiceName": MWAA_SERVICE}
    assert not may(adopt, "ec2:DeleteVpcEndpoints", ENDPOINT, tagged)
    assert not may(adopt, "ec2:CreateVpcEndpoint", ENDPOINT, tagged)
    role = load_template()["Resources"][adopt]["Properties"]
    assert role["Path"] == {"Fn::Sub": "/mwaa-control/${AWS::StackName}/"}  # the table's resource policy admits it


# --- DAG invocation ----------------------------------------------------------------------------------
def test_the_dag_trigger_calls_the_rest_api_as_airflow_viewer_only() -> None:
    role = f"arn:aws:airflow:{REGION}:{ACCOUNT}:role/etl"
    assert may("DagTriggerFunction", "airflow:InvokeRestApi", f"{role}/Viewer")
    for stronger in ("Admin", "Op", "User"):
        assert not may("DagTriggerFunction", "airflow:InvokeRestApi", f"{role}/{stronger}")
    assert not may("DagTriggerFunction", "airflow:InvokeRestApi", f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/etl")
    environment = f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/etl"
    assert may("DagTriggerFunction", "airflow:CreateCliToken", environment)
    assert not may("DagTriggerFunction", "airflow:DeleteEnvironment", environment)


# --- MWAA execution roles ------------------------------------------------------------------------------
BUCKET = f"{STACK}-MetadataBackupBucket"


def _execution(
    action: str, resource: str, context: dict[str, Any] | None = None, environment: str | None = "etl"
) -> bool:
    """An MWAA execution role with EnvironmentExecutionPolicy attached (tagged with its environment,
    unless None), as seen by the identity policy and the backup bucket's own policy together."""
    tag = {"aws:PrincipalTag/mwaa-control:environment": environment} if environment else {}
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/{environment}-execution/airflow"
    request = Request(action, resource, {**tag, **(context or {}), "aws:SecureTransport": "true"}, caller)
    document = Renderer(SHARED).render(load_template()["Resources"]["EnvironmentExecutionPolicy"])
    identity = document["Properties"]["PolicyDocument"]["Statement"]
    bucket_denies = [
        {**s, "Effect": "Allow"}
        for s in resource_policy(SHARED, "MetadataBackupBucketPolicy", ["PolicyDocument"])
        if s["Effect"] == "Deny"
    ]
    return is_allowed(identity, request) and not is_allowed(bucket_denies, request)


def test_the_rest_path_function_removes_only_what_a_failed_backup_left() -> None:
    backup = f"arn:aws:s3:::{BUCKET}/backups/etl/20261121T213305Z-1a2b3c4d"
    for written in ("tables/variable/part-00000.parquet", "manifest.json", "pause-states.json"):
        assert may("MetadataRestFunction", "s3:PutObject", f"{backup}/{written}")
    for leftover in ("tables/variable/part-00000.parquet", "pause-states.json", "rest-drain.json"):
        assert may("MetadataRestFunction", "s3:DeleteObject", f"{backup}/{leftover}")
    for kept in ("manifest.json", "manifest.mac", "restores/r1.json"):
        assert not may("MetadataRestFunction", "s3:DeleteObject", f"{backup}/{kept}")
    assert not may("MetadataRestFunction", "s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/snapshots/etl/x/environment.json")
    assert not may("MetadataRestFunction", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/snapshots/etl/x/environment.json")
    # Airflow's Op through the REST API; a CLI token only for an environment that opted in
    role = f"arn:aws:airflow:{REGION}:{ACCOUNT}:role/etl"
    assert may("MetadataRestFunction", "airflow:InvokeRestApi", f"{role}/Op")
    assert not may("MetadataRestFunction", "airflow:InvokeRestApi", f"{role}/Admin")
    environment = f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/etl"
    opted_in = {"aws:ResourceTag/mwaa-control:pause-resume": "enabled"}
    assert may("MetadataRestFunction", "airflow:CreateCliToken", environment, opted_in)
    assert not may("MetadataRestFunction", "airflow:CreateCliToken", environment)
    assert not may("MetadataRestFunction", "airflow:DeleteEnvironment", environment, opted_in)
    # The pause/resume steps' role stays as it was: no Op, no deletes in the bucket
    assert not may("PauseResumeFunction", "airflow:InvokeRestApi", f"{role}/Op")
    assert not may("PauseResumeFunction", "s3:DeleteObject", f"{backup}/pause-states.json")


def test_an_environment_role_writes_and_reads_only_its_own_backups() -> None:
    own = f"arn:aws:s3:::{BUCKET}/backups/etl/20261121T213305Z-1a2b3c4d/manifest.json"
    other = f"arn:aws:s3:::{BUCKET}/backups/reporting/20261121T213305Z-1a2b3c4d/manifest.json"
    assert _execution("s3:PutObject", own) and _execution("s3:GetObject", own)
    assert not _execution("s3:PutObject", other)
    assert not _execution("s3:GetObject", other)
    assert not _execution("s3:PutObject", own, environment=None)  # an untagged role gets nothing
    assert _execution("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "backups/etl/"})
    assert not _execution("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "backups/"})


def test_the_bucket_policy_confines_tagged_roles_whatever_else_grants_them() -> None:
    bucket_policy = resource_policy(SHARED, "MetadataBackupBucketPolicy", ["PolicyDocument"])
    deny = next(s for s in bucket_policy if s.get("Sid") == "EnvironmentRolesWriteOnlyTheirOwnPrefix")
    as_allow = [{**deny, "Effect": "Allow"}]
    tag = {"aws:PrincipalTag/mwaa-control:environment": "etl"}
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/etl-execution/airflow"
    other = f"arn:aws:s3:::{BUCKET}/backups/reporting/x"
    own = f"arn:aws:s3:::{BUCKET}/backups/etl/x"
    assert is_allowed(as_allow, Request("s3:PutObject", other, tag, caller))  # the deny applies
    assert not is_allowed(as_allow, Request("s3:PutObject", own, tag, caller))
    assert not is_allowed(as_allow, Request("s3:PutObject", other, {}, caller))  # untagged principals: untouched


def test_an_environment_role_wraps_backup_keys_only_for_its_own_environment() -> None:
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/MetadataBackupKey"
    context = "kms:EncryptionContext:mwaa-control:environment"
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert _execution(action, key, {context: "etl"})
        assert not _execution(action, key, {context: "reporting"})
        keys = {"kms:EncryptionContextKeys": ["mwaa-control:environment", "mwaa-control:backup", "extra"]}
        assert not _execution(action, key, {context: "etl", **keys})  # no other context keys
        assert not _execution(action, key)  # no context: only S3's own use of the key
        assert _execution(action, key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"})


def test_an_environment_role_cannot_unwrap_its_snapshots_key_or_read_snapshots() -> None:
    from mwaa_control.pause.snapshot import snapshot_context

    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/MetadataBackupKey"
    context = snapshot_context("etl", "20261130T000000Z-0a1b2c3d")
    request = {f"kms:EncryptionContext:{k}": v for k, v in context.items()} | {
        "kms:EncryptionContextKeys": list(context)
    }
    assert not _execution("kms:Decrypt", key, request)
    backup = {k: v for k, v in request.items() if "kind" not in k}
    backup["kms:EncryptionContextKeys"] = [k for k in context if k != "mwaa-control:kind"]
    assert _execution("kms:Decrypt", key, backup)  # the same role, a backup's context: allowed
    bucket_policy = resource_policy(SHARED, "MetadataBackupBucketPolicy", ["PolicyDocument"])
    deny = next(s for s in bucket_policy if s.get("Sid") == "EnvironmentRolesNeverReadSnapshots")
    as_allow = [{**deny, "Effect": "Allow"}]
    tag = {"aws:PrincipalTag/mwaa-control:environment": "etl"}
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/etl-execution/airflow"
    snapshot = f"arn:aws:s3:::{BUCKET}/snapshots/etl/x/environment.json"
    assert is_allowed(as_allow, Request("s3:GetObject", snapshot, tag, caller))  # the deny applies
    assert not is_allowed(as_allow, Request("s3:GetObject", snapshot, {}, caller))  # the control plane: untouched


def test_partiql_cannot_write_records_the_resource_policy_protects() -> None:
    deny = [
        {**s, "Effect": "Allow"} for s in resource_policy(SHARED, "LockTable", ["ResourcePolicy", "PolicyDocument"])
    ]
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state"
    admin = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    for action in ("dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"):
        for key in ("environment#etl", "operation#etl", "wait#etl", "endpoint#vpce-1"):
            forged = {"dynamodb:LeadingKeys": [key], "aws:PrincipalArn": admin}
            assert is_allowed(deny, Request(action, table, forged, admin)), (action, key)


def test_an_environment_role_resolves_only_its_own_callbacks() -> None:
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state"
    assert _execution("dynamodb:GetItem", table, {"dynamodb:LeadingKeys": ["callback#etl#0a1b"]})
    assert _execution("dynamodb:DeleteItem", table, {"dynamodb:LeadingKeys": ["callback#etl#0a1b"]})
    assert not _execution("dynamodb:GetItem", table, {"dynamodb:LeadingKeys": ["callback#reporting#0a1b"]})
    assert not _execution("dynamodb:GetItem", table, {"dynamodb:LeadingKeys": ["lock#etl"]})
    assert not _execution("dynamodb:PutItem", table, {"dynamodb:LeadingKeys": ["callback#etl#0a1b"]})


def test_only_the_endpoint_automation_writes_ownership_records_whatever_else_grants_it() -> None:
    deny = [
        {**s, "Effect": "Allow"} for s in resource_policy(SHARED, "LockTable", ["ResourcePolicy", "PolicyDocument"])
    ]
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state"
    automation = f"arn:aws:iam::{ACCOUNT}:role/mwaa-control/{STACK}/{STACK}-EndpointAutomationRole-1A2B"
    admin = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    for key in ("endpoint#vpce-1", "lock#etl"):
        forged = {"dynamodb:LeadingKeys": [key], "aws:PrincipalArn": admin}
        assert is_allowed(deny, Request("dynamodb:PutItem", table, forged, admin))  # the deny applies
        own = {"dynamodb:LeadingKeys": [key], "aws:PrincipalArn": automation}
        assert not is_allowed(deny, Request("dynamodb:PutItem", table, own, automation))
    trigger = {"dynamodb:LeadingKeys": ["callback#etl#1"], "aws:PrincipalArn": admin}
    assert not is_allowed(deny, Request("dynamodb:PutItem", table, trigger, admin))


# --- confused deputies -------------------------------------------------------------------------------
def test_only_this_stacks_rule_dead_letters_into_the_queue() -> None:
    policy = resource_policy(SHARED, "FailedEventsQueuePolicy", ["PolicyDocument"])
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-FailedEventsQueue"
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{STACK}-EndpointManagerFunctionStatusChange"
    send = "sqs:SendMessage"
    assert is_allowed(policy, Request(send, queue, {"aws:SourceArn": rule}, "events.amazonaws.com"))
    foreign = f"arn:aws:events:{REGION}:999999999999:rule/anything"
    assert not is_allowed(policy, Request(send, queue, {"aws:SourceArn": foreign}, "events.amazonaws.com"))
    assert not is_allowed(policy, Request(send, queue, {}, "events.amazonaws.com"))


def test_the_alert_key_serves_only_this_accounts_alarms() -> None:
    policy = resource_policy(SHARED, "AlertKey", ["KeyPolicy"])
    alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:endpoints"
    own = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": alarm}
    assert is_allowed(policy, Request("kms:GenerateDataKey", "*", own, "cloudwatch.amazonaws.com"))
    foreign = {"aws:SourceAccount": "999999999999", "aws:SourceArn": alarm.replace(ACCOUNT, "999999999999")}
    assert not is_allowed(policy, Request("kms:GenerateDataKey", "*", foreign, "cloudwatch.amazonaws.com"))
    assert not is_allowed(policy, Request("kms:Decrypt", "*", own, "states.amazonaws.com"))


PARTICIPANT = "111111111111"


def participant() -> Deployment:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(ROOT / "participant.yaml"))
    return Deployment(
        template,
        stack_name="mwaa-control-participant",
        account=PARTICIPANT,
        region=REGION,
        parameters={"OwnerAccountId": ACCOUNT, "OwnerStackName": STACK},
    )


def test_the_participant_reader_role_trusts_only_the_owners_endpoint_automation() -> None:
    trust = resource_policy(participant(), "ReaderRole", ["AssumeRolePolicyDocument"])
    automation = f"arn:aws:iam::{ACCOUNT}:role/mwaa-control/{STACK}/{STACK}-EndpointAutomationRole-1A2B3C"
    for caller, allowed in (
        (automation, True),
        (f"arn:aws:iam::{ACCOUNT}:role/Admin", False),
        (f"arn:aws:iam::{ACCOUNT}:role/mwaa-control/another-stack/x", False),
        (f"arn:aws:iam::999999999999:role/mwaa-control/{STACK}/x", False),
    ):
        request = Request("sts:AssumeRole", context={"aws:PrincipalArn": caller}, principal=caller)
        assert is_allowed(trust, request) is allowed, caller


def test_the_participant_forwarding_role_serves_only_its_own_rule() -> None:
    d = participant()
    trust = resource_policy(d, "ForwardingRole", ["AssumeRolePolicyDocument"])
    rule = f"arn:aws:events:{REGION}:{PARTICIPANT}:rule/{d.stack_name}-forward-mwaa-status"
    own = {"aws:SourceAccount": PARTICIPANT, "aws:SourceArn": rule}
    assert is_allowed(trust, Request("sts:AssumeRole", context=own, principal="events.amazonaws.com"))
    other = {"aws:SourceAccount": PARTICIPANT, "aws:SourceArn": rule.replace("forward-mwaa-status", "other")}
    assert not is_allowed(trust, Request("sts:AssumeRole", context=other, principal="events.amazonaws.com"))
    assert not is_allowed(trust, Request("sts:AssumeRole", principal="events.amazonaws.com"))
    [forward] = [r for r in d.template["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert forward["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-forward-mwaa-status"}


def test_the_operator_role_writes_overrides_starts_workflows_and_nothing_else() -> None:
    """`mwaactl` on-call: overrides are `override#` items, which the state table's resource policy
    lets only roles under the stack's path write; the operator role may write those and no record
    a workflow or the endpoint automation relies on, and may start pauses and resumes but not
    delete an environment itself."""
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-state"
    operator = "OperatorRole"
    table_policy = resource_policy(SHARED, "LockTable", ["ResourcePolicy", "PolicyDocument"])
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/mwaa-control/{STACK}/{operator}"
    for key, allowed in (
        ("override#etl", True),
        ("environment#etl", False),
        ("operation#etl", False),
        ("wait#etl", False),
        ("endpoint#vpce-1", False),
        ("lock#etl", False),
    ):
        context = {"dynamodb:LeadingKeys": [key], "aws:PrincipalArn": role_arn}
        assert may(operator, "dynamodb:PutItem", table, context) is allowed, key
        # and the table's own policy admits the role for override# (it lives under the stack's path)
        assert not is_allowed(
            [{**s, "Effect": "Allow"} for s in table_policy], Request("dynamodb:PutItem", table, context)
        ), key
    outsider = {"dynamodb:LeadingKeys": ["override#etl"], "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/ops"}
    assert is_allowed([{**s, "Effect": "Allow"} for s in table_policy], Request("dynamodb:PutItem", table, outsider))
    machines = (
        Renderer(SHARED).render({"Ref": "PauseStateMachine"}),
        Renderer(SHARED).render({"Ref": "ResumeStateMachine"}),
    )
    for machine in machines:
        assert may(operator, "states:StartExecution", machine)
    assert not may(operator, "states:StartExecution", Renderer(SHARED).render({"Ref": "RunDagStateMachine"}))
    environment = f"arn:aws:airflow:{REGION}:{ACCOUNT}:environment/etl"
    assert may(operator, "airflow:GetEnvironment", environment)
    for action in ("airflow:DeleteEnvironment", "airflow:CreateEnvironment", "airflow:TagResource"):
        assert not may(operator, action, environment)
