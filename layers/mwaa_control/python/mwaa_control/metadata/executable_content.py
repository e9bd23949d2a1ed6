"""Rows Airflow turns into code, checked before a restore writes them.

Pickles are not the only way a metadata row becomes code in the target environment:
- the triggerer imports `trigger.classpath` and calls it with the row's kwargs
  (`import_string(classpath)(**kwargs)`): `subprocess.Popen` with an argument list is a command;
- `log_template.filename` is rendered with an unsandboxed Jinja template whenever a task log is
  written or shown: `{{ cycler.__init__.__globals__.os.system(...) }}` is a command.

An authenticated backup proves who wrote it, not that its rows are harmless: a backup of one
environment restored into another (`--source-environment`), or one restored with
`--allow-unauthenticated`, must not carry code across. So every restore admits only trigger
classes that look like Airflow's own or a provider's (`airflow[.providers.*].triggers.*.<Name>Trigger`,
or a prefix the operator trusts explicitly) and log templates built from Airflow's own template
vocabulary (attribute lookups, comparisons with numbers, a few string filters), and refuses the
backup otherwise, naming table, column and row. Written by hand: Jinja's sandbox would have to be
the one the target renders with, and it is not; a grammar this small is easier to audit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from mwaa_control.metadata.errors import RestoreRefused
from mwaa_control.metadata.memory import parquet_reader

# airflow.triggers.temporal.DateTimeTrigger, airflow.providers.amazon.aws.triggers.s3.S3KeyTrigger, ...
AIRFLOW_TRIGGER = re.compile(
    r"airflow\.(?:providers\.[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\.)?triggers\.[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*"
    r"\.[A-Z][A-Za-z0-9]*Trigger"
)
_CLASSPATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")

# The Jinja Airflow's log filename templates use: {{ ti.dag_id }}, {{ try_number }},
# {{ ts | replace(':', '_') }}, {% if ti.map_index >= 0 %}...{% endif %}.
_NAME = r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*"
_LITERAL = r"(?:-?\d+|'[^'{}%\\]*'|\"[^\"{}%\\]*\")"
_ARGUMENT = r"(?:" + _LITERAL + "|" + _NAME + ")"
_FILTER = (
    r"(?:replace|lower|upper|trim|string|int|default)(?:\(\s*" + _ARGUMENT + r"(?:\s*,\s*" + _ARGUMENT + r")*\s*\))?"
)
_EXPRESSION = re.compile(r"\s*" + _NAME + r"(?:\s*\|\s*" + _FILTER + r")*\s*")
_STATEMENT = re.compile(r"\s*(?:if\s+" + _NAME + r"\s*(?:>=|<=|==|!=|>|<)\s*" + _LITERAL + r"|else|endif)\s*")
_BLOCK = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
_FORMAT_FIELD = re.compile(r"\{([^{}]*)\}")


def trigger_classpath_problem(classpath: object, trusted_prefixes: Iterable[str] = ()) -> str | None:
    """Why a trigger class may not be restored, or None when it may."""
    if not isinstance(classpath, str) or not _CLASSPATH.fullmatch(classpath):
        return f"{str(classpath)[:120]!r} is not a dotted class path"
    if AIRFLOW_TRIGGER.fullmatch(classpath):
        return None
    if any(classpath.startswith(p.rstrip(".") + ".") for p in trusted_prefixes if p.strip(".")):
        return None
    return (
        f"{classpath!r} is not an Airflow or provider trigger class (airflow[.providers.*].triggers.*.<Name>Trigger); "
        "the triggerer would import and call it with the row's kwargs. Trust its module explicitly to restore it"
    )


def log_template_problem(template: object) -> str | None:
    """Why a log filename template may not be restored, or None when it may."""
    if template is None:
        return None
    if not isinstance(template, str):
        return "is not text"
    if "{{" in template or "{%" in template:
        rest = _BLOCK.sub("", template)
        if "{{" in rest or "}}" in rest or "{%" in rest or "%}" in rest or "{#" in rest:
            return f"{template[:160]!r} has an unclosed or unknown Jinja block"
        for expression, statement in _BLOCK.findall(template):
            if expression and not _EXPRESSION.fullmatch(expression):
                return f"{template[:160]!r}: {{{{{expression.strip()[:80]}}}}} is not a plain attribute lookup"
            if statement and not _STATEMENT.fullmatch(statement):
                return f"{template[:160]!r}: {{%{statement.strip()[:80]}%}} is not an if/else/endif on a number"
        return None
    # Without Jinja, Airflow formats the template with str.format: fields may only name values.
    for field in _FORMAT_FIELD.findall(template):
        if field and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", field):
            return f"{template[:160]!r}: the format field {{{field[:80]}}} is not a plain name"
    return None


def _rows(path: Path, columns: list[str]) -> Iterator[dict[str, object]]:
    parquet = parquet_reader(path)
    present = [c for c in columns if c in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(columns=present, batch_size=4096):
        yield from batch.to_pylist()


def check_executable_content(files: dict[str, Path], *, trusted_trigger_prefixes: Iterable[str] = ()) -> None:
    """Refuse a backup whose rows would make the target run code (before the restore opens)."""
    prefixes = list(trusted_trigger_prefixes)
    if "trigger" in files:
        for row in _rows(files["trigger"], ["id", "classpath"]):
            problem = trigger_classpath_problem(row.get("classpath"), prefixes)
            if problem:
                raise RestoreRefused(f"trigger.classpath of row id={row.get('id')}: {problem} (nothing was changed)")
    if "log_template" in files:
        for row in _rows(files["log_template"], ["id", "filename", "elasticsearch_id"]):
            for column in ("filename", "elasticsearch_id"):
                problem = log_template_problem(row.get(column))
                if problem:
                    raise RestoreRefused(
                        f"log_template.{column} of row id={row.get('id')}: {problem}; Airflow renders it as an "
                        "unsandboxed template (nothing was changed)"
                    )
