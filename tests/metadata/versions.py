"""The metadata schema of each Airflow release, as its own SQLAlchemy models declare it: tables,
columns (with whether each is an integer and nullable), primary keys and declared foreign keys. Dumped in a
subprocess of the release's virtualenv (Airflow cannot be imported here), cached as small JSON
fixtures under tests/metadata/data/, and checked against the catalog's references."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = "schema-{release}.json"

# Runs inside the release's virtualenv: imports every model, then dumps Base.metadata.
DUMPER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import airflow
import sqlalchemy as sa
try:
    from airflow.models import import_all_models
    import_all_models()
except ImportError:
    import airflow.models  # noqa: F401
from airflow.models.base import Base
try:  # the FAB provider's web users (ab_*) are not restored; their models may be absent
    import airflow.providers.fab.auth_manager.models  # noqa: F401
except Exception:
    pass
tables = {}
for table in sorted(Base.metadata.tables.values(), key=lambda t: t.name):
    columns = []
    for column in table.columns:
        try:
            python_type = column.type.python_type
            integer = python_type is int
        except NotImplementedError:
            integer = isinstance(column.type, sa.Integer)
        columns.append({
            "name": column.name,
            "integer": bool(integer and not isinstance(column.type, sa.Boolean)),
            "nullable": bool(column.nullable),
        })
    # target_fullname, not fk.column: the referred table (ab_user) may not be imported.
    foreign_keys = sorted(
        {(fk.parent.name, *fk.target_fullname.rsplit(".", 1)) for fk in table.foreign_keys}
    )
    tables[table.name] = {
        "columns": columns,
        "primary_key": [c.name for c in table.primary_key.columns],
        "foreign_keys": [{"column": c, "parent": p, "parent_column": pc} for c, p, pc in foreign_keys],
    }
print(json.dumps({"airflow_version": airflow.__version__, "tables": tables}, sort_keys=True))
"""


def dump_schema(venv: Path, timeout: float = 300) -> dict[str, Any]:
    """The schema the models of the Airflow in `venv` declare (a virtualenv path, e.g.
    .airflow/2.11.0). Nothing is migrated: a throwaway AIRFLOW_HOME keeps the import quiet."""
    with tempfile.TemporaryDirectory(prefix="airflow-schema-") as home:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
            "PYTHONWARNINGS": "ignore",
        }
        done = subprocess.run(
            [str(venv.resolve() / "bin" / "python"), "-c", DUMPER],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            cwd=home,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"dumping the schema of {venv} failed ({done.returncode}): {done.stderr[-3000:]}")
    dumped: dict[str, Any] = json.loads(lines[-1])
    return dumped


def fixture_path(release: str) -> Path:
    return DATA / FIXTURE.format(release=release)


def load_fixture(release: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(fixture_path(release).read_text())
    return loaded


def write_fixture(release: str, dumped: dict[str, Any]) -> None:
    fixture_path(release).write_text(json.dumps(dumped, indent=1, sort_keys=True) + "\n")


def cached_releases() -> list[str]:
    return sorted(p.name.removeprefix("schema-").removesuffix(".json") for p in DATA.glob("schema-*.json"))
