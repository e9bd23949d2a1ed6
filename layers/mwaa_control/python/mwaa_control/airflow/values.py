"""Validation of user-supplied values before they reach an Airflow command line.

Commands are built as argument lists and quoted with shlex, so quotes, spaces, newlines and shell
metacharacters arrive as data. What remains dangerous is a value Airflow's argument parser would
read as an option (a leading '-') or one Airflow itself would refuse; those are rejected here,
before anything is sent, with the rule that was broken.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mwaa_control.airflow.errors import UnsafeValue

# Airflow's KEY_REGEX for DAG and task ids (\w is Unicode-aware), at most 250 characters.
_DAG_ID = re.compile(r"^[\w.-]+$")
# Airflow's default run id pattern (scheduler.allowed_run_id_pattern).
_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")
_VARIABLE_KEY = re.compile(r"^[\w.-]+$")
MAX_CONF_BYTES = 256 * 1024
# Far beyond any real conf, far below the recursion limit of json.dumps and of Airflow's own
# (de)serialisers, which would fail with an untyped RecursionError.
MAX_CONF_DEPTH = 64


def _only_dots(value: str) -> bool:
    # "." and ".." are path segments, not ids, once they reach a REST path (/dags/..): refused.
    return value.strip(".") == ""


def dag_id(value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 250:
        raise UnsafeValue(f"DAG id must be 1-250 characters, got {len(value) if isinstance(value, str) else value!r}")
    if not _DAG_ID.fullmatch(value) or "\n" in value:
        raise UnsafeValue(f"DAG id {value!r} has characters Airflow does not allow (letters, digits, _ . - only)")
    if value.startswith("-"):
        raise UnsafeValue(f"DAG id {value!r} starts with '-' and would be read as an option")
    if _only_dots(value):
        raise UnsafeValue(f"DAG id {value[:8]!r} is made only of dots and would be read as a path segment")
    return value


def run_id(value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 250:
        raise UnsafeValue("run id must be 1-250 characters")
    if not _RUN_ID.fullmatch(value) or value.startswith("-"):
        raise UnsafeValue(f"run id {value!r} must match {_RUN_ID.pattern} and not start with '-'")
    if _only_dots(value):
        raise UnsafeValue(f"run id {value[:8]!r} is made only of dots and would be read as a path segment")
    return value


def variable_key(value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 250 or not _VARIABLE_KEY.fullmatch(value):
        raise UnsafeValue(f"variable key {value!r} must be 1-250 letters, digits, _ . -")
    if _only_dots(value):
        raise UnsafeValue(f"variable key {value[:8]!r} is made only of dots and would be read as a path segment")
    return value


def conf_depth_within_limit(conf: Any) -> Any:
    """The conf unchanged, or UnsafeValue if containers nest deeper than MAX_CONF_DEPTH.

    Walked with an explicit stack, so the check itself cannot hit the recursion limit, and it stops
    at the first container past the limit (a cyclic Python structure is refused the same way)."""
    stack: list[tuple[Any, int]] = [(conf, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else None
        if children is None:
            continue
        if depth > MAX_CONF_DEPTH:
            raise UnsafeValue(f"conf nests deeper than {MAX_CONF_DEPTH} levels of objects and arrays")
        stack.extend((child, depth + 1) for child in children)
    return conf


def conf_json(conf: Any) -> str:
    """The conf as a JSON object string (ASCII-escaped, so no raw newline or byte is ever quoted)."""
    if not isinstance(conf, dict):
        raise UnsafeValue(f"conf must be a JSON object, got {type(conf).__name__}")
    conf_depth_within_limit(conf)
    try:
        text = json.dumps(conf, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise UnsafeValue(f"conf is not JSON-serialisable: {error}") from None
    if len(text.encode()) > MAX_CONF_BYTES:
        raise UnsafeValue(f"conf is {len(text)} bytes; the limit is {MAX_CONF_BYTES} (pass large data by reference)")
    return text
