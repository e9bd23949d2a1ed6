"""What each Airflow metadata table is, for backup and restore.

The engine reflects the live schema (columns, keys, foreign keys), so a new Airflow release needs no
code change to be backed up. What reflection cannot say lives here: the role of a table, columns
that reference another table without a declared foreign key, natural keys that have no unique
constraint, and which columns hold Fernet-encrypted secrets. A table missing from this catalog is
backed up and restored as history, and the manifest lists it as unclassified so someone looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    HISTORY = "history"
    """What happened: runs, task instances, XComs, audit log. Inserted; never overwrites the target."""
    CONFIGURATION = "configuration"
    """What operators set: variables, connections, pools, pause states. The backup wins on conflict."""
    DERIVED = "derived"
    """Rebuilt by Airflow from the DAG files (serialised DAGs, code, tags, import errors). Exported
    for analysis, never restored: restoring them would fight the DAG processor."""
    EXCLUDED = "excluded"
    """Not exported at all, for the reason given."""


@dataclass(frozen=True)
class TableRule:
    role: Role
    why: str
    natural_key: tuple[str, ...] = ()
    """Identity of a row across databases when no unique constraint says so."""
    update_on_conflict: tuple[str, ...] | None = None
    """CONFIGURATION only: columns the backup overwrites when the row already exists in the target
    (None: every non-key column)."""


@dataclass(frozen=True)
class SoftReference:
    """A column holding another table's surrogate id without a declared foreign key. Airflow leaves
    these unconstrained, which is how naive restores end up pointing rows at the wrong parents."""

    table: str
    column: str
    parent: str
    parent_column: str = "id"


@dataclass(frozen=True)
class SealedColumn:
    """A column whose value is (or may be) encrypted with the environment's Fernet key. Exported
    decrypted and sealed with KMS; restored encrypted with the target's key."""

    table: str
    column: str
    flag: str | None
    """Boolean column saying whether the value is Fernet-encrypted; None: detect per value
    (trigger.kwargs is encrypted since Airflow 2.9; older releases store plain JSON)."""
    detect_fernet: bool = True
    only_when: tuple[str, tuple[str, ...]] | None = None
    """(column, substrings): seal only rows whose column contains one of the substrings."""


HISTORY_TABLES = {
    "dag_run": "one row per DAG run",
    "dag_run_note": "notes operators wrote on runs",
    "task_instance": "one row per task try state",
    "task_instance_history": "earlier tries of task instances (2.10+)",
    "task_instance_note": "notes operators wrote on task instances",
    "task_fail": "failure durations (before 2.10 removal)",
    "task_reschedule": "sensor reschedules",
    "task_map": "mapped-task expansion lengths",
    "xcom": "values passed between tasks",
    "rendered_task_instance_fields": "rendered templates shown in the UI",
    "log": "the audit log (who triggered, paused, edited what)",
    "job": "scheduler, triggerer and task jobs referenced by runs and task instances",
    "trigger": "triggers of deferred task instances",
    "sla_miss": "missed SLAs",
    "dataset_event": "dataset updates",
    "dagrun_dataset_event": "which dataset events created which runs",
    "dataset_dag_run_queue": "dataset updates waiting to trigger a run",
    "dataset_alias_dataset": "dataset alias resolution",
    "dataset_alias_dataset_event": "dataset alias events",
    "asset_event": "asset updates (Airflow 3)",
    "dagrun_asset_event": "which asset events created which runs (Airflow 3)",
    "asset_dag_run_queue": "asset updates waiting to trigger a run (Airflow 3)",
    "backfill": "backfills (Airflow 3)",
    "backfill_dag_run": "runs of backfills (Airflow 3)",
    "deadline": "deadlines (Airflow 3)",
    "hitl_detail": "human-in-the-loop responses (Airflow 3)",
    "hitl_detail_history": "human-in-the-loop responses of earlier tries (Airflow 3.2+)",
    "asset_alias_asset": "asset alias resolution (Airflow 3)",
    "asset_alias_asset_event": "asset alias events (Airflow 3)",
    "callback": "callbacks the triggerer, executor or DAG processor runs, e.g. of missed deadlines (Airflow 3.2+)",
    "asset_partition_dag_run": "runs created for asset partitions (Airflow 3.2+)",
    "partitioned_asset_key_log": "which partitioned asset events created which partition runs (Airflow 3.2+)",
    "asset_state_store": "key/value state of an asset (watermarks), kept across runs (Airflow 3.3+)",
    "task_state_store": "key/value state of a task within a run (Airflow 3.3+)",
}

DERIVED_TABLES = {
    "serialized_dag": "re-serialised from the DAG files by the DAG processor",
    "dag_code": "re-read from the DAG files",
    "dag_tag": "from the DAG files",
    "dag_owner_attributes": "from the DAG files",
    "dag_warning": "recomputed on parse",
    "import_error": "recomputed on parse",
    "dag_schedule_dataset_reference": "from the DAG files",
    "dag_schedule_dataset_alias_reference": "from the DAG files",
    "task_outlet_dataset_reference": "from the DAG files",
    "dag_priority_parsing_request": "transient parse requests",
    "callback_request": "transient callbacks for the DAG processor",
    "dag_version": "from the DAG files (Airflow 3)",
    "dag_bundle_team": "which team owns a DAG bundle, from the bundle configuration (Airflow 3.2+)",
    "dag_schedule_asset_reference": "from the DAG files (Airflow 3)",
    "dag_schedule_asset_alias_reference": "from the DAG files (Airflow 3)",
    "dag_schedule_asset_name_reference": "from the DAG files (Airflow 3)",
    "dag_schedule_asset_uri_reference": "from the DAG files (Airflow 3)",
    "task_outlet_asset_reference": "from the DAG files (Airflow 3)",
    "task_inlet_asset_reference": "from the DAG files (Airflow 3)",
    "asset_active": "from the DAG files (Airflow 3)",
    "asset_trigger": "from the DAG files (Airflow 3.0)",
    "asset_watcher": "from the DAG files (asset_trigger renamed, Airflow 3.2+)",
    "deadline_alert": "deadline alerts of serialised DAGs, from the DAG files (Airflow 3.2+)",
    "dag_favorite": "per-user UI preference (Airflow 3)",
}

EXCLUDED_TABLES = {
    "alembic_version": "the schema revision; recorded in the manifest and checked on restore",
    "session": "web sessions: short-lived login secrets, useless in another environment",
    "dag_pickle": "unused since Airflow 2 and holds pickles, which are unsafe to load",
    "revoked_token": "revoked API tokens: short-lived, and signed with the source environment's JWT secret",
    "connection_test_request": "pending connection tests: transient, and holds connection passwords (Airflow 3.3+)",
}
EXCLUDED_PREFIXES = {
    "ab_": "web UI users, roles and permissions: MWAA maps them from IAM and recreates them on login",
}

CONFIGURATION_RULES = {
    "variable": TableRule(Role.CONFIGURATION, "Airflow variables", update_on_conflict=None),
    "connection": TableRule(Role.CONFIGURATION, "Airflow connections", update_on_conflict=None),
    "slot_pool": TableRule(Role.CONFIGURATION, "pools, including default_pool's size", update_on_conflict=None),
    "dag": TableRule(
        Role.CONFIGURATION,
        "pause states; other columns are rebuilt on parse, so only is_paused is applied to existing DAGs",
        update_on_conflict=("is_paused",),
    ),
    # The backup's extra wins (what the README promises); the uri is the key, the rest is bookkeeping.
    "dataset": TableRule(Role.CONFIGURATION, "datasets referenced by events", update_on_conflict=("extra",)),
    "dataset_alias": TableRule(Role.CONFIGURATION, "dataset aliases", update_on_conflict=()),
    "asset": TableRule(Role.CONFIGURATION, "assets referenced by events (Airflow 3)", update_on_conflict=()),
    "asset_alias": TableRule(Role.CONFIGURATION, "asset aliases (Airflow 3)", update_on_conflict=()),
    # dag.bundle_name references the bundle (NOT NULL from 3.2): a DAG the target lacks needs its
    # bundle row. The target's own configuration owns existing bundles, so nothing is overwritten.
    "dag_bundle": TableRule(
        Role.CONFIGURATION,
        "DAG bundles referenced by DAGs (Airflow 3); the target's configuration keeps its own",
        natural_key=("name",),
        update_on_conflict=(),
    ),
    "team": TableRule(
        Role.CONFIGURATION,
        "teams referenced by connections, variables and pools (multi-team, Airflow 3.2+)",
        natural_key=("name",),
        update_on_conflict=(),
    ),
    "log_template": TableRule(
        Role.CONFIGURATION,
        "log file name templates referenced by runs; every database seeds the same rows",
        natural_key=("filename", "elasticsearch_id"),
        update_on_conflict=(),
    ),
}

# Every integer column of a supported release's models that holds another table's id without a
# declared foreign key. tests/metadata/test_catalog.py walks each release's models and fails on an
# integer `*_id` column that is neither declared, listed here, nor in NOT_REFERENCES: a missing
# entry here is how a restored dataset event came to point at another dataset.
SOFT_REFERENCES = (
    SoftReference("dag", "pickle_id", "dag_pickle"),
    SoftReference("dag_run", "creating_job_id", "job"),
    SoftReference("dag_run", "scheduled_by_job_id", "job"),
    SoftReference("dataset_event", "dataset_id", "dataset"),
    SoftReference("asset_event", "asset_id", "asset"),
    SoftReference("partitioned_asset_key_log", "asset_id", "asset"),
    SoftReference("partitioned_asset_key_log", "asset_event_id", "asset_event"),
    SoftReference("partitioned_asset_key_log", "asset_partition_dag_run_id", "asset_partition_dag_run"),
    SoftReference("task_instance", "job_id", "job"),
    SoftReference("task_instance", "queued_by_job_id", "job"),
    SoftReference("task_instance", "trigger_id", "trigger"),
    SoftReference("task_instance_history", "job_id", "job"),
    SoftReference("task_instance_history", "queued_by_job_id", "job"),
    SoftReference("task_instance_history", "trigger_id", "trigger"),
    SoftReference("trigger", "triggerer_id", "job"),
    SoftReference("xcom", "dag_run_id", "dag_run"),
)

# Identity of history rows that have neither a natural key nor a unique constraint: a content
# fingerprint over these columns (references as the target's ids, which a restore has already
# mapped), matched against the target's rows like a natural key, so that two overlapping backups
# restored into one database converge instead of appending the same job twice. Tables not named
# here, and without a natural key, are fingerprinted over every column except the surrogate id and
# sealed secrets. Where a row is rewritten while Airflow runs (a job's heartbeat and state), only
# the columns fixed at creation identify it.
FINGERPRINTS: dict[str, tuple[str, ...]] = {
    "job": ("job_type", "hostname", "start_date", "dag_id"),
    "trigger": ("classpath", "created_date"),
}

NOT_REFERENCES: dict[tuple[str, str], str] = {
    # Integer columns named like references that hold no other row's id. None in the supported
    # releases yet; an entry says why, so the completeness test accepts the column.
}

SEALED_COLUMNS = (
    SealedColumn("variable", "val", "is_encrypted"),
    SealedColumn("connection", "password", "is_encrypted"),
    SealedColumn("connection", "extra", "is_extra_encrypted"),
    SealedColumn("trigger", "kwargs", None),
    # Airflow's audit log keeps the full command line of CLI calls (`variables set KEY VALUE`,
    # connection extras) and the form data of UI edits: the secrets leak there in plaintext.
    # The web server's trigger form ("trigger"), the REST API ("api.post_dag_run" on Airflow 2,
    # "trigger_dag_run" on 3) and `airflow dags trigger` ("cli_trigger") record the run conf a
    # user gave, which carries credentials as often as variables do.
    SealedColumn(
        "log",
        "extra",
        None,
        detect_fernet=False,
        only_when=("event", ("cli_", "variable", "connection", "trigger", "post_dag_run")),
    ),
)

# Columns Airflow 2 declares as pickles (PickleType; ExecutorConfigType is one, with dill), which
# Airflow unpickles whenever it reads the row. On Airflow 3 dag_run.conf is JSON: a column is
# checked as a pickle only where the database types it as binary.
PICKLED_COLUMNS = (
    ("dag_run", "conf"),
    ("task_instance", "executor_config"),
    ("task_instance_history", "executor_config"),
    ("dag_pickle", "pickle"),
)

# DAGs of the control plane itself: their runs (the backup's own, the restore's own) are never
# exported, so a restore cannot bring back a half-finished backup run.
CONTROL_PLANE_DAG_PREFIX = "mwaa_control_"


def rule_for(table: str) -> TableRule:
    if table in CONFIGURATION_RULES:
        return CONFIGURATION_RULES[table]
    if table in HISTORY_TABLES:
        return TableRule(Role.HISTORY, HISTORY_TABLES[table])
    if table in DERIVED_TABLES:
        return TableRule(Role.DERIVED, DERIVED_TABLES[table])
    if table in EXCLUDED_TABLES:
        return TableRule(Role.EXCLUDED, EXCLUDED_TABLES[table])
    for prefix, why in EXCLUDED_PREFIXES.items():
        if table.startswith(prefix):
            return TableRule(Role.EXCLUDED, why)
    return TableRule(Role.HISTORY, "unclassified: not in the catalog, kept as history")


def is_classified(table: str) -> bool:
    return (
        table in CONFIGURATION_RULES
        or table in HISTORY_TABLES
        or table in DERIVED_TABLES
        or table in EXCLUDED_TABLES
        or any(table.startswith(p) for p in EXCLUDED_PREFIXES)
    )


def fingerprint_columns(table: str) -> tuple[str, ...] | None:
    return FINGERPRINTS.get(table)


def sealed_columns_of(table: str) -> list[SealedColumn]:
    return [s for s in SEALED_COLUMNS if s.table == table]
