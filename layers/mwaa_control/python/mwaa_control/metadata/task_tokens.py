"""Step Functions task tokens never reach a backup.

The control plane triggers DAG runs with a callback block in the conf: `{"mwaa_control":
{"task_token": ..., "region": ...}}` (the legacy contract) or a reference to a stored callback
(`{"callback_id": ..., "table": ..., "region": ...}`). A task token is a live credential: whoever
holds it can complete the waiting workflow step. Airflow keeps the conf in plaintext (pickled on
Airflow 2, JSON on Airflow 3), so a backup drops the `task_token` value of that block and keeps
everything else, the callback reference included; the manifest counts what was dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from mwaa_control.metadata.pickles import load_plain, repickle
from mwaa_control.metadata.schema import Kind, Table

BLOCK = "mwaa_control"
TOKEN = "task_token"  # noqa: S105 - the key of the value dropped, not a secret


def without_task_token(conf: Any) -> tuple[Any, bool]:
    """The conf without its callback block's task token, and whether there was one."""
    if not isinstance(conf, dict) or not isinstance(conf.get(BLOCK), dict) or TOKEN not in conf[BLOCK]:
        return conf, False
    block = {k: v for k, v in conf[BLOCK].items() if k != TOKEN}
    return {**conf, BLOCK: block}, True


def strip_pickled(data: bytes, *, where: str) -> tuple[bytes, bool]:
    """Airflow 2's pickled conf. Only a conf that holds a token is loaded (by the restricted
    unpickler) and written again; every other one is kept byte for byte."""
    if TOKEN.encode() not in data:
        return data, False
    conf, dropped = without_task_token(load_plain(data, where=where))
    return (repickle(conf, where=where), True) if dropped else (data, False)


def strip_json(text: str) -> tuple[str, bool]:
    """Airflow 3's JSON conf (and the REST API's)."""
    if TOKEN not in text:
        return text, False
    try:
        conf = json.loads(text)
    except ValueError:
        return text, False
    stripped, dropped = without_task_token(conf)
    return (json.dumps(stripped, ensure_ascii=False), True) if dropped else (text, False)


def stripped_batches(batches: Iterator[pa.RecordBatch], table: Table, counter: list[int]) -> Iterator[pa.RecordBatch]:
    """dag_run batches with every conf's task token dropped; counter[0] counts them."""
    binary = table.column("conf").kind is Kind.BINARY
    needle: Any = TOKEN.encode() if binary else TOKEN
    for batch in batches:
        column = batch.column("conf")
        values = column.to_pylist()
        if not any(v is not None and needle in v for v in values):
            yield batch
            continue
        run_ids = batch.column("run_id").to_pylist() if table.has("run_id") else ["?"] * len(values)
        out: list[Any] = []
        for value, run_id in zip(values, run_ids, strict=True):
            if value is None:
                out.append(None)
                continue
            kept: Any
            if binary:
                kept, dropped = strip_pickled(value, where=f"dag_run.conf of run {run_id!r}")
            else:
                kept, dropped = strip_json(value)
            counter[0] += dropped
            out.append(kept)
        index = batch.schema.get_field_index("conf")
        yield batch.set_column(index, batch.schema.field(index), pa.array(out, column.type))
