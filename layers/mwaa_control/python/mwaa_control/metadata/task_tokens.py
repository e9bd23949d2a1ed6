"""Step Functions task tokens never reach a backup.

The control plane triggers DAG runs with a callback block in the conf: `{"mwaa_control":
{"task_token": ..., "region": ...}}` (the legacy contract) or a reference to a stored callback
(`{"callback_id": ..., "table": ..., "region": ...}`). A task token is a live credential: whoever
holds it can complete the waiting workflow step. Airflow keeps the conf in plaintext (pickled on
Airflow 2, JSON on Airflow 3), so a backup drops the `task_token` value of that block and keeps
everything else, the callback reference included; the manifest counts what was dropped.

The audit log holds the conf too: `airflow dags trigger -c '<conf>'` (the control plane's CLI
path) logs its whole command line in `log.extra` of its `cli_*` event, as the repr of sys.argv
inside a JSON object, so the token sits in a JSON string inside a Python string inside a JSON
string; the web server and REST API log the conf as JSON or form fields. Sealing that extra is not
enough: a restore unseals it and writes the token back in plaintext. `strip_audit_extra` replaces
every token value, however deeply escaped, by `TOKEN_MARKER` and keeps every other byte, so an
operator still reads what was triggered.

New runs carry no token: the control plane now passes a callback reference in the conf. The
stripping is for runs and audit rows written before that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from mwaa_control.metadata.pickles import load_plain, repickle
from mwaa_control.metadata.schema import Kind, Table

BLOCK = "mwaa_control"
TOKEN = "task_token"  # noqa: S105 - the key of the value dropped, not a secret
TOKEN_MARKER = "<task-token-removed-by-backup>"  # noqa: S105 - what replaces one: no quote, space, &, backslash
# `task_token` as a key: its closing quote, a colon, the value's opening quote, each quote escaped
# by any number of backslashes (JSON in a Python repr in JSON, ...); then the value up to the next
# quote or backslash. And `task_token=<value>` (query strings, form posts).
QUOTED_TOKEN = re.compile(r"""(task_token\\*["']\s*:\s*\\*["'])([^"'\\]+)""")
ASSIGNED_TOKEN = re.compile(r"""(\btask_token=)([^&"'\s\\,;]+)""")


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


def strip_audit_extra(extra: str | None) -> tuple[str | None, int]:
    """An audit-log extra with every task token value replaced by TOKEN_MARKER, and how many were.
    Every other character is kept (a JSON extra stays the same JSON, a logged command line the
    same command line); an extra without a token is returned as it is."""
    if not extra or TOKEN not in extra:
        return extra, 0
    replaced = 0

    def marker(match: re.Match[str]) -> str:
        nonlocal replaced
        if match.group(2) == TOKEN_MARKER:
            return match.group(0)
        replaced += 1
        return match.group(1) + TOKEN_MARKER

    stripped = ASSIGNED_TOKEN.sub(marker, QUOTED_TOKEN.sub(marker, extra))
    return stripped, replaced


def stripped_audit_batches(batches: Iterator[pa.RecordBatch], counter: list[int]) -> Iterator[pa.RecordBatch]:
    """log batches with every task token in `extra` replaced by TOKEN_MARKER (before sealing);
    counter[0] counts them. Batches without a token pass untouched."""
    for batch in batches:
        index = batch.schema.get_field_index("extra")
        if index < 0:
            yield batch
            continue
        column = batch.column(index)
        values = column.to_pylist()
        if not any(isinstance(v, str) and TOKEN in v for v in values):
            yield batch
            continue
        out: list[str | None] = []
        for value in values:
            kept, count = strip_audit_extra(value)
            counter[0] += count
            out.append(kept)
        yield batch.set_column(index, batch.schema.field(index), pa.array(out, column.type))


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
