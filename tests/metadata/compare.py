"""Row-for-row comparison of a restored database with its source, read through SQLAlchemy's own
reflection (not the engine's reader), with the restore report's id mapping applied."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from mwaa_control.metadata.manifest import RestoreReport
from mwaa_control.metadata.pickles import load_plain
from mwaa_control.metadata.restore import LEDGER_EVENT
from mwaa_control.metadata.schema import Schema

Row = dict[str, Any]
ENCRYPTED = {("variable", "val"): "is_encrypted", ("connection", "password"): "is_encrypted"}
ENCRYPTED_EXTRA = {("connection", "extra"): "is_extra_encrypted"}


def normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def read_table(engine: sa.engine.Engine, table: str) -> list[Row]:
    metadata = sa.MetaData()
    reflected = sa.Table(table, metadata, autoload_with=engine)
    with engine.connect() as connection:
        return [{k: normalise(v) for k, v in row._mapping.items()} for row in connection.execute(sa.select(reflected))]


def decrypt(rows: list[Row], table: str, key: str) -> list[Row]:
    """Fernet ciphertexts differ on every encryption: compare what they decrypt to."""
    fernet = Fernet(key.encode())
    out = []
    for stored in rows:
        row = dict(stored)
        for (name, column), flag in {**ENCRYPTED, **ENCRYPTED_EXTRA}.items():
            if name == table and row.get(flag) and row.get(column) is not None:
                row[column] = "decrypted:" + fernet.decrypt(row[column].encode()).decode()
        if table == "trigger" and row.get("kwargs") is not None:
            with contextlib.suppress(InvalidToken):
                row["kwargs"] = "decrypted:" + fernet.decrypt(str(row["kwargs"]).encode()).decode()
        out.append(row)
    return out


def expected_target(
    table: str,
    source: list[Row],
    before: list[Row],
    schema: Schema,
    report: RestoreReport,
) -> list[Row]:
    """The target as it should be: its earlier rows (updated where the backup wins) plus the
    source's rows with every regenerated id and reference mapped, references to tables that are
    not restored cleared."""
    results = {t.table: t for t in report.tables}
    shape = schema.tables[table]

    def new_id(parent: str, old: Any) -> Any:
        if old is None or parent not in results or results[parent].id_offset is None:
            return old
        reused = results[parent].reused_ids
        return reused.get(int(old), int(old) + int(results[parent].id_offset or 0))

    mapped = []
    for original in source:
        row = dict(original)
        if shape.surrogate_id:
            row[shape.surrogate_id] = new_id(table, row[shape.surrogate_id])
        for ref in shape.references:
            if len(ref.columns) != 1 or ref.parent == table:
                continue
            parent = schema.tables.get(ref.parent)
            if parent is None or parent.surrogate_id != ref.parent_columns[0]:
                continue
            column = ref.columns[0]
            if ref.parent in results:
                row[column] = new_id(ref.parent, row[column])
            else:
                row[column] = None
        mapped.append(row)
    expected = [dict(r) for r in before]
    update = set(shape.update_on_conflict) if shape.update_on_conflict is not None else None
    for row in mapped:
        match = None
        for key in shape.identities:
            match = next(
                (e for e in before if all(e[c] == row[c] for c in key) and None not in [row[c] for c in key]), None
            )
            if match is not None:
                break
        if match is None:
            expected.append(row)
            continue
        if shape.role.value != "configuration":
            continue
        target = next(e for e in expected if e is match or e == match)
        columns = update if update is not None else {c for c in row if c != shape.surrogate_id}
        for column in columns:
            target[column] = row[column]
    return expected


def without_task_token(row: Row) -> Row:
    """A run's conf, loaded, without the Step Functions task token a backup never carries. Only
    confs with the control plane's callback block are loaded (by the restricted loader: there is
    no pendulum in this process); the others are compared byte for byte."""
    conf = row.get("conf")
    if not isinstance(conf, bytes) or b"mwaa_control" not in conf:
        return row
    loaded = load_plain(conf, where="dag_run.conf")
    block = loaded.get("mwaa_control") if isinstance(loaded, dict) else None
    if isinstance(block, dict):
        loaded["mwaa_control"] = {k: v for k, v in block.items() if k != "task_token"}
    return {**row, "conf": loaded}


def without_ledger(table: str, rows: list[Row]) -> list[Row]:
    return [r for r in rows if not (table == "log" and r.get("event") == LEDGER_EVENT)]


def multiset(rows: list[Row]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True, default=repr) for r in rows)
