"""Athena over the backups, played by DuckDB: the Glue tables of template.yaml become views with the
same names, columns and types over the Parquet files the backup engine wrote, located the way
partition projection locates them (`storage.location.template`), with the partition columns
`environment` and `backup_id` added as Athena adds them. A column a backup's file lacks reads as
NULL, as it does in Athena (Parquet columns are matched by name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from localcloud.template import ROOT, load_template, resources_of_type
from mwaa_control.metadata.schema import ARROW_TYPES, Kind

ANALYTICS = ROOT / "analytics"
BUCKET = "${MetadataBackupBucket}"

# Glue (Hive) type -> the engine's Parquet type for it, and the type Athena gives the column.
GLUE_TO_ARROW: dict[str, pa.DataType] = {
    "bigint": ARROW_TYPES[Kind.INTEGER],
    "double": ARROW_TYPES[Kind.FLOAT],
    "boolean": ARROW_TYPES[Kind.BOOLEAN],
    "timestamp": ARROW_TYPES[Kind.TIMESTAMP],
    "binary": ARROW_TYPES[Kind.BINARY],
    "string": ARROW_TYPES[Kind.TEXT],
}
# Athena reads a Parquet timestamp as a `timestamp` without time zone, in UTC.
GLUE_TO_DUCKDB = {
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "binary": "BLOB",
    "string": "VARCHAR",
}


@dataclass(frozen=True)
class GlueColumn:
    name: str
    type: str
    comment: str


@dataclass(frozen=True)
class GlueTable:
    logical_id: str
    name: str
    columns: list[GlueColumn]
    partition_keys: list[GlueColumn]
    parameters: dict[str, Any]
    storage: dict[str, Any]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def only_on(self, line: str) -> set[str]:
        """Columns whose Comment says they exist on one Airflow line only ("Airflow 3 only")."""
        return {c.name for c in self.columns if c.comment.startswith(f"Airflow {line} only")}

    def location(self, bucket_root: Path, environment: str, backup_id: str) -> Path:
        """Where projection reads a partition: the location template with the query's values."""
        template = self.parameters["storage.location.template"]
        assert isinstance(template, dict), "storage.location.template should be a !Sub of the bucket"
        text = str(template["Fn::Sub"])
        resolved = text.replace("${!environment}", environment).replace("${!backup_id}", backup_id)
        prefix = f"s3://{BUCKET}/"
        assert resolved.startswith(prefix), resolved
        return bucket_root / resolved.removeprefix(prefix)


def _columns(entries: list[dict[str, Any]]) -> list[GlueColumn]:
    return [GlueColumn(str(e["Name"]), str(e["Type"]), str(e.get("Comment", ""))) for e in entries]


def glue_tables(template: dict[str, Any] | None = None) -> dict[str, GlueTable]:
    template = template or load_template()
    tables = {}
    for logical_id, resource in resources_of_type(template, "AWS::Glue::Table").items():
        table_input = resource["Properties"]["TableInput"]
        table = GlueTable(
            logical_id=logical_id,
            name=str(table_input["Name"]),
            columns=_columns(table_input["StorageDescriptor"]["Columns"]),
            partition_keys=_columns(table_input["PartitionKeys"]),
            parameters=dict(table_input["Parameters"]),
            storage=dict(table_input["StorageDescriptor"]),
        )
        tables[table.name] = table
    return tables


def named_queries(template: dict[str, Any] | None = None) -> dict[str, str]:
    """Logical id -> QueryString of every Athena named query."""
    template = template or load_template()
    return {
        logical_id: str(resource["Properties"]["QueryString"])
        for logical_id, resource in resources_of_type(template, "AWS::Athena::NamedQuery").items()
    }


def query_file(name: str) -> str:
    return (ANALYTICS / name).read_text()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _partition_select(table: GlueTable, files: list[Path], environment: str, backup_id: str) -> str:
    present = set(pq.read_schema(files[0]).names)
    columns = []
    for column in table.columns:
        source = _identifier(column.name) if column.name in present else "NULL"
        columns.append(f"CAST({source} AS {GLUE_TO_DUCKDB[column.type]}) AS {_identifier(column.name)}")
    columns += [f"{_literal(environment)} AS environment", f"{_literal(backup_id)} AS backup_id"]
    paths = ", ".join(_literal(str(f)) for f in files)
    return f"SELECT {', '.join(columns)} FROM read_parquet([{paths}])"


def athena(bucket_root: Path, tables: dict[str, GlueTable] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in which every Glue table of the template is a view over the backups
    under `bucket_root` (the local stand-in of the bucket: backups/{environment}/{backup_id}/...)."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    backups = bucket_root / "backups"
    partitions = [
        (environment.name, backup.name)
        for environment in sorted(backups.iterdir())
        for backup in sorted(environment.iterdir())
        if backup.is_dir()
    ]
    for table in (tables or glue_tables()).values():
        selects = []
        for environment, backup_id in partitions:
            folder = table.location(bucket_root, environment, backup_id)
            files = sorted(folder.glob("*.parquet"))
            if files:
                selects.append(_partition_select(table, files, environment, backup_id))
        if not selects:
            empty = [f"CAST(NULL AS {GLUE_TO_DUCKDB[c.type]}) AS {_identifier(c.name)}" for c in table.columns]
            empty += ["CAST(NULL AS VARCHAR) AS environment", "CAST(NULL AS VARCHAR) AS backup_id"]
            selects.append(f"SELECT {', '.join(empty)} WHERE false")
        connection.execute(f"CREATE VIEW {_identifier(table.name)} AS " + " UNION ALL ".join(selects))
    return connection


def run_query(connection: duckdb.DuckDBPyConnection, sql: str, *parameters: str) -> list[dict[str, Any]]:
    """Runs a query file with its `?` parameters, as Athena's execution parameters would."""
    cursor = connection.execute(sql, list(parameters))
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
