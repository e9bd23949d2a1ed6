"""template.yaml: what is deployed is what the local cloud runs, and permissions stay scoped."""

from __future__ import annotations

from typing import Any

from localcloud.eventbus import rule_matches
from localcloud.iam import Deployment, Renderer, principal_statements
from localcloud.template import ROOT, functions, load_template, resources_of_type
from mwaa_control.metadata.manifest import backup_prefix
from tests.conftest import load_event

DESTRUCTIVE = ("Delete", "Modify", "Create", "Put", "Update", "Tag", "Untag", "Attach", "Detach")
# CloudWatch Logs delivery for Step Functions supports no resource-level permissions (AWS docs).
LOG_DELIVERY = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every identity-policy statement the stack grants, rendered."""
    deployment = Deployment(template)
    found = []
    for policy in resources_of_type(template, "AWS::IAM::ManagedPolicy").values():
        found += policy["Properties"]["PolicyDocument"]["Statement"]
    principals = (
        *resources_of_type(template, "AWS::Serverless::Function"),
        *resources_of_type(template, "AWS::Serverless::StateMachine"),
        *resources_of_type(template, "AWS::IAM::Role"),
    )
    for logical_id in principals:
        found += principal_statements(deployment, logical_id)
    return found


def test_no_destructive_action_is_allowed_on_everything_without_a_condition() -> None:
    for statement in statements(load_template()):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        resources = [r if isinstance(r, str) else str(r) for r in resources]
        for action in actions:
            verb = action.split(":", 1)[1]
            assert verb != "*", action
            if verb.startswith(DESTRUCTIVE) and "Condition" not in statement and action not in LOG_DELIVERY:
                assert "*" not in resources, f"{action} on {resources}"


def test_the_deployed_rule_matches_mwaa_status_events_of_configured_accounts_only() -> None:
    for participants in ("", "111111111111,222222222222"):
        deployment = Deployment(load_template(), parameters={"ParticipantAccountIds": participants})
        [raw] = functions(load_template())["EndpointManagerFunction"].event_patterns.values()
        pattern = Renderer(deployment).render(raw)
        own = load_event("mwaa_status_pending.json")
        assert rule_matches(pattern, {**own, "account": deployment.account})
        assert rule_matches(pattern, load_event("mwaa_status_deleted.json") | {"account": deployment.account})
        assert not rule_matches(pattern, load_event("foreign_ec2_state_change.json"))
        assert not rule_matches(pattern, {**own, "account": "333333333333"})
        assert rule_matches(pattern, {**own, "account": "111111111111"}) is bool(participants)


def test_every_function_has_its_handler_and_a_makefile_build_target() -> None:
    template = load_template()
    for logical_id, spec in functions(template).items():
        module = spec.handler.rsplit(".", 1)[0]
        assert (spec.code_uri / f"{module}.py").is_file()
        assert f"build-{logical_id}:" in (spec.code_uri / "Makefile").read_text()
    for logical_id, layer in resources_of_type(template, "AWS::Serverless::LayerVersion").items():
        assert f"build-{logical_id}:" in (ROOT / layer["Properties"]["ContentUri"] / "Makefile").read_text()


def test_runtime_is_a_supported_python() -> None:
    runtime = load_template()["Globals"]["Function"]["Runtime"]
    assert runtime in ("python3.12", "python3.13", "python3.14")


def test_every_sample_event_is_used_by_a_test() -> None:
    tests_text = "".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    for sample in (ROOT / "events").glob("*.json"):
        assert sample.name in tests_text, f"{sample.name} is not loaded by any test"


HIVE_PARQUET = "org.apache.hadoop.hive.ql.io.parquet"
# The Glue types of the backup engine's Parquet types (schema.ARROW_TYPES; tests/analytics checks each column).
PARQUET_GLUE_TYPES = {"bigint", "double", "boolean", "timestamp", "binary", "string"}


def test_metadata_backups_are_private_versioned_and_encrypted_with_their_own_key() -> None:
    resources = load_template()["Resources"]
    key = resources["MetadataBackupKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    bucket = resources["MetadataBackupBucket"]["Properties"]
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["MetadataBackupKey", "Arn"]},
    }
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert any("NoncurrentVersionExpiration" in r for r in bucket["LifecycleConfiguration"]["Rules"])
    assert "BucketName" not in bucket  # generated from the stack name: two stacks never collide
    bucket_policy = resources["MetadataBackupBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [deny] = [s for s in bucket_policy if s["Sid"] == "DenyInsecureTransport"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    workgroup = resources["MetadataWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert workgroup["EnforceWorkGroupConfiguration"] is True
    results = workgroup["ResultConfiguration"]
    assert results["EncryptionConfiguration"] == {
        "EncryptionOption": "SSE_KMS",
        "KmsKey": {"Fn::GetAtt": ["MetadataBackupKey", "Arn"]},
    }
    assert results["OutputLocation"] == {"Fn::Sub": "s3://${MetadataBackupBucket}/athena-results/"}


def test_backup_tables_are_projected_onto_the_engine_layout() -> None:
    template = load_template()
    tables = resources_of_type(template, "AWS::Glue::Table")
    assert {t["Properties"]["TableInput"]["Name"] for t in tables.values()} >= {"dag_run", "task_instance"}
    for table in tables.values():
        spec = table["Properties"]["TableInput"]
        assert table["Properties"]["DatabaseName"] == {"Ref": "MetadataDatabase"}
        keys = [(k["Name"], k["Type"]) for k in spec["PartitionKeys"]]
        assert keys == [("environment", "string"), ("backup_id", "string")]
        parameters = spec["Parameters"]
        assert parameters["projection.enabled"] == "true"
        assert parameters["projection.environment.type"] == parameters["projection.backup_id.type"] == "injected"
        # The engine's own layout (manifest.backup_prefix), with the projected values in it.
        layout = backup_prefix("${!environment}", "${!backup_id}")
        location = f"s3://${{MetadataBackupBucket}}/{layout}/tables/{spec['Name']}/"
        assert parameters["storage.location.template"] == {"Fn::Sub": location}
        storage = spec["StorageDescriptor"]
        assert storage["SerdeInfo"]["SerializationLibrary"] == f"{HIVE_PARQUET}.serde.ParquetHiveSerDe"
        assert storage["InputFormat"] == f"{HIVE_PARQUET}.MapredParquetInputFormat"
        assert storage["OutputFormat"] == f"{HIVE_PARQUET}.MapredParquetOutputFormat"
        names = [c["Name"] for c in storage["Columns"]]
        assert len(names) == len(set(names))
        assert {c["Type"] for c in storage["Columns"]} <= PARQUET_GLUE_TYPES


def test_analytics_names_start_with_the_stack_name() -> None:
    resources = load_template()["Resources"]
    database = resources["MetadataDatabase"]["Properties"]["DatabaseInput"]["Name"]
    assert database == {"Fn::Join": ["_", {"Fn::Split": ["-", {"Fn::Sub": "${AWS::StackName}_metadata"}]}]}
    assert resources["MetadataWorkGroup"]["Properties"]["Name"]["Fn::Sub"].startswith("${AWS::StackName}-")
    for query in resources_of_type(load_template(), "AWS::Athena::NamedQuery").values():
        assert query["Properties"]["Name"]["Fn::Sub"].startswith("${AWS::StackName} ")
        assert query["Properties"]["WorkGroup"] == {"Ref": "MetadataWorkGroup"}


def test_every_analytics_query_is_deployed_verbatim() -> None:
    deployed = sorted(
        q["Properties"]["QueryString"] for q in resources_of_type(load_template(), "AWS::Athena::NamedQuery").values()
    )
    assert deployed == sorted(p.read_text() for p in (ROOT / "analytics").glob("*.sql"))


def test_the_fleet_wake_up_schedule_name_fits_any_stack_name_and_its_policy() -> None:
    """A stack name may be 128 characters, a schedule name 64: the name comes from the stack's UUID,
    and the fleet scheduler's policy allows exactly that schedule."""
    template = load_template()
    renderer = Renderer(Deployment(template, stack_name="a" * 128))
    name = renderer.render(functions(template)["FleetSchedulerFunction"].environment["FLEET_WAKE_UP_SCHEDULE"])
    assert len(name) <= 64 and name.startswith("fleet-wake-up-")
    statements = renderer.render(template["Resources"]["FleetSchedulerRole"]["Properties"]["Policies"])
    [allowed] = [
        s["Resource"]
        for p in statements
        for s in p["PolicyDocument"]["Statement"]
        if s.get("Sid") == "ItsOwnWakeUpSchedule"
    ]
    assert allowed == f"arn:aws:scheduler:us-east-1:123456789012:schedule/default/{name}"
