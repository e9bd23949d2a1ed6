"""Fills a freshly migrated Airflow 2.x metadata database with real, hostile content, for the
metadata backup/restore tests.

Runs INSIDE an Airflow virtualenv (`.airflow/<release>/bin/python localcloud/airflow/seed_metadata.py`)
with the environment of `AirflowBackend.environment()` (AIRFLOW_HOME, the database URL and Fernet key
set; `airflow db migrate` already run); `AirflowBackend.seed_metadata()` does exactly that. Tested
on Airflow 2.9 and 2.11.

What is in the database afterwards was made by Airflow itself wherever Airflow has a way to make it:
DAG files parsed and serialised by a DagBag, runs executed by `dag.test()` or by the same loop over
the real task runner (`_run_raw_task`, which records XComs, rendered fields, task failures, dataset
events, the deferral's trigger row, reschedules), variables and connections through their models
(so Airflow encrypts them). Rows no executor-free run can produce (an import error's record, a DAG
warning, an SLA miss, a callback request, a finished scheduler job, extra audit log rows) are added
through the ORM models, and run dates are moved to fixed instants so that durations and months are
deterministic.

Every secret (variable values, connection passwords and extras, a trigger's kwargs) carries a
unique `SEKRET-<nn>-...` marker, listed in the output, so a test can scan a backup for plaintext.
Some secrets Airflow itself keeps in plaintext: a Step Functions task token in a run's conf (the
control plane's callback block) and the conf a user typed into the trigger form, which the audit
log records. Their markers are listed apart (`plaintext_secret_markers`): they are in the
database, and must not be in a backup.

Prints one JSON line on stdout (the last line): what was seeded. Everything else Airflow prints goes
to /dev/null unless MWAA_SEED_VERBOSE=1 (then to stderr)."""

# Runs inside an Airflow virtualenv: Airflow is imported only once its configuration is set.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import time
import warnings
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HOSTILE_TEXT = "naïve ☃ 日本 \"double\" 'single', comma; semi\nsecond line\r\n\ttab \\ backslash 🚀"


def at(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


# --- secrets ------------------------------------------------------------------------------------

MARKERS: list[str] = []
# Secrets Airflow stores in plaintext, which a backup must still never carry.
PLAINTEXT_MARKERS: list[str] = []
# Where each marker is stored: {"marker", "table", "column", "key"} (one marker may be in two places).
SECRET_LOCATIONS: list[dict[str, str]] = []


def secret(n: int, what: str, table: str, column: str, key: str, *, airflow_encrypts: bool = True) -> str:
    """A unique plaintext marker (`SEKRET-07-conn-password-...`) to embed in one secret value."""
    marker = f"SEKRET-{n:02d}-{what}-Zq{n * 7919 % 10007:05d}"
    if marker in MARKERS or marker in PLAINTEXT_MARKERS:
        raise ValueError(f"duplicate secret marker {marker}")
    if not airflow_encrypts:
        PLAINTEXT_MARKERS.append(marker)
        return marker
    MARKERS.append(marker)
    SECRET_LOCATIONS.append({"marker": marker, "table": table, "column": column, "key": key})
    return marker


# --- DAG files ----------------------------------------------------------------------------------

# A module beside the DAGs (the DAGs folder is on sys.path): a deferrable operator whose trigger
# carries a credential read at run time, as real deferrable operators do (so it is in the trigger's
# encrypted kwargs, never in the DAG's code).
SUPPORT_MODULE = '''
"""Seed support: a deferrable operator and its trigger (not a DAG file)."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from airflow.hooks.base import BaseHook
from airflow.models.baseoperator import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent


class PartnerTrigger(BaseTrigger):
    def __init__(self, endpoint: str, token: str, poll_seconds: int = 3600):
        super().__init__()
        self.endpoint = endpoint
        self.token = token
        self.poll_seconds = poll_seconds

    def serialize(self):
        return (
            "seed_support.PartnerTrigger",
            {"endpoint": self.endpoint, "token": self.token, "poll_seconds": self.poll_seconds},
        )

    async def run(self):
        await asyncio.sleep(self.poll_seconds)
        yield TriggerEvent({"status": "ready", "endpoint": self.endpoint})


class WaitForPartnerOperator(BaseOperator):
    template_fields = ("endpoint",)

    def __init__(self, *, endpoint: str, conn_id: str, **kwargs):
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.conn_id = conn_id

    def execute(self, context):
        token = BaseHook.get_connection(self.conn_id).password
        self.defer(
            trigger=PartnerTrigger(endpoint=self.endpoint, token=token),
            method_name="resume",
            kwargs={"attempt": 1, "note": "naïve ☃"},
            timeout=timedelta(days=2),
        )

    def resume(self, context, event=None, **kwargs):
        return event
'''

DAG_FILES: dict[str, str] = {
    "seed_etl.py": '''
from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.decorators import task

with DAG(
    "seed_etl",
    start_date=datetime(2024, 1, 1),
    schedule="@daily",
    catchup=False,
    tags=["seed", "etl", "naïve ☃"],
    description="Extract, a mapped transform, load: unicode ☃ 日本",
    doc_md="""# ETL\\n\\nMulti-line *markdown* with "quotes", commas, and ☃.""",
    default_args={"owner": "data-team", "pool": "etl_pool"},
    owner_links={"data-team": "https://example.com/teams/data?x=1&y=2"},
    max_active_runs=1,
):

    @task
    def extract(ti=None):
        ti.xcom_push(key="naïve ☃ 日本", value={"quote": '"', "newline": "a\\nb", "comma": "x,y"})
        return {"rows": [{"id": i, "name": f"row {i} ☃"} for i in range(5)], "text": "naïve ☃ 日本 \\"q\\", a,b\\nc"}

    @task
    def big_payload():
        # ~200 KB in one XCom value
        return [{"i": i, "pad": "ü" * 40 + "-" * 40} for i in range(1700)]

    @task
    def partitions():
        return ["2024-01", "2024-02", "2024-03"]

    @task
    def transform(partition: str, factor: int):
        return {"partition": partition, "rows": len(partition) * factor}

    @task
    def load(results, rows, payload):
        return {"loaded": sum(r["rows"] for r in results), "extracted": len(rows["rows"]), "big": len(payload)}

    transformed = transform.partial(factor=3).expand(partition=partitions())
    load(transformed, extract(), big_payload())
''',
    "seed_flaky.py": """
from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow import DAG
from airflow.decorators import task
from airflow.operators.bash import BashOperator

with DAG(
    "seed_flaky",
    start_date=datetime(2024, 1, 1),
    schedule="0 6 * * 1-5",
    catchup=False,
    tags=["seed"],
    default_args={"owner": "ops"},
):
    greet = BashOperator(task_id="greet", bash_command="echo 'naïve ☃ {{ ds }} \\"quoted\\", comma'")

    @task
    def ok():
        return "fine ✓"

    @task
    def boom():
        raise ValueError("naïve ☃ failure:\\nline two, with \\"quotes\\"")

    @task
    def after_boom():
        return "never runs"

    @task(retries=1, retry_delay=timedelta(seconds=0))
    def retried(dag_run=None):
        marker = Path(os.environ["AIRFLOW_HOME"]) / f"retried-{dag_run.run_id.replace(':', '_')}"
        if not marker.exists():
            marker.write_text("first try failed")
            raise RuntimeError("first try fails, the retry succeeds")
        return "second try ✓"

    greet >> [ok(), retried()]
    boom() >> after_boom()
""",
    "seed_monthly.py": """
from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.decorators import task

with DAG(
    "seed_monthly",
    start_date=datetime(2024, 1, 1),
    schedule="0 2 * * 1",
    catchup=False,
    tags=["seed", "reporting"],
    default_args={"owner": "finance"},
):

    @task
    def prepare(dag_run=None):
        return {"fail": bool(dag_run.conf.get("fail"))}

    @task
    def report(plan):
        if plan["fail"]:
            raise RuntimeError("monthly report failed on purpose")
        return "report ✓"

    report(prepare())
""",
    "seed_datasets.py": """
from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.datasets import Dataset
from airflow.decorators import task

try:  # Airflow 2.10+: a dataset alias, resolved to a dataset at run time
    from airflow.datasets import DatasetAlias
except ImportError:
    DatasetAlias = None

RAW = Dataset("s3://seed-bucket/raw/events.parquet", extra={"owner": "naïve ☃", "format": "parquet"})
CLEAN = Dataset("s3://seed-bucket/clean/events,v2.parquet")
ALIAS = DatasetAlias("seed-alias") if DatasetAlias else None

with DAG(
    "seed_producer", start_date=datetime(2024, 1, 1), schedule="@hourly", catchup=False, tags=["seed", "datasets"]
):

    @task(outlets=[RAW, CLEAN] + ([ALIAS] if ALIAS else []))
    def publish(**context):
        events = context.get("outlet_events")
        if events is not None:  # Airflow 2.10+: extras on events
            events[RAW].extra = {"rows": 42, "note": "naïve ☃, \\"quoted\\"\\nline 2"}
            if ALIAS:
                events[ALIAS].add(Dataset("s3://seed-bucket/aliased/report.csv"), extra={"via": "alias"})
        return "published ☃"

    publish()

# On 2.10+ the consumer also waits on the alias (a dataset expression and an alias reference).
with DAG(
    "seed_consumer",
    start_date=datetime(2024, 1, 1),
    schedule=(RAW | ALIAS) if ALIAS else [RAW],
    catchup=False,
    tags=["seed", "datasets"],
):

    @task
    def consume(triggering_dataset_events=None):
        return sorted(str(k) for k in (triggering_dataset_events or {}))

    consume()
""",
    "seed_deferred.py": """
from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.sensors.python import PythonSensor

from seed_support import WaitForPartnerOperator

with DAG("seed_deferred", start_date=datetime(2024, 1, 1), schedule=None, catchup=False, tags=["seed"]):
    WaitForPartnerOperator(
        task_id="wait_for_partner", endpoint="https://partner.example.com/ready?d={{ ds }}", conn_id="seed_http"
    )
    PythonSensor(
        task_id="poll_inbox", python_callable=lambda: False, mode="reschedule", poke_interval=3600, timeout=86400
    )
""",
    "seed_legacy.py": """
from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG(
    "seed.legacy-report_v1",
    start_date=datetime(2023, 1, 1),
    schedule="@weekly",
    catchup=False,
    description="Retired report, kept paused",
    tags=["seed", "legacy"],
):
    EmptyOperator(task_id="start") >> EmptyOperator(task_id="end")
""",
    "seed_broken.py": """
from airflow import DAG  # a DAG file that fails to import: an import error row

raise RuntimeError("naïve ☃ broken DAG file:\\nsecond line, with \\"quotes\\"")
""",
}

ACTIVE_DAGS = ("seed_etl", "seed_flaky", "seed_monthly", "seed_producer", "seed_consumer")

# seed_monthly: (logical date, seconds the run took, fails) spread over four months.
MONTHLY_RUNS = [
    (at(2024, 1, 8, 2), 30, False),
    (at(2024, 1, 22, 2), 95, False),
    (at(2024, 1, 29, 2), 41, True),
    (at(2024, 2, 5, 2), 61, False),
    (at(2024, 2, 19, 2), 7, True),
    (at(2024, 3, 4, 2), 300, False),
    (at(2024, 3, 18, 2), 45, False),
    (at(2024, 3, 25, 2), 12, True),
    (at(2024, 4, 8, 2), 150, False),
]

HOSTILE_CONF: dict[str, Any] = {
    "multi_line_json": json.dumps({"a": [1, 2, {"b": "naïve ☃"}], "c": 'say "hi", then\nleave'}, indent=2),
    "text": HOSTILE_TEXT,
    "unicode": "naïve ☃ 日本",
    "nested": {"list": [1, 2.5, None, True, {"deep": "-c --conf, x"}], "empty": {}},
    "shell": "$(id); `id` && echo $HOME | cat",
}


def write_dag_files(dags_folder: Path) -> None:
    dags_folder.mkdir(parents=True, exist_ok=True)
    (dags_folder / "seed_support.py").write_text(textwrap.dedent(SUPPORT_MODULE).lstrip())
    for name, source in DAG_FILES.items():
        (dags_folder / name).write_text(textwrap.dedent(source).lstrip())


# --- the seeding ----------------------------------------------------------------------------------


class Seeder:
    def __init__(self) -> None:
        import airflow
        from airflow.configuration import conf

        self.version = airflow.__version__
        self.version_tuple = tuple(int(p) for p in self.version.split(".")[:2])
        if self.version_tuple[0] != 2:
            raise SystemExit(f"seed_metadata.py seeds Airflow 2.x, not {self.version}")
        self.dags_folder = Path(conf.get("core", "dags_folder"))

    # Variables, connections, pools --------------------------------------------------------------

    def seed_secrets(self, session: Any) -> None:
        from airflow.models import Connection, Pool, Variable

        def var(key: str, n: int, what: str) -> str:
            return secret(n, what, "variable", "val", key)

        Variable.set("seed_plain", f"plain value {var('seed_plain', 1, 'var-plain')}", session=session)
        Variable.set(
            "seed_json",
            {"user": "naïve ☃", "token": var("seed_json", 2, "var-json"), "nested": {"list": [1, "two", None]}},
            serialize_json=True,
            description="Multi-line JSON value,\nwith a description ☃",
            session=session,
        )
        Variable.set("seed_unicode", f"naïve ☃ 日本 {var('seed_unicode', 3, 'var-unicode')} 🚀", session=session)
        big = "".join(f"line {i:05d} ☃ {'x' * 80}\n" for i in range(1200))  # ~107 KB
        Variable.set("seed_large", big[:60_000] + var("seed_large", 4, "var-large") + big[60_000:], session=session)
        Variable.set(
            "seed_described",
            f"{HOSTILE_TEXT} {var('seed_described', 5, 'var-described')}",
            description='Described: "quotes", commas,\nnewlines and ☃',
            session=session,
        )
        Variable.set("-seed-dash", f"-{var('-seed-dash', 6, 'var-dash')} --conf x", session=session)
        Variable.set("seed_ключ_☃", f"unicode key {var('seed_ключ_☃', 7, 'var-unicode-key')}", session=session)

        http_password = f"naïve ☃ {secret(10, 'conn-password-unicode', 'connection', 'password', 'seed_http')}"
        # seed_deferred's trigger carries this password in its (encrypted) kwargs.
        SECRET_LOCATIONS.append({"marker": MARKERS[-1], "table": "trigger", "column": "kwargs", "key": "seed_deferred"})
        session.add(
            Connection(
                conn_id="seed_postgres",
                conn_type="postgres",
                description='Warehouse ☃,\nmulti-line "description"',
                host="warehouse.example.com",
                schema="analytics",
                login="reporter",
                password=f"p@ss:w/rd 日本 {secret(8, 'conn-password', 'connection', 'password', 'seed_postgres')}",
                port=5432,
                extra=json.dumps(
                    {
                        "sslmode": "require",
                        "options": "-c search_path=x "
                        + secret(9, "conn-extra", "connection", "extra", "seed_postgres"),
                    }
                ),
            )
        )
        session.add(
            Connection(
                conn_id="seed_http",
                conn_type="http",
                description="Partner API",
                host="partner.example.com",
                login="naïve-user",
                password=http_password,
                port=None,
                extra=json.dumps(
                    {
                        "headers": {"X-Api-Key": secret(11, "conn-extra-json", "connection", "extra", "seed_http")},
                        "timeout": 30,
                        "note": 'a,b\n"c"',
                    },
                    indent=2,
                ),
            )
        )
        session.add(Connection(conn_id="seed_noauth", conn_type="generic", host="localhost", port=8080))

        pool_kwargs: dict[str, Any] = {"include_deferred": False} if self.version_tuple >= (2, 7) else {}
        session.add(Pool(pool="etl_pool", slots=4, description='ETL tasks,\n"limited" ☃', **pool_kwargs))
        session.add(Pool(pool="naïve ☃ 日本 pool", slots=1, description="Unicode name", **pool_kwargs))
        session.add(Pool(pool="seed_big_pool", slots=128, description=None, **pool_kwargs))
        session.commit()
        self.check_secrets(session)

    def check_secrets(self, session: Any) -> None:
        """Airflow encrypted every secret (no marker in a stored column) and decrypts it back."""
        from airflow.models import Connection, Variable

        for location in SECRET_LOCATIONS:
            marker, table, column, key = (location[k] for k in ("marker", "table", "column", "key"))
            if table == "variable":
                row = session.query(Variable).filter(Variable.key == key).one()
                stored, readable, encrypted = row._val, row.get_val(), row.is_encrypted
            elif table == "connection":
                row = session.query(Connection).filter(Connection.conn_id == key).one()
                stored = row._password if column == "password" else row._extra
                readable = row.password if column == "password" else row.extra
                encrypted = row.is_encrypted if column == "password" else row.is_extra_encrypted
            else:
                continue  # the trigger is checked when it exists
            if not encrypted or marker in stored or marker not in readable:
                raise RuntimeError(f"{table}.{column} of {key!r} is not stored encrypted")

    # DAGs --------------------------------------------------------------------------------------

    def parse_and_sync(self, session: Any) -> Any:
        from airflow.models import DagBag, DagModel
        from airflow.models.dagwarning import DagWarning, DagWarningType

        write_dag_files(self.dags_folder)
        dagbag = DagBag(dag_folder=str(self.dags_folder), include_examples=False, safe_mode=True)
        broken = {k: v for k, v in dagbag.import_errors.items() if "seed_broken" in k}
        unexpected = {k: v for k, v in dagbag.import_errors.items() if "seed_broken" not in k}
        if unexpected:
            raise RuntimeError(f"seed DAGs failed to import: {unexpected}")
        dagbag.sync_to_db(processor_subdir=str(self.dags_folder), session=session)
        session.commit()

        # What the DAG processor records for a file that fails to import (its real traceback).
        try:
            from airflow.models.errors import ParseImportError as ImportErrorModel
        except ImportError:
            from airflow.models.errors import ImportError as ImportErrorModel
        from airflow.utils import timezone as airflow_tz

        for filename, stacktrace in broken.items():
            session.add(
                ImportErrorModel(
                    filename=filename,
                    timestamp=airflow_tz.utcnow(),
                    stacktrace=stacktrace,
                    processor_subdir=str(self.dags_folder),
                )
            )
        session.add(
            DagWarning(
                dag_id="seed_etl",
                error_type=DagWarningType.NONEXISTENT_POOL,
                message="Dag 'seed_etl' references non-existent pools: ['missing ☃ pool']",
            )
        )
        for dag_id in ACTIVE_DAGS:
            model = session.get(DagModel, dag_id)
            model.set_is_paused(is_paused=False, session=session)
        session.commit()
        return dagbag

    # Running DAGs --------------------------------------------------------------------------------

    def create_run(self, dag: Any, logical: datetime, run_type: Any, conf: dict[str, Any] | None, session: Any) -> Any:
        from airflow.models import DagRun
        from airflow.utils.state import DagRunState
        from airflow.utils.types import DagRunType

        if run_type == DagRunType.MANUAL:
            interval = dag.timetable.infer_manual_data_interval(run_after=logical)
        else:
            interval = dag.infer_automated_data_interval(logical)
        return dag.create_dagrun(
            state=DagRunState.RUNNING,
            execution_date=logical,
            run_id=DagRun.generate_run_id(run_type, logical),
            start_date=logical,
            external_trigger=run_type == DagRunType.MANUAL,
            conf=conf,
            run_type=run_type,
            data_interval=interval,
            session=session,
        )

    def step(self, dag: Any, dag_run: Any, session: Any) -> int:
        """One turn of the loop `dag.test()` runs: schedule what is ready, run it with the real task
        runner (deferrals create their trigger; reschedules their task_reschedule row)."""
        from airflow.utils.state import TaskInstanceState

        session.expire_all()
        schedulable, _ = dag_run.update_state(session=session)
        for ti in schedulable:
            # From 2.10 on the scheduler counts tries; before, the worker did (in the check below).
            if self.version_tuple >= (2, 10) and ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        ran = 0
        for ti in dag_run.get_task_instances(session=session):
            if ti.state != TaskInstanceState.SCHEDULED:
                continue
            ti.task = dag.get_task(ti.task_id)
            ti.state = TaskInstanceState.QUEUED  # what the executor does, then the worker:
            session.merge(ti)
            session.commit()
            if ti.check_and_change_state_before_execution(session=session):
                with contextlib.suppress(Exception):  # failing tasks are part of the seed
                    ti._run_raw_task(session=session)
            session.merge(ti)
            session.commit()
            ran += 1
        return ran

    def run_to_end(self, dag: Any, dag_run: Any, session: Any) -> Any:
        from airflow.utils.state import DagRunState

        for _ in range(50):
            if self.step(dag, dag_run, session) == 0:
                session.expire_all()
                dag_run.update_state(session=session)
                session.commit()
            if dag_run.state != DagRunState.RUNNING:
                return dag_run
            time.sleep(0.05)
        raise RuntimeError(f"{dag.dag_id} run {dag_run.run_id} did not finish: {dag_run.state}")

    def run_dags(self, dagbag: Any, session: Any) -> None:
        from airflow.models import DagRun
        from airflow.models.dataset import DatasetDagRunQueue, DatasetEvent
        from airflow.models.trigger import Trigger
        from airflow.utils.state import DagRunState
        from airflow.utils.types import DagRunType

        # Real dag.test() runs: mapped tasks, XComs (unicode key, ~200 KB value), hostile conf.
        etl = dagbag.get_dag("seed_etl")
        run = etl.test(execution_date=at(2024, 3, 10), run_conf=HOSTILE_CONF, session=session)
        run = session.query(DagRun).filter_by(dag_id=run.dag_id, run_id=run.run_id).one()
        self.hostile_run_id = run.run_id
        run.note = 'Re-run after the ☃ incident:\n"upstream" fixed, see ticket #42'
        session.commit()

        legacy = dagbag.get_dag("seed.legacy-report_v1")
        legacy.test(execution_date=at(2024, 1, 15), session=session)
        self.seed_control_plane_runs(legacy, session)

        producer = dagbag.get_dag("seed_producer")
        consumer = dagbag.get_dag("seed_consumer")
        producer.test(execution_date=at(2024, 3, 1), session=session)
        # What the scheduler does with the queued dataset change: a dataset-triggered consumer run
        # that records the events it consumed, and the queue entry removed.
        events = session.query(DatasetEvent).all()
        consumer_run = self.create_run(consumer, at(2024, 3, 1, 1), DagRunType.DATASET_TRIGGERED, None, session)
        consumer_run.consumed_dataset_events.extend(events)
        session.query(DatasetDagRunQueue).delete()
        session.commit()
        self.run_to_end(consumer, consumer_run, session)
        # A second change stays queued for the consumer (dataset_dag_run_queue keeps a row).
        producer.test(execution_date=at(2024, 3, 15), session=session)

        # The scheduler's way (scheduled runs, run by the task runner): a failing task, an
        # upstream-failed one, a retried one, a templated BashOperator.
        flaky = dagbag.get_dag("seed_flaky")
        flaky_run = self.run_to_end(
            flaky, self.create_run(flaky, at(2024, 2, 12, 6), DagRunType.SCHEDULED, None, session), session
        )
        for ti in flaky_run.get_task_instances(session=session):
            if ti.task_id == "boom":
                ti.note = 'Known issue ☃:\n"boom" fails, by design'
        session.commit()

        monthly = dagbag.get_dag("seed_monthly")
        for logical, _seconds, fails in MONTHLY_RUNS:
            monthly_run = self.create_run(monthly, logical, DagRunType.SCHEDULED, {"fail": fails}, session)
            self.run_to_end(monthly, monthly_run, session)

        # A run left running: one task deferred (its trigger row, kwargs encrypted by Airflow), one
        # sensor waiting for its reschedule.
        deferred = dagbag.get_dag("seed_deferred")
        deferred_run = self.create_run(deferred, at(2024, 4, 20, 9), DagRunType.MANUAL, {"partner": "ACME ☃"}, session)
        self.step(deferred, deferred_run, session)
        session.expire_all()
        states = {ti.task_id: ti.state for ti in deferred_run.get_task_instances(session=session)}
        if states.get("wait_for_partner") != "deferred":
            raise RuntimeError(f"seed_deferred did not defer: {states}")
        trigger = session.query(Trigger).one()
        marker = next(s["marker"] for s in SECRET_LOCATIONS if s["table"] == "trigger")
        if marker in trigger.encrypted_kwargs or marker not in trigger.kwargs["token"]:
            raise RuntimeError("the trigger's kwargs are not stored encrypted")

        self.fix_run_dates(session)
        session.commit()

        still_running = session.query(DagRun).filter(DagRun.state == DagRunState.RUNNING).all()
        if [r.dag_id for r in still_running] != ["seed_deferred"]:
            raise RuntimeError(f"unexpected running DAG runs: {[(r.dag_id, r.run_id) for r in still_running]}")

    def seed_control_plane_runs(self, dag: Any, session: Any) -> None:
        """Runs the way the control plane triggers them (a callback block in the conf, with the
        Step Functions task token of the legacy contract and the callback reference of the new
        one), and a run whose conf Airflow pickles with pendulum and datetime values."""
        import pendulum
        from airflow.utils.types import DagRunType

        token = secret(20, "task-token", "dag_run", "conf", "seed.legacy-report_v1", airflow_encrypts=False)
        second = secret(21, "task-token-2", "dag_run", "conf", "seed.legacy-report_v1", airflow_encrypts=False)
        legacy = {"mwaa_control": {"task_token": f"AQCEAAAAKgAAAAMAAAAA{token}", "region": "us-east-1"}}
        reference = {
            "mwaa_control": {
                "callback_id": "cb-0001",
                "table": "mwaa-control-callbacks",
                "region": "us-east-1",
                "task_token": f"AQCEAAAAKgAAAAMAAAAB{second}",
            },
            "report": "naïve ☃",
        }
        timed = {
            "window_start": pendulum.datetime(2024, 1, 1, tz="Europe/Paris"),
            "window_end": datetime(2024, 2, 1, tzinfo=UTC),
            "cutoff": pendulum.duration(hours=6),
            "day": pendulum.date(2024, 1, 31),
        }
        for logical, conf in ((at(2024, 1, 22), legacy), (at(2024, 1, 29), reference), (at(2024, 2, 5), timed)):
            self.run_to_end(dag, self.create_run(dag, logical, DagRunType.MANUAL, conf, session), session)

    def fix_run_dates(self, session: Any) -> None:
        """Runs and task instances get fixed start and end instants: dag.test() starts a run at its
        logical date and ends it now; monthly statistics need known durations."""
        from airflow.models import DagRun, TaskInstance, XCom
        from airflow.models.dataset import DatasetEvent

        monthly_seconds = {logical: seconds for logical, seconds, _ in MONTHLY_RUNS}
        runs = session.query(DagRun).order_by(DagRun.dag_id, DagRun.execution_date).all()
        for index, dag_run in enumerate(runs):
            logical = dag_run.execution_date
            start = logical + timedelta(minutes=5, seconds=index)
            seconds = (
                monthly_seconds.get(logical, 20 + 11 * index) if dag_run.dag_id == "seed_monthly" else 20 + 11 * index
            )
            dag_run.queued_at = start - timedelta(seconds=3)
            dag_run.start_date = start
            running = dag_run.state == "running"
            dag_run.end_date = None if running else start + timedelta(seconds=seconds)
            tis = (
                session.query(TaskInstance)
                .filter(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
                .order_by(TaskInstance.task_id, TaskInstance.map_index)
                .all()
            )
            share = seconds / max(len(tis), 1)
            for position, ti in enumerate(tis):
                if ti.start_date is None:
                    continue
                ti.queued_dttm = start + timedelta(seconds=share * position)
                ti.start_date = ti.queued_dttm
                if ti.end_date is not None:
                    ti.end_date = ti.start_date + timedelta(seconds=share)
                    ti.duration = share
                for xcom in session.query(XCom).filter(
                    XCom.dag_id == ti.dag_id,
                    XCom.run_id == ti.run_id,
                    XCom.task_id == ti.task_id,
                    XCom.map_index == ti.map_index,
                ):
                    xcom.timestamp = ti.end_date or ti.start_date
                for event in session.query(DatasetEvent).filter(
                    DatasetEvent.source_dag_id == ti.dag_id,
                    DatasetEvent.source_run_id == ti.run_id,
                    DatasetEvent.source_task_id == ti.task_id,
                ):
                    event.timestamp = ti.end_date

    # Rows no run produces without a scheduler or web server ----------------------------------

    def seed_records(self, dagbag: Any, session: Any) -> None:
        from airflow.callbacks.callback_requests import DagCallbackRequest
        from airflow.jobs.job import Job
        from airflow.models import DagRun, Log
        from airflow.models.db_callback_request import DbCallbackRequest
        from airflow.models.slamiss import SlaMiss

        flaky_run = session.query(DagRun).filter(DagRun.dag_id == "seed_flaky").one()
        details = {
            "command": ["airflow", "dags", "trigger", "seed_etl", "--conf", json.dumps(HOSTILE_CONF)],
            "note": HOSTILE_TEXT,
        }
        session.add(Log(event="cli_trigger", dag_id="seed_etl", owner="naïve ☃", extra=json.dumps(details, indent=2)))
        # What the web server's action_logging records (airflow/www/decorators.py): the trigger
        # form's fields (the conf a user typed, secrets included) and the REST API's JSON body.
        form_conf = {"api_key": secret(22, "trigger-form-conf", "log", "extra", "trigger", airflow_encrypts=False)}
        session.add(
            Log(
                event="trigger",
                dag_id="seed_etl",
                owner="admin",
                extra=json.dumps({"run_id": "", "conf": json.dumps(form_conf, indent=4), "unpause": "on"}),
            )
        )
        api_secret = secret(23, "api-trigger-conf", "log", "extra", "api.post_dag_run", airflow_encrypts=False)
        api_conf = {"password": api_secret}
        session.add(
            Log(event="api.post_dag_run", dag_id="seed_etl", owner="admin", extra=json.dumps({"conf": api_conf}))
        )
        session.add(
            Log(
                event="variable.edit",
                owner="admin",
                extra=json.dumps(
                    {"key": "seed_plain", "fields": ["description"], "comment": 'line 1\n"line 2", ☃'}, indent=4
                ),
            )
        )
        session.add(
            Log(
                event="clear",
                dag_id="seed_flaky",
                task_id="boom",
                run_id=flaky_run.run_id,
                execution_date=flaky_run.execution_date,
                map_index=-1,
                owner="ops",
                extra='{\n  "only_failed": true\n}',
            )
        )
        session.add(
            SlaMiss(
                task_id="report",
                dag_id="seed_monthly",
                execution_date=MONTHLY_RUNS[4][0],
                email_sent=False,
                timestamp=MONTHLY_RUNS[4][0] + timedelta(hours=3),
                description='SLA missed ☃,\n"report" late',
                notification_sent=True,
            )
        )
        session.add(
            DbCallbackRequest(
                priority_weight=10,
                callback=DagCallbackRequest(
                    full_filepath=str(self.dags_folder / "seed_flaky.py"),
                    dag_id="seed_flaky",
                    run_id=flaky_run.run_id,
                    processor_subdir=str(self.dags_folder),
                    is_failure_callback=True,
                    msg="task_failure ☃",
                ),
            )
        )
        scheduler = Job(
            job_type="SchedulerJob",
            state="success",
            executor_class="LocalExecutor",
            start_date=at(2024, 4, 1, 0),
            end_date=at(2024, 4, 1, 12),
            latest_heartbeat=at(2024, 4, 1, 12),
        )
        triggerer = Job(job_type="TriggererJob", state="running", start_date=at(2024, 4, 1, 0))
        session.add_all([scheduler, triggerer])
        session.flush()
        # The references Airflow leaves unconstrained (no foreign key): runs created by a scheduler
        # job, task instances run by a task job and queued by the scheduler, a trigger held by a
        # triggerer. A restore that regenerates job ids must rewrite all of them.
        from airflow.models import TaskInstance, Trigger

        for run in session.query(DagRun).filter(DagRun.dag_id == "seed_monthly"):
            run.creating_job_id = scheduler.id
        for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == "seed_monthly"):
            task_job = Job(job_type="LocalTaskJob", dag_id=ti.dag_id, state="success", start_date=ti.start_date)
            session.add(task_job)
            session.flush()
            ti.job_id = task_job.id
            ti.queued_by_job_id = scheduler.id
        for trigger in session.query(Trigger):
            trigger.triggerer_id = triggerer.id
        session.commit()

    def seed_users(self) -> None:
        """Roles and users of the web server's security manager (FAB), as MWAA's IAM log-ins leave them."""
        from airflow.www.app import cached_app

        security = cached_app(testing=True).appbuilder.sm
        security.sync_roles()
        team = security.add_role("Data ☃ Team")
        for action, resource in (("can_read", "DAGs"), ("can_edit", "DAGs"), ("can_read", "DAG Runs")):
            permission = security.get_permission(action, resource)
            if permission is not None:
                security.add_permission_to_role(team, permission)
        for username, role, first, last in (
            ("assumed-role/mwaa-admin/naïve@example.com", "Admin", "Naïve", "Admin ☃"),
            ('assumed-role/data-team/jo,"quoted"', "Data ☃ Team", "Jo", "O'Brien"),
        ):
            user = security.add_user(
                username,
                first,
                last,
                f"{len(username)}@example.com",
                security.find_role(role),
                password=os.urandom(16).hex(),
            )
            if not user:
                raise RuntimeError(f"could not add user {username!r}")

    # The report ------------------------------------------------------------------------------

    def report(self, session: Any) -> dict[str, Any]:
        import sqlalchemy as sa
        from airflow.models import DagModel, DagRun

        bind = session.get_bind()
        # Airflow's tables (not SQLite's own bookkeeping such as sqlite_sequence).
        tables = sorted(t for t in sa.inspect(bind).get_table_names() if not t.startswith("sqlite_"))
        counts = {}
        for name in tables:
            counts[name] = session.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
        revision = session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        dags = {m.dag_id: bool(m.is_paused) for m in session.query(DagModel).order_by(DagModel.dag_id)}

        stats: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for dag_run in session.query(DagRun).filter(DagRun.state != "running"):
            if dag_run.start_date is None:
                continue
            grouped[(dag_run.dag_id, dag_run.start_date.astimezone(UTC).strftime("%Y-%m"))].append(dag_run)
        for (dag_id, month), runs in sorted(grouped.items()):
            durations = [(r.end_date - r.start_date).total_seconds() for r in runs if r.end_date is not None]
            stats[dag_id][month] = {
                "runs": len(runs),
                "success": sum(1 for r in runs if r.state == "success"),
                "failed": sum(1 for r in runs if r.state == "failed"),
                "min_duration_s": min(durations) if durations else None,
                "max_duration_s": max(durations) if durations else None,
                "avg_duration_s": sum(durations) / len(durations) if durations else None,
            }
        return {
            "expected": {
                "hostile_conf": {"dag_id": "seed_etl", "run_id": self.hostile_run_id, "conf": HOSTILE_CONF},
                "monthly_runs": [
                    {"logical_date": logical.isoformat(), "seconds": seconds, "failed": fails}
                    for logical, seconds, fails in MONTHLY_RUNS
                ],
            },
            "secret_locations": SECRET_LOCATIONS,
            "airflow_version": self.version,
            "alembic_revision": revision,
            "dialect": bind.dialect.name,
            "secret_markers": MARKERS,
            "plaintext_secret_markers": PLAINTEXT_MARKERS,
            "dags": dags,
            "table_counts": counts,
            "monthly_stats": stats,
        }

    def run(self) -> dict[str, Any]:
        from airflow.utils.session import create_session

        phases: dict[str, float] = {}

        def timed(name: str, started: float) -> None:
            phases[name] = round(time.monotonic() - started, 2)

        started = time.monotonic()
        with create_session() as session:
            self.seed_secrets(session)
        timed("secrets", started)
        started = time.monotonic()
        with create_session() as session:
            dagbag = self.parse_and_sync(session)
        timed("parse", started)
        started = time.monotonic()
        with create_session() as session:
            self.run_dags(dagbag, session)
        timed("runs", started)
        started = time.monotonic()
        with create_session() as session:
            self.seed_records(dagbag, session)
        timed("records", started)
        started = time.monotonic()
        self.seed_users()
        timed("users", started)
        with create_session() as session:
            result = self.report(session)
        result["phase_seconds"] = phases
        return result


class TargetSeeder(Seeder):
    """What a NEW environment's database holds before anything is restored into it: its DAG
    processor parsed the same DAG files (DAGs, serialised DAGs, datasets) after registering a
    dataset of its own first, so every dataset id differs from the source's; its scheduler runs
    (a job); operators made a pool and a connection, encrypted under this environment's key. No
    variable: the key check must not depend on one."""

    TARGET_DATASET = "s3://target-only/registered-first"

    def run(self) -> dict[str, Any]:
        from airflow.jobs.job import Job
        from airflow.models import Connection, Pool
        from airflow.models.dataset import DatasetModel
        from airflow.utils.session import create_session

        with create_session() as session:
            session.add(DatasetModel(uri=self.TARGET_DATASET, extra={"owner": "target ☃"}))
            session.commit()
        with create_session() as session:
            self.parse_and_sync(session)
        with create_session() as session:
            pool_kwargs: dict[str, Any] = {"include_deferred": False} if self.version_tuple >= (2, 7) else {}
            session.add(Pool(pool="target_pool", slots=2, description="the target's own pool", **pool_kwargs))
            session.add(
                Connection(
                    conn_id="target_conn",
                    conn_type="http",
                    host="target.example.com",
                    password=secret(20, "target-conn-password", "connection", "password", "target_conn"),
                )
            )
            session.add(
                Job(job_type="SchedulerJob", state="running", hostname="target-scheduler", start_date=at(2026, 1, 1))
            )
            session.commit()
            connection = session.query(Connection).filter(Connection.conn_id == "target_conn").one()
            if not connection.is_encrypted:
                raise RuntimeError("the target's connection password is not stored encrypted")
            datasets = [uri for (uri,) in session.query(DatasetModel.uri).order_by(DatasetModel.id)]
        return {"airflow_version": self.version, "datasets": datasets, "target_dataset": self.TARGET_DATASET}


def main() -> None:
    # Quiet, before Airflow reads its configuration.
    warnings.simplefilter("ignore")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
    real_stdout = os.fdopen(os.dup(1), "w", encoding="utf-8")
    verbose = os.environ.get("MWAA_SEED_VERBOSE") == "1"
    sink = os.dup(2) if verbose else os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)  # Airflow's console logging and dag.test()'s task output
    started = time.monotonic()
    # `--target`: a new environment's own rows, before a restore into it (TargetSeeder).
    result = TargetSeeder().run() if "--target" in sys.argv[1:] else Seeder().run()
    result["seconds"] = round(time.monotonic() - started, 1)
    sys.stdout.flush()
    real_stdout.write(json.dumps(result, ensure_ascii=False, sort_keys=True) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
