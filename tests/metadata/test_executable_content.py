"""Rows Airflow turns into code (trigger class paths, log filename templates) are refused before a
restore writes anything, even from an authentic backup: a backup of one environment restored into
another must not carry code across. Real Airflow 2.11 SQLite databases; the attacker is the source
environment's own execution role, so the backup authenticates."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mwaa_control.metadata.backup import BackupEngine, BackupRequest
from mwaa_control.metadata.database import open_database
from mwaa_control.metadata.errors import RestoreRefused
from mwaa_control.metadata.executable_content import log_template_problem, trigger_classpath_problem
from mwaa_control.metadata.restore import RestoreEngine, RestoreRequest
from tests.metadata.databases import Env, Templates, make_env, own_connection, populate

SOURCE, TARGET = "etl-staging", "etl-prod"
NOW = "2026-11-21 10:00:00.000000"


@pytest.mark.parametrize(
    "classpath",
    [
        "airflow.triggers.temporal.DateTimeTrigger",
        "airflow.triggers.external_task.WorkflowTrigger",
        "airflow.providers.amazon.aws.triggers.s3.S3KeyTrigger",
        "airflow.providers.cncf.kubernetes.triggers.pod.KubernetesPodTrigger",
    ],
)
def test_airflow_and_provider_triggers_are_admitted(classpath: str) -> None:
    assert trigger_classpath_problem(classpath) is None


@pytest.mark.parametrize(
    "classpath",
    [
        "subprocess.Popen",
        "os.system",
        "airflow.utils.process_utils.execute_in_subprocess",
        "airflow.triggers.base.os",  # a module attribute, not a trigger class
        "airflow.providers.x.triggers.y.Popen",  # a class imported into a triggers module
        "airflow.triggers..DateTimeTrigger",
        "builtins.eval",
        "",
        None,
    ],
)
def test_anything_else_is_refused_unless_its_module_is_trusted(classpath: Any) -> None:
    assert trigger_classpath_problem(classpath) is not None
    assert trigger_classpath_problem("acme.triggers.FileTrigger", ["acme.triggers"]) is None
    assert trigger_classpath_problem("acme.triggersx.FileTrigger", ["acme.triggers"]) is not None


def test_the_log_templates_airflow_writes_are_admitted(templates: Templates, tmp_path: Path, kms: Any) -> None:
    env = make_env(templates.v211, tmp_path, "real", kms)
    with sqlite3.connect(env.path) as db:
        rows = db.execute("SELECT filename, elasticsearch_id FROM log_template").fetchall()
    assert rows, "a migrated Airflow database holds its log templates"
    for filename, elasticsearch_id in rows:
        assert log_template_problem(filename) is None, filename
        assert log_template_problem(elasticsearch_id) is None, elasticsearch_id
    # Airflow 3's default and a configured one with a filter
    airflow3 = (
        "dag_id={{ ti.dag_id }}/run_id={{ ti.run_id }}/task_id={{ ti.task_id }}/"
        "{% if ti.map_index >= 0 %}map_index={{ ti.map_index }}/{% endif %}"
        "attempt={{ try_number|default(ti.try_number) }}.log"
    )
    assert log_template_problem(airflow3) is None
    assert log_template_problem("{{ ti.dag_id }}/{{ ts | replace(':', '_') }}/{{ try_number }}.log") is None


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.system('id') }}.log",
        "{{ ti.dag_id }}/{{ self._TemplateReference__context }}.log",
        "{{ ''.__class__ }}.log",
        "{{ ti.dag_id }}/{% for x in range(9) %}{{ x }}{% endfor %}.log",
        "{{ ti.dag_id | attr('__class__') }}.log",
        "{{ ti.dag_id }.log",
        "{# a comment #}{{ ti.dag_id }}.log",
        "{ti.__init__.__globals__}.log",  # str.format attribute access
    ],
)
def test_templates_with_code_are_refused(template: str) -> None:
    assert log_template_problem(template) is not None


def _source_with(templates: Templates, tmp: Path, kms: Any, statements: list[tuple[str, tuple[Any, ...]]]) -> Env:
    source = make_env(templates.v211, tmp, "src", kms)
    populate(source)
    with sqlite3.connect(source.path) as db:
        for sql, args in statements:
            db.execute(sql, args)
    return source


def _backup_and_target(source: Env, templates: Templates, tmp: Path, kms: Any) -> tuple[str, Env, bytes]:
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest(SOURCE, source.keys, source.fernet)
    )
    target = make_env(templates.v211, tmp, "dst", kms, source.store)
    own_connection(target)
    target.keys = source.keys
    return manifest.backup_id, target, target.dump()


def _restore(target: Env, backup_id: str, *, into: str = TARGET, **options: Any) -> Any:
    return RestoreEngine(open_database(target.url), target.store).restore(
        RestoreRequest(into, backup_id, target.keys, target.fernet, source_environment=SOURCE, **options)
    )


TRIGGER = "INSERT INTO trigger (classpath, kwargs, created_date) VALUES (?, ?, ?)"
POPEN_KWARGS = '{"__var": {"args": ["sh", "-c", "id"]}, "__type": "dict"}'


def test_an_authentic_backup_with_a_command_as_trigger_is_refused(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    source = _source_with(templates, tmp_path, kms, [(TRIGGER, ("subprocess.Popen", POPEN_KWARGS, NOW))])
    backup_id, target, before = _backup_and_target(source, templates, tmp_path, kms)
    with pytest.raises(RestoreRefused, match=r"trigger\.classpath of row id=\d+: 'subprocess\.Popen'"):
        _restore(target, backup_id)
    assert target.dump() == before


def test_a_trusted_trigger_module_restores(templates: Templates, tmp_path: Path, kms: Any) -> None:
    source = _source_with(templates, tmp_path, kms, [(TRIGGER, ("acme.triggers.FileTrigger", "{}", NOW))])
    backup_id, target, before = _backup_and_target(source, templates, tmp_path, kms)
    with pytest.raises(RestoreRefused, match=r"acme\.triggers\.FileTrigger"):
        _restore(target, backup_id, accept_unverifiable_fernet_key=True)
    assert target.dump() == before
    report = _restore(target, backup_id, trusted_trigger_prefixes=("acme.triggers",))
    assert report.status == "restored"
    with sqlite3.connect(target.path) as db:
        assert db.execute("SELECT count(*) FROM trigger WHERE classpath = 'acme.triggers.FileTrigger'").fetchone() == (
            1,
        )


def test_an_authentic_backup_with_code_in_a_log_template_is_refused(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    injected = "{{ cycler.__init__.__globals__.os.system('id') }}.log"
    template = "INSERT INTO log_template (filename, elasticsearch_id, created_at) VALUES (?, 'x', ?)"
    source = _source_with(templates, tmp_path, kms, [(template, (injected, NOW))])
    backup_id, target, before = _backup_and_target(source, templates, tmp_path, kms)
    with pytest.raises(RestoreRefused, match=r"log_template\.filename of row id=\d+"):
        _restore(target, backup_id)
    assert target.dump() == before


def test_a_restore_ledger_entry_is_never_exported(templates: Templates, tmp_path: Path, kms: Any) -> None:
    # Given an environment that was itself restored (its audit log holds the ledger entry)
    ledger = '{"backup_id": "20261101T000000Z-00000000", "environment": "etl-prod"}'
    row = "INSERT INTO log (dttm, event, owner, extra) VALUES (?, 'mwaa-control:restore', 'mwaa-control', ?)"
    source = _source_with(templates, tmp_path, kms, [(row, (NOW, ledger))])
    # When it is backed up
    manifest = BackupEngine(open_database(source.url), source.store).backup(
        BackupRequest(SOURCE, source.keys, source.fernet)
    )
    # Then the backup cannot make a later restore of that earlier backup look done
    with sqlite3.connect(source.path) as db:
        logged = db.execute("SELECT count(*) FROM log WHERE event <> 'mwaa-control:restore' OR event IS NULL")
        expected = logged.fetchone()[0]
    assert manifest.tables["log"].rows == expected


def test_an_environments_own_authentic_backup_restores_its_custom_triggers(
    templates: Templates, tmp_path: Path, kms: Any
) -> None:
    # The backup was written by this environment's own role, which runs code here already: pause and
    # resume of one environment keeps its custom triggers without anyone trusting them by hand.
    source = _source_with(templates, tmp_path, kms, [(TRIGGER, ("acme.triggers.FileTrigger", "{}", NOW))])
    backup_id, target, _ = _backup_and_target(source, templates, tmp_path, kms)
    assert _restore(target, backup_id, into=SOURCE).status == "restored"
