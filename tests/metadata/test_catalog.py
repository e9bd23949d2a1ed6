"""The catalog of references is complete for every supported Airflow release: each integer column
named like a reference is a declared foreign key, a catalogued soft reference, or explicitly not a
reference. A column missing from the catalog keeps its old id on restore and silently points at
another row once ids shift (dataset_event.dataset_id did)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from mwaa_control.metadata import catalog
from mwaa_control.metadata.restore import RESTORED_ROLES
from tests.metadata.versions import cached_releases, dump_schema, load_fixture

ROOT = Path(__file__).resolve().parents[2]
# `*_id`, and the other shapes Airflow gives a reference: `queued_by_job_id`, `*_by`, `*_job`.
REFERENCE_LIKE = re.compile(r"(_id|_by|_job|_trigger|_run|_dataset|_asset)$")
SUPPORTED = ["2.9.2", "2.11.0", "3.0.6"]
VENVS = {release: ROOT / ".airflow" / release for release in SUPPORTED}


def uncatalogued(dumped: Mapping[str, object]) -> list[str]:
    soft = {(s.table, s.column) for s in catalog.SOFT_REFERENCES}
    found = []
    tables = dumped["tables"]
    assert isinstance(tables, dict)
    for name, table in sorted(tables.items()):
        declared = {fk["column"] for fk in table["foreign_keys"]}
        surrogate = table["primary_key"] if len(table["primary_key"]) == 1 else []
        for column in table["columns"]:
            if not column["integer"] or not REFERENCE_LIKE.search(column["name"]):
                continue
            key = (name, column["name"])
            if column["name"] in declared or column["name"] in surrogate or key in soft:
                continue
            if key not in getattr(catalog, "NOT_REFERENCES", {}):
                found.append(f"{name}.{column['name']}")
    return found


def test_every_supported_release_has_a_schema_fixture() -> None:
    assert set(SUPPORTED) <= set(cached_releases())


@pytest.mark.parametrize("release", cached_releases())
def test_every_integer_reference_is_declared_or_catalogued(release: str) -> None:
    missing = uncatalogued(load_fixture(release))
    assert not missing, f"Airflow {release}: integer columns named like references, not catalogued: {missing}"


def test_soft_references_name_real_columns() -> None:
    """A catalogued reference that no release has is a typo, and protects nothing."""
    columns = {
        (table, column["name"])
        for release in cached_releases()
        for table, shape in load_fixture(release)["tables"].items()
        for column in shape["columns"]
    }
    named = {(s.table, s.column) for s in catalog.SOFT_REFERENCES} | set(getattr(catalog, "NOT_REFERENCES", {}))
    assert not named - columns


def unrestorable(dumped: Mapping[str, object]) -> list[str]:
    """NOT NULL references of restored tables to tables a restore does not write: every restore of
    such a row is refused (Airflow 3.2 made dag.bundle_name NOT NULL while dag_bundle was derived)."""
    tables = dumped["tables"]
    assert isinstance(tables, dict)
    soft = [(s.table, s.column, s.parent) for s in catalog.SOFT_REFERENCES]
    found = []
    for name, table in sorted(tables.items()):
        if catalog.rule_for(name).role not in RESTORED_ROLES:
            continue
        required = {c["name"] for c in table["columns"] if not c["nullable"]}
        references = [(fk["column"], fk["parent"]) for fk in table["foreign_keys"]]
        references += [(column, parent) for t, column, parent in soft if t == name]
        for column, parent in references:
            if column in required and parent != name and catalog.rule_for(parent).role not in RESTORED_ROLES:
                found.append(f"{name}.{column} -> {parent} ({catalog.rule_for(parent).role.value})")
    return found


def test_every_table_of_every_release_is_classified() -> None:
    """A table the catalog does not know is kept as history: right for a log, wrong for a table of
    secrets or one derived from the DAG files. Each release's new tables get a decision."""
    unknown = {
        release: [t for t in load_fixture(release)["tables"] if not catalog.is_classified(t)]
        for release in cached_releases()
    }
    assert not {r: t for r, t in unknown.items() if t}


@pytest.mark.parametrize("release", cached_releases())
def test_no_restored_row_needs_a_parent_that_is_not_restored(release: str) -> None:
    missing = unrestorable(load_fixture(release))
    assert not missing, f"Airflow {release}: NOT NULL references to tables not restored: {missing}"


def test_the_check_finds_a_required_reference_to_a_derived_table() -> None:
    dumped = {
        "tables": {
            "dag": {
                "columns": [
                    {"name": "dag_id", "integer": False, "nullable": False},
                    {"name": "bundle_name", "integer": False, "nullable": False},
                ],
                "primary_key": ["dag_id"],
                "foreign_keys": [{"column": "bundle_name", "parent": "serialized_dag", "parent_column": "name"}],
            },
        }
    }
    assert unrestorable(dumped) == ["dag.bundle_name -> serialized_dag (derived)"]


def test_the_check_finds_a_missing_reference() -> None:
    """The walk itself fails on an uncatalogued `*_id` column (it is not vacuous)."""
    dumped = {
        "tables": {
            "dataset_event": {
                "columns": [{"name": "id", "integer": True}, {"name": "dataset_id", "integer": True}],
                "primary_key": ["id"],
                "foreign_keys": [],
            },
            "widget": {
                "columns": [{"name": "id", "integer": True}, {"name": "owner_id", "integer": True}],
                "primary_key": ["id"],
                "foreign_keys": [],
            },
        }
    }
    assert uncatalogued(dumped) == ["widget.owner_id"]


@pytest.mark.matrix
@pytest.mark.parametrize("release", SUPPORTED)
def test_schema_fixture_matches_the_release(release: str) -> None:
    """Regenerates the fixture from the release's own models (`make test-matrix`): a fixture that
    drifted from its release would make the completeness test check the wrong columns."""
    venv = VENVS[release]
    # `make test-matrix` installs every release: a missing one is a failure, not a skip.
    assert (venv / "bin" / "python").exists(), f"no virtualenv {venv}: run make matrix-venvs"
    assert dump_schema(venv) == load_fixture(release)
