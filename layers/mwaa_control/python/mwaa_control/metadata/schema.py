"""The live schema of an Airflow metadata database, reflected with SQLAlchemy (1.4 inside Airflow 2
workers, 2.x elsewhere), reduced to what backup and restore need: typed columns, keys, references
(declared and soft) and an order in which parents come before children."""

from __future__ import annotations

import graphlib
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from mwaa_control.metadata import catalog
from mwaa_control.metadata.catalog import Role


class Kind(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    BINARY = "binary"
    JSON = "json"
    TEXT = "text"


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.INTEGER: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.BOOLEAN: pa.bool_(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.DATE: pa.date32(),
    Kind.BINARY: pa.binary(),
    Kind.JSON: pa.string(),
    Kind.TEXT: pa.string(),
}


def kind_of(column_type: Any) -> Kind:
    name = type(column_type).__name__.upper()
    if "JSON" in name:
        return Kind.JSON
    if isinstance(column_type, sa.Boolean):
        return Kind.BOOLEAN
    if isinstance(column_type, sa.Integer):
        return Kind.INTEGER
    if isinstance(column_type, sa.Float | sa.Numeric):
        return Kind.FLOAT
    if isinstance(column_type, sa.DateTime):
        return Kind.TIMESTAMP
    if isinstance(column_type, sa.Date):
        return Kind.DATE
    if isinstance(column_type, sa.LargeBinary) or name in {"BYTEA", "BLOB"}:
        return Kind.BINARY
    return Kind.TEXT


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool
    naive: bool = False
    """A timestamp without time zone (Airflow keeps UTC in it, e.g. task_instance.trigger_timeout)."""


@dataclass(frozen=True)
class Reference:
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    declared: bool


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: tuple[str, ...]
    unique_keys: list[tuple[str, ...]]
    references: list[Reference]
    role: Role
    why: str
    classified: bool
    update_on_conflict: tuple[str, ...] | None = None
    sealed: list[catalog.SealedColumn] = field(default_factory=list)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name}.{name}")

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    @property
    def surrogate_id(self) -> str | None:
        """The integer primary key the database generates, which a restore must regenerate."""
        if len(self.primary_key) == 1 and self.column(self.primary_key[0]).kind is Kind.INTEGER:
            key = self.primary_key[0]
            if not any(key in ref.columns for ref in self.references):
                return key
        return None

    @property
    def identities(self) -> list[tuple[str, ...]]:
        """Column sets that identify a row across databases (natural keys)."""
        keys = [] if self.surrogate_id else [self.primary_key]
        return [k for k in keys + [k for k in self.unique_keys if k != self.primary_key] if k]

    @property
    def fingerprint(self) -> tuple[str, ...] | None:
        """For a table whose rows have no natural key (jobs, triggers, the audit log, dataset events):
        the columns whose content identifies a row across databases (catalog.FINGERPRINTS, or every
        column but the surrogate id and sealed secrets, which are re-encrypted on every restore).
        None when the table has a natural key or no regenerated id."""
        if self.identities or not self.surrogate_id:
            return None
        chosen = catalog.fingerprint_columns(self.name)
        if chosen:
            return tuple(c for c in chosen if self.has(c))
        sealed = {s.column for s in self.sealed}
        return tuple(c for c in self.column_names if c != self.surrogate_id and c not in sealed)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in self.columns])


@dataclass
class Schema:
    dialect: str
    tables: dict[str, Table]
    revision: str | None

    def ordered(self, roles: set[Role] | None = None) -> list[Table]:
        """Parents before children, following declared and soft references."""
        graph: dict[str, set[str]] = {name: set() for name in self.tables}
        for table in self.tables.values():
            for ref in table.references:
                if ref.parent in self.tables and ref.parent != table.name:
                    graph[table.name].add(ref.parent)
        order = list(graphlib.TopologicalSorter(graph).static_order())
        return [self.tables[n] for n in order if roles is None or self.tables[n].role in roles]


def reflect(connection: Any) -> Schema:
    with warnings.catch_warnings():
        # SQLite reflection warns about Airflow's unnamed composite foreign keys; they are still found.
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        return _reflect(connection)


@dataclass(frozen=True)
class _Described:
    """What the inspector says of one table, in its own dictionaries."""

    columns: list[dict[str, Any]]
    primary_key: dict[str, Any]
    unique_constraints: list[dict[str, Any]]
    indexes: list[dict[str, Any]]
    foreign_keys: list[dict[str, Any]]


def _describe(inspector: Any, names: list[str]) -> dict[str, _Described]:
    """Every table's columns, keys, indexes and foreign keys. SQLAlchemy 2 asks the catalog once per
    kind for all tables (a handful of queries); asked table by table, PostgreSQL takes ~290 catalog
    queries, half a second of every backup, restore and verification. Airflow 2 workers run
    SQLAlchemy 1.4, which has only the per-table calls."""
    if not hasattr(inspector, "get_multi_columns"):
        # A copy of the columns, taken first: SQLAlchemy 1.4's SQLite get_pk_constraint sorts the
        # inspector's cached column list in place (primary key last), which would reorder them here.
        return {
            name: _Described(
                list(inspector.get_columns(name)),
                inspector.get_pk_constraint(name),
                inspector.get_unique_constraints(name),
                inspector.get_indexes(name),
                inspector.get_foreign_keys(name),
            )
            for name in names
        }
    columns = inspector.get_multi_columns(filter_names=names)
    primary_keys = inspector.get_multi_pk_constraint(filter_names=names)
    uniques = inspector.get_multi_unique_constraints(filter_names=names)
    indexes = inspector.get_multi_indexes(filter_names=names)
    foreign_keys = inspector.get_multi_foreign_keys(filter_names=names)
    # Keyed by (schema, table); the default schema's key is None.
    return {
        name: _Described(
            list(columns.get((None, name), [])),
            primary_keys.get((None, name)) or {},
            uniques.get((None, name), []),
            indexes.get((None, name), []),
            foreign_keys.get((None, name), []),
        )
        for name in names
    }


def _in_preference_order(keys: list[tuple[str, ...]], columns: list[Column]) -> list[tuple[str, ...]]:
    """The database's unique keys in an order that does not depend on the database: the first is a
    table's matching key on restore, and PostgreSQL's catalog lists constraints in no fixed order.
    Keys whose columns are all NOT NULL come first (a NULL matches nothing), then by the position of
    their columns in the table (ab_user's username before its email; Airflow 2's dag_run key on
    execution_date before run_id, which may be NULL there; Airflow 3's on run_id before logical_date,
    which may be NULL there)."""
    position = {c.name: i for i, c in enumerate(columns)}
    nullable = {c.name for c in columns if c.nullable}
    known = [k for k in keys if k and all(c in position for c in k)]
    return sorted(known, key=lambda k: (any(c in nullable for c in k), [position[c] for c in k]))


def _reflect(connection: Any) -> Schema:
    inspector = sa.inspect(connection)
    tables: dict[str, Table] = {}
    # SQLAlchemy 1.4 lists SQLite's own tables (sqlite_sequence) too: they are not Airflow's.
    table_names = sorted(n for n in inspector.get_table_names() if not n.startswith("sqlite_"))
    described = _describe(inspector, table_names)
    for name in table_names:
        found = described[name]
        rule = catalog.rule_for(name)
        columns = [
            Column(
                c["name"],
                kind_of(c["type"]),
                bool(c.get("nullable", True)),
                naive=isinstance(c["type"], sa.DateTime) and not getattr(c["type"], "timezone", False),
            )
            for c in found.columns
        ]
        primary_key = tuple(found.primary_key.get("constrained_columns") or ())
        unique = _in_preference_order(
            [tuple(u["column_names"]) for u in found.unique_constraints]
            + [tuple(i["column_names"]) for i in found.indexes if i.get("unique")],
            columns,
        )
        if rule.natural_key:
            unique.append(rule.natural_key)
        references = [
            Reference(tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]), True)
            for f in found.foreign_keys
            if f.get("referred_table")
        ]
        # Airflow declares some foreign keys twice under two names (dataset_alias_dataset on
        # PostgreSQL): remapping a column once per declaration would shift it twice.
        references = list(dict.fromkeys(references))
        declared = {(r.columns, r.parent) for r in references}
        names = {c.name for c in columns}
        for soft in catalog.SOFT_REFERENCES:
            if soft.table == name and soft.column in names and ((soft.column,), soft.parent) not in declared:
                references.append(Reference((soft.column,), soft.parent, (soft.parent_column,), False))
        tables[name] = Table(
            name=name,
            columns=columns,
            primary_key=primary_key,
            unique_keys=list(dict.fromkeys(k for k in unique if k and all(c in names for c in k))),
            references=references,
            role=rule.role,
            why=rule.why,
            classified=catalog.is_classified(name),
            update_on_conflict=rule.update_on_conflict,
            sealed=[s for s in catalog.sealed_columns_of(name) if s.column in names],
        )
    revision = None
    if "alembic_version" in tables:
        rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
        revision = ",".join(sorted(str(r[0]) for r in rows)) or None
    return Schema(connection.dialect.name, tables, revision)


def canonical(kind: Kind, value: Any) -> Any:
    """A value as it means the same on every dialect, for fingerprints and meaning checks: JSON
    parsed and re-dumped with sorted keys (PostgreSQL's jsonb reorders), whole floats as integers
    (SQLite keeps float seconds in INTEGER columns), timestamps in ISO form."""
    if value is None:
        return None
    if kind is Kind.JSON and isinstance(value, str):
        try:
            return json.dumps(json.loads(value), sort_keys=True, ensure_ascii=False)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def fingerprints(columns: list[tuple[Kind, list[Any]]], rows: int) -> list[str]:
    """One digest per row over the given columns' canonical values."""
    if not columns:
        return [""] * rows
    out = []
    for values in zip(*(v for _, v in columns), strict=True):
        parts = [canonical(kind, value) for (kind, _), value in zip(columns, values, strict=True)]
        out.append(hashlib.sha256(json.dumps(parts, default=str, ensure_ascii=False).encode()).hexdigest())
    return out
